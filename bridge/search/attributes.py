"""What each search level answers: DICOM attributes and the index columns (or empty values) behind them.

De-identified data has no accession number, referring physician, birth date or study ID: those attributes
exist at their level and are always empty, so a client asking for them gets them without a value (and a
non-empty key for them matches nothing). Patient ID and Patient's Name are the subject code, as they are in
the de-identified files.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cache, cached_property
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from sqlalchemy import ColumnElement, Label, func, select

from storage.models.research import Instance, Project, Series, Subject, Timepoint

_MODELS: tuple[Any, ...] = (Instance, Series, Timepoint, Subject, Project)
INSTANCE, SERIES, TIMEPOINT, SUBJECT, PROJECT = (model.__table__ for model in _MODELS)
IMG, SER, STU, PAT = INSTANCE.c, SERIES.c, TIMEPOINT.c, SUBJECT.c  # the columns, by DICOM level


class Level(StrEnum):
    """The query levels of PS3.4 C.6 (QIDO-RS uses STUDY, SERIES and IMAGE)."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


class Match(StrEnum):
    """How a key of the attribute is matched (PS3.4 C.2.2.2)."""

    UID = "uid"  # single value or a list
    TEXT = "text"  # single value, wildcards, a backslash list
    NAME = "name"  # as TEXT, case-insensitive
    DATE = "date"  # single value or a range
    TIME = "time"  # single value or a range
    NUMBER = "number"
    CODES = "codes"  # a comma-joined column holding several values (Modalities in Study)


@dataclass(frozen=True)
class Attribute:
    keyword: str
    expression: ColumnElement[Any] | None  # None: always empty in de-identified data
    match: Match = Match.TEXT
    default: bool = True  # returned without being asked for (the attributes PS3.18 requires at the level)

    @cached_property  # asked for every cell of an answer
    def tag(self) -> int:
        found = tag_for_keyword(self.keyword)
        assert found is not None, self.keyword
        return int(found)

    @cached_property
    def vr(self) -> str:
        return str(dictionary_VR(self.tag))

    @cached_property  # built once: every search selects it
    def column(self) -> Label[Any] | None:
        """The expression as a column of a search's statement, named by the keyword."""
        return None if self.expression is None else self.expression.label(self.keyword)


def _count(column: ColumnElement[Any], where: ColumnElement[bool]) -> ColumnElement[Any]:
    return select(func.count(column)).where(where).scalar_subquery()


def _sum(column: ColumnElement[Any], where: ColumnElement[bool]) -> ColumnElement[Any]:
    return select(func.coalesce(func.sum(column), 0)).where(where).scalar_subquery()


_PATIENT = (
    Attribute("PatientID", PAT.subject_code),
    Attribute("PatientName", PAT.subject_code, Match.NAME),
    Attribute("PatientBirthDate", None, Match.DATE),
)
_STUDY = (
    Attribute("StudyInstanceUID", STU.study_uid, Match.UID),
    Attribute("StudyDate", STU.study_date, Match.DATE),
    Attribute("StudyTime", STU.study_time, Match.TIME),
    Attribute("AccessionNumber", None),
    Attribute("ReferringPhysicianName", None, Match.NAME),
    Attribute("StudyID", None),
    Attribute("StudyDescription", STU.description),
    Attribute("ModalitiesInStudy", STU.modalities, Match.CODES),
    Attribute("PatientSex", STU.patient_sex),
    Attribute("NumberOfStudyRelatedSeries", STU.series_count, Match.NUMBER),
    Attribute("NumberOfStudyRelatedInstances", STU.instance_count, Match.NUMBER),
    Attribute("ClinicalTrialTimePointID", STU.label, default=False),
)
_SERIES = (
    Attribute("SeriesInstanceUID", SER.series_uid, Match.UID),
    Attribute("Modality", SER.modality),
    Attribute("SeriesNumber", SER.series_number, Match.NUMBER),
    Attribute("SeriesDescription", SER.description),
    Attribute("NumberOfSeriesRelatedInstances", SER.instance_count, Match.NUMBER),
    Attribute("BodyPartExamined", SER.body_part, default=False),
    Attribute("FrameOfReferenceUID", SER.frame_of_reference_uid, Match.UID, default=False),
    Attribute("Manufacturer", SER.manufacturer, default=False),
    Attribute("ManufacturerModelName", SER.model, default=False),
    Attribute("SliceThickness", SER.slice_thickness, Match.NUMBER, default=False),
    Attribute("ConvolutionKernel", SER.convolution_kernel, default=False),
    Attribute("PerformedProcedureStepStartDate", None, Match.DATE, default=False),
    Attribute("PerformedProcedureStepStartTime", None, Match.TIME, default=False),
)
_IMAGE = (
    Attribute("SOPInstanceUID", IMG.sop_instance_uid, Match.UID),
    Attribute("SOPClassUID", IMG.sop_class_uid, Match.UID),
    Attribute("InstanceNumber", IMG.instance_number, Match.NUMBER),
    Attribute("Rows", IMG.rows, Match.NUMBER),
    Attribute("Columns", IMG.columns, Match.NUMBER),
    Attribute("BitsAllocated", IMG.bits_allocated, Match.NUMBER),
    Attribute("NumberOfFrames", IMG.number_of_frames, Match.NUMBER),
)
_PATIENT_COUNTS = (
    Attribute("PatientSex", select(func.max(STU.patient_sex)).where(STU.subject_id == PAT.id).scalar_subquery()),
    Attribute("NumberOfPatientRelatedStudies", _count(STU.id, STU.subject_id == PAT.id), Match.NUMBER),
    Attribute("NumberOfPatientRelatedSeries", _sum(STU.series_count, STU.subject_id == PAT.id), Match.NUMBER),
    Attribute("NumberOfPatientRelatedInstances", _sum(STU.instance_count, STU.subject_id == PAT.id), Match.NUMBER),
)

# a level answers its own attributes and those of the levels above it (matching on them, e.g. a study
# date when searching all series, is then one join away)
ATTRIBUTES: dict[Level, tuple[Attribute, ...]] = {
    Level.PATIENT: _PATIENT + _PATIENT_COUNTS,
    Level.STUDY: _PATIENT + _STUDY,
    Level.SERIES: _PATIENT + _STUDY + _SERIES,
    Level.IMAGE: _PATIENT + _STUDY + _SERIES + _IMAGE,
}
OWN: dict[Level, tuple[Attribute, ...]] = {
    Level.PATIENT: _PATIENT + _PATIENT_COUNTS,
    Level.STUDY: _PATIENT + _STUDY,
    Level.SERIES: _SERIES,
    Level.IMAGE: _IMAGE,
}


@cache
def by_keyword(level: Level) -> dict[str, Attribute]:
    return {attribute.keyword: attribute for attribute in ATTRIBUTES[level]}


# keys clients send at a level that answers them under another name: OHIF's study list asks Modality
_ALIASES = {Level.STUDY: {"Modality": "ModalitiesInStudy", "00080060": "ModalitiesInStudy"}}


def find(level: Level, key: str) -> Attribute | None:
    """The attribute named by a keyword or a tag in hex (`00100020`), if the level answers it."""
    attributes = by_keyword(level)
    key = _ALIASES.get(level, {}).get(key, key)
    if key in attributes:
        return attributes[key]
    if len(key) == 8:
        try:
            tag = int(key, 16)
        except ValueError:
            return None
        return next((a for a in attributes.values() if a.tag == tag), None)
    return None
