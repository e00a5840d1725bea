"""A consensus of several annotators' segmentations of one series, approved by a reviewer as the final one.

STAPLE (SimpleITK) or majority vote, per label, over the current versions of the series' annotations that
have the label. The result is a new annotation (annotator `consensus`, made of the ones it combines), final
at once: the reviewer's decision is recorded and its deliveries are queued. A reviewer who annotated one of
the combined annotations cannot approve the combination (their own work).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from sqlmodel import col, select

from bridge.access.users import Principal
from bridge.annotations.agreement import majority_vote, staple
from bridge.annotations.records import AnnotationView, load_annotation
from bridge.annotations.review import check_reviewer, queue_deliveries
from bridge.annotations.segments import Segment
from bridge.annotations.service import APPROVED, AnnotationService, NewVersion
from bridge.annotations.sources import find_series
from bridge.errors import AnnotationError
from storage.audit import record_event
from storage.models.annotations import Annotation, ReviewDecision

Method = Literal["staple", "majority"]
CONSENSUS = "consensus"


def combine(
    service: AnnotationService,
    *,
    series_uid: str,
    method: Method,
    reviewer: Principal,
    annotation_ids: Sequence[int] = (),
    project: str | None = None,
) -> AnnotationView:
    """Combine the series' annotations (all of them not yet combined, or `annotation_ids`) and approve it."""
    with service.database.reading() as session:
        record = find_series(session, series_uid=series_uid, project=project)
        if annotation_ids:
            rows = [load_annotation(session, annotation_id) for annotation_id in annotation_ids]
        else:
            statement = select(Annotation).where(Annotation.series_id == record.id).order_by(col(Annotation.id))
            rows = [row for row in session.exec(statement) if row.consensus_of is None]
        if any(row.series_id != record.id for row in rows):
            raise AnnotationError(f"every annotation combined must be of {record.named()}")
        if len({row.annotator for row in rows}) < 2:
            raise AnnotationError(f"a consensus needs annotations by at least two annotators of {record.named()}")
        for row in rows:
            check_reviewer(reviewer, row, record.project)
        stacks: dict[str, list[np.ndarray]] = {}
        first_seen: dict[str, Segment] = {}
        for row in rows:
            assert row.id is not None
            masks, segments = service.masks_of(session, row.id)
            for index, segment in enumerate(segments):
                stacks.setdefault(segment.label.lower(), []).append(masks[index])
                first_seen.setdefault(segment.label.lower(), segment)
    combined: list[np.ndarray] = []
    combined_segments: list[Segment] = []
    for number, (key, drawn) in enumerate(sorted(stacks.items()), start=1):
        if len(drawn) < 2:
            mask = drawn[0]
        else:
            mask = staple(drawn) if method == "staple" else majority_vote(drawn)
        mask = np.asarray(mask, dtype=bool)
        seen = first_seen[key]
        voxels = int(mask.sum())
        segment = Segment(number, seen.label, seen.category, seen.type, seen.region, seen.colour, voxels)
        combined_segments.append(segment)
        combined.append(mask)
    ids = [row.id for row in rows if row.id is not None]
    version = NewVersion(masks=np.stack(combined), segments=combined_segments, source=CONSENSUS)
    stages = service.settings_of(record.project).review.stages
    view = service.save(
        record,
        version,
        annotator=CONSENSUS,
        actor=reviewer.name,
        consensus_of=ids,
        stage=stages[-1],
        state=APPROVED,
    )
    with service.database.unit_of_work() as work:
        session = work.research
        row = load_annotation(session, view.id)
        comment = f"{method} of annotations {', '.join(str(i) for i in ids)}"
        session.add(
            ReviewDecision(
                annotation_id=view.id,
                version=1,
                stage=stages[-1],
                decision="approve",
                reviewer=reviewer.name,
                comment=comment,
            )
        )
        queue_deliveries(session, row, service.settings_of(record.project))
        record_event(
            session,
            actor=reviewer.name,
            action="annotation.approved",
            project_id=row.project_id,
            object=f"annotation {view.id} v1",
            detail=f"consensus, {comment}, final",
        )
    return service.get(view.id)
