"""How much annotators agree, and how their work fares in review: the figures a project lead reads.

Agreement: for every series annotated by several annotators, Dice and the 95th-percentile Hausdorff distance
(mm, patient space) per label and pair of annotators (their current versions), averaged per project or
task. Per annotator: the share of annotations approved at their first review, the revisions made, and the
mean Dice of each first version with the series' final (approved) segmentation.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel
from sqlmodel import Session, col, select

from bridge.annotations.agreement import dice, pairwise
from bridge.annotations.service import APPROVED, AnnotationService
from bridge.annotations.sources import series_by_id
from storage.models.annotations import Annotation, ReviewDecision
from storage.models.research import Project


class AgreementRow(BaseModel):
    label: str
    first: str
    second: str
    series: int  # annotated by both with this label
    dice: float  # mean over those series
    hausdorff95_mm: float | None  # mean where defined (both masks non-empty)


class AnnotatorRow(BaseModel):
    annotator: str
    annotations: int
    reviewed: int  # with at least one decision
    approved_at_first_review: float | None  # share of the reviewed
    revisions: int  # versions after the first, over all annotations
    mean_dice_with_final: float | None  # first version vs the series' approved segmentation


def _annotations(session: Session, project: str, task_id: int | None) -> list[Annotation]:
    statement = (
        select(Annotation)
        .join(Project, col(Project.id) == Annotation.project_id)
        .where(Project.name == project)
        .order_by(col(Annotation.id))
    )
    if task_id is not None:
        statement = statement.where(Annotation.task_id == task_id)
    return list(session.exec(statement))


def _by_label(masks: np.ndarray, labels: Iterable[str]) -> dict[str, np.ndarray]:
    return {label.lower(): masks[index] for index, label in enumerate(labels)}


def agreement(service: AnnotationService, *, project: str, task_id: int | None = None) -> list[AgreementRow]:
    """Mean Dice and HD95 per label and pair of annotators over the series they both annotated."""
    sums: dict[tuple[str, str, str], list[tuple[float, float | None]]] = defaultdict(list)
    names: dict[str, str] = {}
    with service.database.reading() as session:
        per_series: dict[int, dict[str, Annotation]] = defaultdict(dict)
        for row in _annotations(session, project, task_id):
            if row.consensus_of is None:
                per_series[row.series_id][row.annotator] = row  # the latest of an annotator's, by id order
        for series_id, by_annotator in per_series.items():
            if len(by_annotator) < 2:
                continue
            geometry = service.geometry(session, series_by_id(session, series_id))
            spacing_x, spacing_y, spacing_z = geometry.grid.spacing
            masks_of: dict[str, dict[str, np.ndarray]] = {}
            for annotator, row in by_annotator.items():
                assert row.id is not None
                masks, segments = service.masks_of(session, row.id)
                masks_of[annotator] = _by_label(masks, (s.label for s in segments))
                names.update({s.label.lower(): s.label for s in segments})
            labels = {label for found in masks_of.values() for label in found}
            for label in sorted(labels):
                having = {annotator: found[label] for annotator, found in masks_of.items() if label in found}
                if len(having) < 2:
                    continue
                for pair in pairwise(label, having, (spacing_z, spacing_y, spacing_x)):
                    sums[(label, pair.first, pair.second)].append((pair.dice, pair.hausdorff95_mm))
    rows = []
    for (label, first, second), values in sorted(sums.items()):
        distances = [d for _, d in values if d is not None]
        rows.append(
            AgreementRow(
                label=names.get(label, label),
                first=first,
                second=second,
                series=len(values),
                dice=round(float(np.mean([d for d, _ in values])), 4),
                hausdorff95_mm=round(float(np.mean(distances)), 3) if distances else None,
            )
        )
    return rows


def annotators(service: AnnotationService, *, project: str, task_id: int | None = None) -> list[AnnotatorRow]:
    """Per annotator: review outcomes, revisions, and agreement of first versions with the final ones."""
    with service.database.reading() as session:
        rows = _annotations(session, project, task_id)
        ids = [row.id for row in rows]
        decisions = session.exec(
            select(ReviewDecision).where(col(ReviewDecision.annotation_id).in_(ids)).order_by(col(ReviewDecision.id))
        ).all()
        first_decision: dict[int, str] = {}
        for decision in decisions:
            first_decision.setdefault(decision.annotation_id, decision.decision)
        finals: dict[int, Annotation] = {}  # series -> its latest approved annotation
        for row in rows:
            if row.state == APPROVED:
                finals[row.series_id] = row
        tallies: dict[str, _Tally] = defaultdict(_Tally)
        for row in rows:
            if row.consensus_of is not None:
                continue
            assert row.id is not None
            tally = tallies[row.annotator]
            tally.count += 1
            tally.revisions += row.version - 1
            if row.id in first_decision:
                tally.reviewed += 1
                tally.first_approved += first_decision[row.id] == "approve"
            final = finals.get(row.series_id)
            if final is not None and final.id is not None:
                first_masks, first_segments = service.masks_of(session, row.id, 1)
                final_masks, final_segments = service.masks_of(session, final.id)
                mine = _by_label(first_masks, (s.label for s in first_segments))
                theirs = _by_label(final_masks, (s.label for s in final_segments))
                tally.dice.extend(dice(mine[label], theirs[label]) for label in sorted(set(mine) & set(theirs)))
    return [
        AnnotatorRow(
            annotator=annotator,
            annotations=tally.count,
            reviewed=tally.reviewed,
            approved_at_first_review=round(tally.first_approved / tally.reviewed, 4) if tally.reviewed else None,
            revisions=tally.revisions,
            mean_dice_with_final=round(float(np.mean(tally.dice)), 4) if tally.dice else None,
        )
        for annotator, tally in sorted(tallies.items())
    ]


@dataclass
class _Tally:
    count: int = 0
    reviewed: int = 0
    first_approved: int = 0
    revisions: int = 0
    dice: list[float] = field(default_factory=list)
