"""The one map from DICOM keywords to index columns, and reading their values from a de-identified dataset.

Ingest fills the timepoint and series rows from it; the query side (cohorts, QIDO-RS, C-FIND) reads it to
know which attribute lives in which column (`column_of`). The tables themselves are `storage.models.research`;
a test checks that every column named here exists there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from bridge.dicom.elements import number_of, tag_of


class Level(StrEnum):
    SUBJECT = "subject"
    TIMEPOINT = "timepoint"
    SERIES = "series"
    INSTANCE = "instance"


class Kind(StrEnum):
    TEXT = "text"  # stripped, at most 64 characters, None when empty
    INT = "int"
    FLOAT = "float"
    DATE = "date"  # DA as a date


@dataclass(frozen=True)
class Field:
    """One indexed attribute: its keyword, the row and column that hold it, and how its value is read.

    `value`: which value of a multi-valued attribute (e.g. PixelSpacing's row and column spacing), taken only
    when the attribute has exactly `values` of them. `functional_group`: for enhanced multi-frame instances,
    the shared functional group sequence to read the attribute from when the top level lacks it."""

    keyword: str
    level: Level
    column: str
    kind: Kind = Kind.TEXT
    value: int | None = None
    values: int = 1
    functional_group: str | None = None


FIELDS: tuple[Field, ...] = (
    Field("PatientID", Level.SUBJECT, "subject_code"),
    Field("StudyInstanceUID", Level.TIMEPOINT, "study_uid"),
    Field("StudyDate", Level.TIMEPOINT, "study_date", Kind.DATE),
    Field("StudyTime", Level.TIMEPOINT, "study_time"),
    Field("PatientSex", Level.TIMEPOINT, "patient_sex"),
    Field("StudyDescription", Level.TIMEPOINT, "description"),
    Field("ClinicalTrialTimePointID", Level.TIMEPOINT, "label"),
    Field("SeriesInstanceUID", Level.SERIES, "series_uid"),
    Field("Modality", Level.SERIES, "modality"),
    Field("BodyPartExamined", Level.SERIES, "body_part"),
    Field("SeriesDescription", Level.SERIES, "description"),
    Field("SeriesNumber", Level.SERIES, "series_number", Kind.INT),
    Field("FrameOfReferenceUID", Level.SERIES, "frame_of_reference_uid"),
    Field("Manufacturer", Level.SERIES, "manufacturer"),
    Field("ManufacturerModelName", Level.SERIES, "model"),
    Field("SliceThickness", Level.SERIES, "slice_thickness", Kind.FLOAT, functional_group="PixelMeasuresSequence"),
    Field("PixelSpacing", Level.SERIES, "pixel_spacing_row", Kind.FLOAT, 0, 2, "PixelMeasuresSequence"),
    Field("PixelSpacing", Level.SERIES, "pixel_spacing_col", Kind.FLOAT, 1, 2, "PixelMeasuresSequence"),
    Field("KVP", Level.SERIES, "kvp", Kind.FLOAT),
    Field("ConvolutionKernel", Level.SERIES, "convolution_kernel"),
    Field("ContrastBolusAgent", Level.SERIES, "contrast_agent"),
    Field("SOPInstanceUID", Level.INSTANCE, "sop_instance_uid"),
    Field("SOPClassUID", Level.INSTANCE, "sop_class_uid"),
    Field("InstanceNumber", Level.INSTANCE, "instance_number", Kind.INT),
    Field("Rows", Level.INSTANCE, "rows", Kind.INT),
    Field("Columns", Level.INSTANCE, "columns", Kind.INT),
    Field("BitsAllocated", Level.INSTANCE, "bits_allocated", Kind.INT),
    Field("NumberOfFrames", Level.INSTANCE, "number_of_frames", Kind.INT),
)
# read on ingest's hot path by `instance_number` and the fast element readers, not by `row_values`
_FAST_INSTANCE_COLUMNS = frozenset({"sop_instance_uid", "sop_class_uid", "instance_number"})


def fields_of(level: Level) -> tuple[Field, ...]:
    return tuple(field for field in FIELDS if field.level is level)


def column_of(keyword: str, level: Level) -> str | None:
    """The column holding `keyword` at `level` (the first, for a multi-valued attribute), or None."""
    return next((f.column for f in FIELDS if f.keyword == keyword and f.level is level), None)


def row_values(ds: Dataset, level: Level) -> dict[str, Any]:
    """The columns of `level` read from a de-identified dataset (for a new timepoint or series row)."""
    return {field.column: _read(ds, field) for field in fields_of(level)}


def image_values(ds: Dataset) -> dict[str, Any]:
    """The instance columns besides those ingest reads on its fast path (image size, frames)."""
    return {f.column: _read(ds, f) for f in fields_of(Level.INSTANCE) if f.column not in _FAST_INSTANCE_COLUMNS}


def _read(ds: Dataset, field: Field) -> Any:
    value = ds.get(field.keyword)
    if not value and field.functional_group:
        value = _functional_group(ds, field.functional_group, field.keyword)
    if field.value is not None:
        if not value or len(value) != field.values:
            return None
        value = value[field.value]
    if field.kind is Kind.TEXT:
        return as_text(value)
    if field.kind is Kind.INT:
        return as_int(value)
    if field.kind is Kind.FLOAT:
        return as_float(value)
    return as_date(value)


def _functional_group(ds: Dataset, sequence: str, keyword: str) -> Any:
    """A value from the shared functional groups of an enhanced multi-frame instance."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence].value:
        return shared[0][sequence][0].get(keyword)
    return None


_INSTANCE_NUMBER = tag_of("InstanceNumber")


def instance_number(ds: Dataset) -> int | None:
    """Instance Number (IS) as an int, read from its bytes when they are one plain integer (every instance:
    the hot path keeps pydicom's IS conversion for the others)."""
    return as_int(number_of(ds, _INSTANCE_NUMBER))


def as_text(value: object) -> str | None:
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text.strip()[:64] or None


def as_int(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def as_float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def as_date(value: object) -> dt.date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
