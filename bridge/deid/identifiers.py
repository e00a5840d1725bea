"""The patient's names and identifiers found in an instance, for Clean Descriptors to remove from free text.

The instances of a series carry the same bytes, so the identifiers are found by those bytes and decoded once
(person name decoding is costly).
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag

from bridge.deid import values
from bridge.dicom.elements import dictionary_vr, tag_of, value_of
from bridge.process.caches import BoundedCache

# Identifiers whose tokens Clean Descriptors removes from free text.
_IDENTIFIER_KEYWORDS = (
    "PatientID",
    "IssuerOfPatientID",
    "AccessionNumber",
    "StudyID",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
    "InstitutionName",
    "InstitutionAddress",
    "StationName",
    "DeviceSerialNumber",
)
_IDENTIFIER_TAGS = tuple(tag_of(keyword) for keyword in _IDENTIFIER_KEYWORDS)
_PATIENT_BIRTH_DATE = tag_of("PatientBirthDate")


def identifiers_of(ds: Dataset) -> values.Identifiers:
    """The names and identifiers of this instance (top level), for Clean Descriptors. The instances of a
    series carry the same bytes: found by them, without decoding names again (PN decoding is costly)."""
    key = _identifier_bytes(ds)
    found = _identifiers_by_bytes.get(key) if key is not None else None
    if found is None:
        found = _decoded_identifiers(ds)
        if key is not None:
            _identifiers_by_bytes[key] = found
    return found


_identifiers_by_bytes: BoundedCache[tuple[object, ...], values.Identifiers] = BoundedCache(256)
_SPECIFIC_CHARACTER_SET = BaseTag(0x00080005)


def _identifier_bytes(ds: Dataset) -> tuple[object, ...] | None:
    """The raw values the identifiers come from (names, identifier attributes, character set); None when
    one of them is not raw any more."""
    charset = value_of(ds, _SPECIFIC_CHARACTER_SET)  # converted by every reader (it decodes the rest)
    key: list[object] = [tuple(charset) if isinstance(charset, MultiValue) else charset]
    tags = list(ds.keys())  # its own keys: found again by identity (BaseTag.__eq__ is Python)
    names = [tags[position] for position in _name_positions(tuple(map(int, tags)))]
    for tag in (*names, *_IDENTIFIER_TAGS):
        element = ds.get_item(tag, keep_deferred=True)
        if element is None:
            continue
        if not isinstance(element, RawDataElement) or element.value is None:
            return None
        key += (int(tag), element.value)
    return tuple(key)


@lru_cache(maxsize=64)
def _name_positions(tags: tuple[int, ...]) -> tuple[int, ...]:
    """Where the public person names are among `tags` (the instances of a series have the same tags)."""
    return tuple(i for i, tag in enumerate(tags) if not tag & 0x10000 and dictionary_vr(tag) == "PN")


def _decoded_identifiers(ds: Dataset) -> values.Identifiers:
    names: list[str] = []
    for tag in list(ds.keys()):
        if not tag & 0x10000 and dictionary_vr(int(tag)) == "PN":
            names.extend(_strings(ds[tag].value))
    others: list[str] = []
    for tag in _IDENTIFIER_TAGS:
        others.extend(_strings(value_of(ds, tag)))
    birth = str(value_of(ds, _PATIENT_BIRTH_DATE) or "")
    if len(birth) == 8:
        others += [f"{birth[6:]}.{birth[4:6]}.{birth[:4]}", f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"]
    return _collected(tuple(names), tuple(others))


@lru_cache(maxsize=64)
def _collected(names: tuple[str, ...], others: tuple[str, ...]) -> values.Identifiers:
    """The instances of a series carry the same identifiers: collected once (and the same object each time,
    which `values.clean_text` memoizes on)."""
    return values.collect_identifiers(names, others)


def _strings(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]
