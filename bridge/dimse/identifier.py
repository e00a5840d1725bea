"""C-FIND, C-MOVE and C-GET identifiers (PS3.4 C.4): what the request asks, as a `Search` or as the UIDs to
retrieve; and the answer of one matching row as a response identifier.

C-FIND keys are matched as QIDO-RS matches them (bridge.search). A key the level does not know (nor the
levels above it) is returned empty, and when the request gave it a value that value is ignored rather
than refusing the query, as most archives do: the responses then say Pending with warnings (0xFF01,
optional keys not supported). Sequences and private attributes are never matched; a requested sequence
comes back empty, private ones are left out.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import DSfloat
from pynetdicom.dsutils import decode, encode

from bridge.dicom import status
from bridge.dimse.information_models import InformationModel
from bridge.search.attributes import Attribute, Level, find
from bridge.search.query import dicom_values

logger = logging.getLogger(__name__)

QUERY_RETRIEVE_LEVEL = 0x00080052
SPECIFIC_CHARACTER_SET = 0x00080005
RETRIEVE_AE_TITLE = 0x00080054
INSTANCE_AVAILABILITY = 0x00080056
FAILED_SOP_INSTANCE_UID_LIST = 0x00080058
UTF8 = "ISO_IR 192"
# answered here, not from the index
_ANSWERED = frozenset({QUERY_RETRIEVE_LEVEL, SPECIFIC_CHARACTER_SET, RETRIEVE_AE_TITLE, INSTANCE_AVAILABILITY})
# the unique key of each level (PS3.4 C.6.1.1, C.6.2.1): always answered, and what a retrieve names
UNIQUE_KEY = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}


class IdentifierError(ValueError):
    """An identifier the SCP cannot serve: the failure status to answer, the message its Error Comment
    (naming attributes, never values)."""

    def __init__(self, message: str, answer: int) -> None:
        super().__init__(message)
        self.status = answer


@dataclass(frozen=True)
class Key:
    tag: int
    keyword: str
    vr: str


@dataclass(frozen=True)
class FindQuery:
    """A C-FIND identifier read: the level, the matching keys (keyword -> key) of attributes the level knows,
    every key to return in the order of their tags, and whether keys with a value were ignored."""

    level: Level
    keys: Mapping[str, str]
    returned: tuple[Key, ...]
    ignored_keys: bool

    @property
    def pending_status(self) -> int:
        return status.PENDING_WITH_WARNINGS if self.ignored_keys else status.PENDING


@dataclass(frozen=True)
class RetrieveQuery:
    """A C-MOVE or C-GET identifier read: the level and the unique keys naming what to send (UID lists at
    the level retrieved, single UIDs above it)."""

    level: Level
    patient_id: str | None
    study_uids: tuple[str, ...]
    series_uids: tuple[str, ...]
    sop_instance_uids: tuple[str, ...]


def decode_identifier(data: bytes, transfer_syntax: tuple[bool, bool]) -> Dataset:
    """The identifier dataset, in the presentation context's transfer syntax (implicit VR, little endian)."""
    implicit, little = transfer_syntax
    try:
        return decode(io.BytesIO(data), implicit, little)
    except Exception:  # pydicom raises several types for a dataset it cannot parse
        raise IdentifierError("the identifier cannot be parsed", status.CANNOT_UNDERSTAND) from None


def encode_identifier(ds: Dataset, transfer_syntax: tuple[bool, bool]) -> bytes:
    implicit, little = transfer_syntax
    data = encode(ds, implicit, little)
    if data is None:
        raise ValueError("a response identifier could not be encoded")
    return data


def level_of(ds: Dataset, model: InformationModel) -> Level:
    element = ds.get(QUERY_RETRIEVE_LEVEL)
    text = str(element.value or "").strip().upper() if element is not None else ""
    if not text:
        raise IdentifierError("the identifier has no QueryRetrieveLevel", status.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    level = next((level for level in model.levels if level.value == text), None)
    if level is None:
        raise IdentifierError(
            f"QueryRetrieveLevel {text[:16]} is not a level of {model.name}", status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        )
    return level


def read_find(ds: Dataset, model: InformationModel) -> FindQuery:
    level = level_of(ds, model)
    keys: dict[str, str] = {}
    returned: dict[int, Key] = {}
    ignored = False
    for element in ds:
        tag = int(element.tag)
        if tag in _ANSWERED or element.tag.is_private or element.tag.element == 0 or not element.keyword:
            continue
        key = Key(tag, element.keyword, element.VR)
        attribute = find(level, element.keyword)
        value = _key_text(element)
        if attribute is not None and element.VR != "SQ":
            keys[attribute.keyword] = value or ""
        elif value:
            ignored = True  # a key the level cannot match: universal matching, and a warning
        returned[tag] = key
    unique = find(level, UNIQUE_KEY[level])
    assert unique is not None
    returned.setdefault(unique.tag, Key(unique.tag, unique.keyword, unique.vr))
    keys.setdefault(unique.keyword, "")
    if INSTANCE_AVAILABILITY in ds:
        returned[INSTANCE_AVAILABILITY] = Key(INSTANCE_AVAILABILITY, "InstanceAvailability", "CS")
    return FindQuery(level, keys, tuple(returned[tag] for tag in sorted(returned)), ignored)


def _key_text(element: DataElement) -> str | None:
    """The matching key as text (a list joined by backslashes), None for a value that cannot be one
    (a sequence with items, binary data)."""
    value = element.value
    if element.VR == "SQ":
        return "sequence" if value else None
    if value is None or value == "":
        return ""
    if isinstance(value, bytes | bytearray):
        return None
    if isinstance(value, MultiValue):
        return "\\".join(str(item) for item in value)
    return str(value)


def answer(query: FindQuery, attributes: Iterable[Attribute], row: Iterable[Any], *, retrieve_ae_title: str) -> Dataset:
    """The response identifier for one row: every key of the query, with the row's values where the index
    holds them and empty otherwise, the level and where to retrieve it from."""
    values = {attribute.keyword: (attribute, value) for attribute, value in zip(attributes, row, strict=True)}
    ds = Dataset()
    ds.add_new(QUERY_RETRIEVE_LEVEL, "CS", query.level.value)
    ds.add_new(RETRIEVE_AE_TITLE, "AE", retrieve_ae_title)
    for key in query.returned:
        if key.tag == INSTANCE_AVAILABILITY:
            ds.add_new(key.tag, key.vr, "ONLINE")
        elif key.vr == "SQ":
            ds.add_new(key.tag, "SQ", [])
        elif key.keyword in values:
            attribute, value = values[key.keyword]
            ds.add_new(key.tag, attribute.vr, _element_value(attribute, dicom_values(attribute, value)))
        else:
            ds.add_new(key.tag, key.vr, None)
    if any(isinstance(element.value, str) and not element.value.isascii() for element in ds):
        ds.add_new(SPECIFIC_CHARACTER_SET, "CS", UTF8)
    return ds


def _element_value(attribute: Attribute, values: list[Any]) -> Any:
    if attribute.vr == "DS":
        values = [DSfloat(value, auto_format=True) for value in values]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def read_retrieve(ds: Dataset, model: InformationModel) -> RetrieveQuery:
    """The unique keys of a C-MOVE/C-GET identifier; the level's own must be there (PS3.4 C.4.2.2.1)."""
    level = level_of(ds, model)
    uids = {keyword: _uids(ds, keyword) for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}
    patient_id = str(ds.get("PatientID", "") or "").strip() or None
    own = UNIQUE_KEY[level]
    if (patient_id is None) if level is Level.PATIENT else not uids[own]:
        raise IdentifierError(f"a retrieve at {level.value} level needs {own}", status.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    if patient_id is not None and ("*" in patient_id or "?" in patient_id):
        raise IdentifierError(
            "PatientID of a retrieve: one value, no wildcards", status.DATASET_DOES_NOT_MATCH_SOP_CLASS
        )
    for keyword, found in uids.items():
        if keyword != own and len(found) > 1:
            raise IdentifierError(
                f"{keyword} above the retrieve level: one UID", status.DATASET_DOES_NOT_MATCH_SOP_CLASS
            )
    return RetrieveQuery(
        level=level,
        patient_id=patient_id,
        study_uids=uids["StudyInstanceUID"],
        series_uids=uids["SeriesInstanceUID"],
        sop_instance_uids=uids["SOPInstanceUID"],
    )


def _uids(ds: Dataset, keyword: str) -> tuple[str, ...]:
    value = ds.get(keyword)
    if value is None or value == "":
        return ()
    items = value if isinstance(value, MultiValue) else [value]
    uids = tuple(str(item).strip() for item in items if str(item).strip())
    if not all(uid.replace(".", "").isdigit() and len(uid) <= 64 for uid in uids):
        raise IdentifierError(f"{keyword}: UIDs (digits and dots)", status.DATASET_DOES_NOT_MATCH_SOP_CLASS)
    return uids


def failed_instances(sop_instance_uids: list[str]) -> Dataset:
    """The identifier of a final C-MOVE/C-GET response with failures: the Failed SOP Instance UID List."""
    ds = Dataset()
    ds.add_new(FAILED_SOP_INSTANCE_UID_LIST, "UI", sop_instance_uids or None)
    return ds
