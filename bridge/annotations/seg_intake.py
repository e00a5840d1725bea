"""A DICOM SEG that arrives by an intake path (C-STORE, STOW-RS, import) becomes an annotation of the series
it references, attributed to the AE title or token it came from.

Before it is acknowledged, its references are checked against the index (`seg_references`). Once stored,
its masks are read in the series' index order and become a new annotation (a resend of the same SEG changes
nothing).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from sqlmodel import col, select

from bridge.annotations.seg_references import DELIVERY_SOURCE, SEG_SOP_CLASS
from bridge.annotations.segments import Segment, coded, triplet_of
from bridge.annotations.service import AnnotationService, NewVersion
from bridge.annotations.sources import find_series
from bridge.errors import AnnotationError
from bridge.seg.read import SegError, read_seg
from storage.audit import record_event
from storage.models.annotations import AnnotationVersion
from storage.models.common import utcnow
from storage.models.research import Instance, Project, Series

logger = logging.getLogger(__name__)


def annotator_of(source: str) -> str:
    """`c-store:AE` -> AE, `stow-rs:alice` -> alice, anything else as it is."""
    return source.partition(":")[2].strip() or source


def annotate_from_seg(service: AnnotationService, ds: Dataset, *, project: str, source: str) -> int | None:
    """The annotation a stored (de-identified) SEG becomes: its id, or None when it cannot be one (audited)."""
    if source.startswith(DELIVERY_SOURCE):
        return None
    seg_uid = str(ds.SOPInstanceUID)
    try:
        return _annotate(service, ds, project=project, source=source, seg_uid=seg_uid)
    except (AnnotationError, SegError) as error:
        logger.warning("SEG %s of project %s is stored but is no annotation: %s", seg_uid, project, error)
        with service.database.unit_of_work() as work:
            record_event(
                work.research, actor=source, action="annotation.refused", object=seg_uid, detail=str(error)[:1024]
            )
        return None


def _annotate(service: AnnotationService, ds: Dataset, *, project: str, source: str, seg_uid: str) -> int:
    read = read_seg(ds)
    named = sorted(read.referenced_series_uids)
    if len(named) != 1:
        raise AnnotationError(f"the SEG references {len(named)} series, not one")
    with service.database.reading() as session:
        existing = service.existing_from_seg(session, seg_uid)
        if existing is not None:
            return existing
        record = find_series(session, series_uid=named[0], project=project)
        geometry = service.geometry(session, record)
    masks = read.masks(list(geometry.instance_uids))
    table = service.settings_of(project).labels
    segments: list[Segment] = []
    stack = []
    for number, info in enumerate(read.segments, start=1):
        mask = masks[info.number]
        configured = coded(number, info.label, table)
        segments.append(
            Segment(
                number=number,
                label=info.label,
                category=triplet_of(info.category),
                type=triplet_of(info.type),
                region=triplet_of(info.region) if info.region is not None else configured.region,
                colour=info.colour or configured.colour,
                voxels=int(mask.sum()),
            )
        )
        stack.append(mask)
    version = NewVersion(masks=np.stack(stack).astype(bool), segments=segments, source="seg", seg_instance_uid=seg_uid)
    view = service.save(record, version, annotator=annotator_of(source)[:64], actor=source)
    return view.id


def unlinked_segs(
    service: AnnotationService, *, since_hours: float = 24, limit: int = 20
) -> list[tuple[str, str, str, str]]:
    """Recently stored SEGs (not the bridge's own) that are no annotation yet: (project, SOP UID, path, source).
    A SEG from the hospital side may arrive before its images are indexed; it is linked once they are."""
    linked = select(AnnotationVersion.seg_instance_uid).where(col(AnnotationVersion.seg_instance_uid).is_not(None))
    statement = (
        select(Project.name, Instance.sop_instance_uid, Instance.path, Instance.source)
        # through the SEG series (indexed by modality), never a scan of every instance: this runs every second
        .join(Series, col(Series.id) == Instance.series_id)
        .join(Project, col(Project.id) == Instance.project_id)
        .where(
            Series.modality == "SEG",
            Instance.sop_class_uid == SEG_SOP_CLASS,
            col(Instance.received_at) >= utcnow() - dt.timedelta(hours=since_hours),
            col(Instance.source).not_like(f"{DELIVERY_SOURCE}%"),
            col(Instance.sop_instance_uid).not_in(linked),
        )
        .order_by(col(Instance.id))
        .limit(limit)
    )
    with service.database.reading() as session:
        return [tuple(row) for row in session.exec(statement)]  # type: ignore[misc]


def link_stored(service: AnnotationService, tried: dict[str, int], *, attempts: int = 5) -> int:
    """Make annotations of stored SEGs that are none yet (`tried`: failures so far per SOP UID, kept by the
    caller; a SEG is given up after `attempts`). The number linked."""
    linked = 0
    for project, sop_uid, path, source in unlinked_segs(service):
        if tried.get(sop_uid, 0) >= attempts or project not in service.projects:
            continue
        ds = pydicom.dcmread(service.store_root / path)
        if annotate_from_seg(service, ds, project=project, source=source) is None:
            tried[sop_uid] = tried.get(sop_uid, 0) + 1
        else:
            linked += 1
    return linked
