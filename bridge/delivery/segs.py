"""The DICOM SEG of an approved annotation version, built from the de-identified source series.

Its UIDs are derived from the project key, the annotation and the version (and "hospital" for the
re-identified copy), so that a delivery sent again after a crash sends the same instance (a PACS stores it
once). One new series per version.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from pydicom.dataset import Dataset

from bridge.annotations.geometry import series_geometry
from bridge.annotations.records import load_annotation
from bridge.annotations.segments import code_of
from bridge.annotations.service import AnnotationService
from bridge.annotations.sources import SeriesRecord, instance_paths, read_headers, series_by_id
from bridge.deid import values
from bridge.dicom.implementation import IMPLEMENTATION_VERSION
from bridge.errors import AnnotationError
from bridge.seg.build import SegmentSpec, SegMeta, build_seg

SERIES_NUMBER_BASE = 9000  # SEG series numbers: 9000 + version, apart from the acquisitions'


@dataclass(frozen=True)
class BuiltSeg:
    dataset: Dataset
    record: SeriesRecord  # the source series
    annotator: str


def seg_uid(key: bytes, annotation_id: int, version: int, what: str, kind: str = "research") -> str:
    return values.pseudo_uid(key, f"seg:{kind}:{annotation_id}:{version}:{what}")


def build_version_seg(service: AnnotationService, *, key: bytes, annotation_id: int, version: int) -> BuiltSeg:
    """The SEG of one version of an annotation (its masks over the source series, in index order)."""
    with service.database.reading() as session:
        row = load_annotation(session, annotation_id)
        record = series_by_id(session, row.series_id)
        paths = instance_paths(session, series_id=record.id)
        masks, segments = service.masks_of(session, annotation_id, version)
    headers = read_headers(service.store_root, paths)
    geometry = series_geometry(headers)
    by_uid = {str(ds.SOPInstanceUID): ds for ds in headers}
    sources = [by_uid[uid] for uid in geometry.instance_uids]
    if masks.shape[1:] != (len(sources), int(sources[0].Rows), int(sources[0].Columns)):
        raise AnnotationError(f"annotation {annotation_id} v{version} no longer fits {record.named()}")
    specs = [
        SegmentSpec(
            label=segment.label,
            mask=masks[index],
            category=code_of(segment.category),
            type=code_of(segment.type),
            colour=segment.colour,
            region=code_of(segment.region) if segment.region else None,
        )
        for index, segment in enumerate(segments)
    ]
    labels = ", ".join(segment.label for segment in segments)
    meta = SegMeta(
        series_instance_uid=seg_uid(key, annotation_id, version, "series"),
        sop_instance_uid=seg_uid(key, annotation_id, version, "instance"),
        series_number=SERIES_NUMBER_BASE + version,
        series_description=f"{labels} by {row.annotator} v{version}"[:64],
        annotator=row.annotator,
        content_label=f"ANNOTATION{annotation_id}"[:16],
        timepoint_label=record.timepoint_label,
        software_version=IMPLEMENTATION_VERSION,
    )
    with warnings.catch_warnings():  # the patient's name is the subject code: one component, on purpose
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        seg = build_seg(sources, specs, meta)
    return BuiltSeg(seg, record, row.annotator)
