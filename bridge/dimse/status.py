"""C-STORE response statuses (PS3.4 Annex B, PS3.7 Annex C), named once and mapped from domain errors here."""

from __future__ import annotations

from bridge.admission import Refused
from bridge.dicomio import MalformedInstance

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
SOP_CLASS_NOT_SUPPORTED = 0x0122
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110


def status_for(problem: Exception) -> int:
    """The failure status for a refused instance: A9xx when it contradicts its SOP class, C0xx otherwise."""
    if isinstance(problem, Refused) and problem.mismatch:
        return DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(problem, (Refused, MalformedInstance)):
        return CANNOT_UNDERSTAND
    return PROCESSING_FAILURE
