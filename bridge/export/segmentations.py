"""The approved segmentations of an export's series: the SEG the outbox stored in the research store for
each approved annotation version (DICOM exports copy it beside the images), and its mask (NIfTI exports
write it as a label volume on the series' grid)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlmodel import Session, col, select

from bridge.annotations import maskfiles
from bridge.annotations.segments import from_json
from bridge.cohorts.query import SeriesRow
from storage.models.annotations import Annotation, AnnotationVersion, Delivery
from storage.models.research import Instance, Series

RESEARCH = "research"


@dataclass(frozen=True)
class ApprovedSeg:
    """One approved annotation version of a source series, as stored in the research store."""

    source_series_uid: str
    seg_series_uid: str
    annotation_id: int
    version: int
    labels: str
    seg_files: list[tuple[str, Path, str]]  # (SOP Instance UID, stored path, sha256)
    mask: Path  # the version's mask file (segment, slice, row, column)


def approved(
    session: Session, *, project_id: int, series_uids: Sequence[str], store: Path, masks_root: Path
) -> list[ApprovedSeg]:
    """The delivered research-side SEGs of approved annotations on these series."""
    if not series_uids:
        return []
    statement = (
        select(Series.series_uid, Delivery, AnnotationVersion)
        .join(Annotation, col(Annotation.id) == Delivery.annotation_id)
        .join(Series, col(Series.id) == Annotation.series_id)
        .join(
            AnnotationVersion,
            (col(AnnotationVersion.annotation_id) == Delivery.annotation_id)
            & (col(AnnotationVersion.version) == Delivery.version),
        )
        .where(
            Delivery.project_id == project_id,
            Delivery.destination == RESEARCH,
            Delivery.state == "delivered",
            Annotation.state == "approved",
            col(Series.series_uid).in_(list(series_uids)),
        )
        .order_by(col(Delivery.id))
    )
    found = []
    for source_uid, delivery, version in session.exec(statement):
        if delivery.seg_series_uid is None:
            continue
        files = session.exec(
            select(Instance.sop_instance_uid, Instance.path, Instance.sha256)
            .join(Series, col(Series.id) == Instance.series_id)
            .where(Series.project_id == project_id, Series.series_uid == delivery.seg_series_uid)
        ).all()
        labels = ",".join(segment.label for segment in from_json(version.segments))
        found.append(
            ApprovedSeg(
                source_series_uid=source_uid,
                seg_series_uid=delivery.seg_series_uid,
                annotation_id=delivery.annotation_id,
                version=delivery.version,
                labels=labels,
                seg_files=[(uid, store / path, sha) for uid, path, sha in files],
                mask=masks_root / version.path,
            )
        )
    return found


def seg_row(source: SeriesRow, seg: ApprovedSeg) -> SeriesRow:
    """The manifest row of a SEG: its source series' subject and timepoint, its own series."""
    return source.model_copy(
        update={
            "series_instance_uid": seg.seg_series_uid,
            "series_number": 9000 + seg.version,
            "modality": "SEG",
            "body_part": source.body_part,
            "description": f"{seg.labels} (annotation {seg.annotation_id} v{seg.version})"[:64],
        }
    )


def write_label_volume(seg: ApprovedSeg, source_files: Sequence[Path], target: Path) -> str:
    """The mask as one NIfTI label volume on the source series' grid (value = segment number; where segments
    overlap, the later one wins); its SHA-256."""
    import pydicom
    import SimpleITK as sitk

    from bridge.annotations.geometry import series_geometry
    from storage.durable import fsync_folder, sha256_of

    geometry = series_geometry([pydicom.dcmread(path, stop_before_pixels=True) for path in source_files])
    masks = maskfiles.load(seg.mask.parent, seg.mask.name)
    labels = np.zeros(masks.shape[1:], dtype=np.uint8)
    for index in range(masks.shape[0]):
        labels[masks[index]] = index + 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(geometry.grid.spacing)  # type: ignore[no-untyped-call]
    image.SetOrigin(geometry.grid.origin)  # type: ignore[no-untyped-call]
    image.SetDirection(geometry.grid.direction)  # type: ignore[no-untyped-call]
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial.nii.gz")
    sitk.WriteImage(image, str(partial))
    with partial.open("rb") as written:
        os.fsync(written.fileno())
    partial.replace(target)
    fsync_folder(target.parent)
    return sha256_of(target)
