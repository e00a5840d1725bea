"""The Query/Retrieve information models the SCP serves (PS3.4 C.6): Patient Root and Study Root, each with
its FIND, MOVE and GET SOP class, and the query levels each model has."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# pynetdicom generates these names at import: real, public, but invisible to mypy
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from bridge.dicom.sop_classes import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from bridge.search.attributes import Level


class Operation(StrEnum):
    FIND = "C-FIND"
    MOVE = "C-MOVE"
    GET = "C-GET"


@dataclass(frozen=True)
class InformationModel:
    name: str
    operation: Operation
    levels: tuple[Level, ...]


_PATIENT_ROOT = (Level.PATIENT, Level.STUDY, Level.SERIES, Level.IMAGE)
_STUDY_ROOT = (Level.STUDY, Level.SERIES, Level.IMAGE)

MODELS: dict[str, InformationModel] = {
    str(PatientRootQueryRetrieveInformationModelFind): InformationModel("Patient Root", Operation.FIND, _PATIENT_ROOT),
    str(PatientRootQueryRetrieveInformationModelMove): InformationModel("Patient Root", Operation.MOVE, _PATIENT_ROOT),
    str(PatientRootQueryRetrieveInformationModelGet): InformationModel("Patient Root", Operation.GET, _PATIENT_ROOT),
    str(StudyRootQueryRetrieveInformationModelFind): InformationModel("Study Root", Operation.FIND, _STUDY_ROOT),
    str(StudyRootQueryRetrieveInformationModelMove): InformationModel("Study Root", Operation.MOVE, _STUDY_ROOT),
    str(StudyRootQueryRetrieveInformationModelGet): InformationModel("Study Root", Operation.GET, _STUDY_ROOT),
}


def query_retrieve_sop_classes() -> tuple[str, ...]:
    return tuple(MODELS)
