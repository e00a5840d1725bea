"""What a de-identified instance says about itself (PS3.15 E.1.1): the subject's pseudonym, the Clinical
Trial Subject/Study/Series attributes, Patient Identity Removed, the De-identification Method (Code
Sequence) listing the profile and options applied, and file meta information of our own."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from pydicom import Dataset, Sequence
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag
from pydicom.uid import UID

from bridge.deid.table import TABLE_EDITION, Option
from bridge.dicom.elements import put_value, tag_of, text_of
from bridge.dicom.encoding import encoded_value, text_element
from bridge.dicom.implementation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

_OPTION_CODES = {
    Option.CLEAN_DESCRIPTORS: codes.DCM.CleanDescriptorsOption,
    Option.RETAIN_MODIFIED_DATES: codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    Option.RETAIN_FULL_DATES: codes.DCM.RetainLongitudinalTemporalInformationFullDatesOption,
    Option.RETAIN_PATIENT_CHARACTERISTICS: codes.DCM.RetainPatientCharacteristicsOption,
    Option.RETAIN_DEVICE_IDENTITY: codes.DCM.RetainDeviceIdentityOption,
    Option.RETAIN_INSTITUTION_IDENTITY: codes.DCM.RetainInstitutionIdentityOption,
    Option.RETAIN_UIDS: codes.DCM.RetainUidsOption,
}
_SOP_CLASS_UID, _SOP_INSTANCE_UID = tag_of("SOPClassUID"), tag_of("SOPInstanceUID")
_TRANSFER_SYNTAX = BaseTag(0x00020010)
_CODE_ITEM_TAGS = (tag_of("CodeValue"), tag_of("CodingSchemeDesignator"), tag_of("CodeMeaning"))


@dataclass(frozen=True)
class TrialAttributes:
    """Clinical Trial Subject/Study/Series attributes written into every output instance."""

    sponsor_name: str
    protocol_id: str
    protocol_name: str = ""
    site_id: str = ""
    site_name: str = ""
    coordinating_center: str = ""


def encoding_of(ds: Dataset) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of the file's transfer syntax; None without file meta information."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        return None
    syntax = UID(text_of(file_meta, _TRANSFER_SYNTAX))
    if not syntax.is_transfer_syntax:
        return None
    return syntax.is_implicit_VR, syntax.is_little_endian


def write_identity(
    ds: Dataset,
    *,
    subject_code: str,
    trial: TrialAttributes,
    options: frozenset[Option],
    label: str | None,
    encoding: tuple[bool, bool] | None,
) -> None:
    """Subject pseudonym, Clinical Trial attributes and the record of what was done (PS3.15 E.1.1)."""
    put_value(ds, "PatientName", subject_code, encoding)
    put_value(ds, "PatientID", subject_code, encoding)
    put_value(ds, "PatientIdentityRemoved", "YES", encoding)
    put_value(ds, "DeidentificationMethod", f"pacs-bridge PS3.15 E.1-1 {TABLE_EDITION}", encoding)
    _put_method_codes(ds, options, encoding)
    put_value(
        ds,
        "LongitudinalTemporalInformationModified",
        "MODIFIED"
        if Option.RETAIN_MODIFIED_DATES in options
        else "UNMODIFIED"
        if Option.RETAIN_FULL_DATES in options
        else "REMOVED",
        encoding,
    )
    put_value(ds, "ClinicalTrialSponsorName", trial.sponsor_name, encoding)
    put_value(ds, "ClinicalTrialProtocolID", trial.protocol_id, encoding)
    put_value(ds, "ClinicalTrialProtocolName", trial.protocol_name or None, encoding)
    put_value(ds, "ClinicalTrialSiteID", trial.site_id or None, encoding)
    put_value(ds, "ClinicalTrialSiteName", trial.site_name or None, encoding)
    put_value(ds, "ClinicalTrialSubjectID", subject_code, encoding)
    put_value(ds, "ClinicalTrialTimePointID", label, encoding)
    put_value(ds, "ClinicalTrialCoordinatingCenterName", trial.coordinating_center or None, encoding)


_METHOD_CODES = tag_of("DeidentificationMethodCodeSequence")


def _put_method_codes(ds: Dataset, options: frozenset[Option], encoding: tuple[bool, bool] | None) -> None:
    """The Deidentification Method Code Sequence: encoded once per options and encoding when the instance
    has none yet (the common case), else set as pydicom sets it."""
    if encoding is not None and _METHOD_CODES not in ds:
        data = _method_codes_value(options, *encoding)
        if data is not None:
            ds[_METHOD_CODES] = RawDataElement(_METHOD_CODES, "SQ", len(data), data, 0, *encoding)
            return
    put_value(
        ds, "DeidentificationMethodCodeSequence", Sequence([_code_item(code) for code in _applied_codes(options)]), None
    )


@cache
def _method_codes_value(options: frozenset[Option], implicit: bool, little: bool) -> bytes | None:
    return encoded_value(
        "SQ", Sequence([_code_item(code) for code in _applied_codes(options)]), implicit=implicit, little=little
    )


@cache
def _applied_codes(options: frozenset[Option]) -> tuple[Code, ...]:
    """The profile and the options applied, in the order the method code sequence lists them."""
    return (codes.DCM.BasicApplicationConfidentialityProfile,) + tuple(
        code for option, code in _OPTION_CODES.items() if option in options
    )


def _code_item(code: Code) -> Dataset:
    """A fresh code sequence item (every output owns its items)."""
    value, scheme, meaning = _CODE_ITEM_TAGS
    return Dataset(
        {
            value: DataElement(value, "SH", code.value),
            scheme: DataElement(scheme, "SH", code.scheme_designator),
            meaning: DataElement(meaning, "LO", code.meaning),
        }
    )


def rebuild_file_meta(ds: Dataset) -> None:
    """Ours, for the de-identified instance: its (pseudo) UIDs, the transfer syntax it keeps, our name."""
    meta = ds.file_meta
    for tag in list(meta.keys()):
        if int(tag) not in (0x00020001, 0x00020010):
            del meta[tag]
    texts = {
        0x00020002: ("UI", text_of(ds, _SOP_CLASS_UID)),
        0x00020003: ("UI", text_of(ds, _SOP_INSTANCE_UID)),
        0x00020010: ("UI", text_of(meta, _TRANSFER_SYNTAX)),
        0x00020012: ("UI", IMPLEMENTATION_CLASS_UID),
        0x00020013: ("SH", IMPLEMENTATION_VERSION),
    }
    for number, (vr, text) in texts.items():
        tag = BaseTag(number)
        if number == 0x00020010 and not text:
            continue
        meta[tag] = text_element(tag, vr, text, implicit=False, little=True) or DataElement(tag, vr, text)
