"""De-identify one instance: Dataset in, Dataset and UID mapping out. Pure: no I/O, no database.

The walk visits every element at every depth. An element listed in Table E.1-1 gets the table's action
under the project's options (see `table.Policy`); an unlisted one is kept if the data dictionary knows it,
removed if not; private elements are removed unless the project keeps them; overlays and curves go. With
Retain Longitudinal Temporal Information with Modified Dates every retained DA and DT is shifted by the
subject's offset. Untouched elements stay as raw bytes, so the output is written without re-encoding them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache

from pydicom import Dataset, Sequence
from pydicom.datadict import dictionary_VR, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from bridge.deid import values
from bridge.deid.table import TABLE_EDITION, Action, Option, Policy

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})
_OVERLAY_OR_CURVE = frozenset(range(0x5000, 0x5020, 2)) | frozenset(range(0x6000, 0x6020, 2))
_TEXT_VALUE = 0x0040A160  # SR TEXT content: free text the table does not list
_CONTENT_VALUE_TAGS = {  # SR content item value attributes that are Type 1 for their Value Type
    "TEXT": 0x0040A160,
    "PNAME": 0x0040A123,
    "DATETIME": 0x0040A120,
    "DATE": 0x0040A121,
    "TIME": 0x0040A122,
    "UIDREF": 0x0040A124,
}
_OPTION_CODES = {
    Option.CLEAN_DESCRIPTORS: codes.DCM.CleanDescriptorsOption,
    Option.RETAIN_MODIFIED_DATES: codes.DCM.RetainLongitudinalTemporalInformationModifiedDatesOption,
    Option.RETAIN_FULL_DATES: codes.DCM.RetainLongitudinalTemporalInformationFullDatesOption,
    Option.RETAIN_PATIENT_CHARACTERISTICS: codes.DCM.RetainPatientCharacteristicsOption,
    Option.RETAIN_DEVICE_IDENTITY: codes.DCM.RetainDeviceIdentityOption,
    Option.RETAIN_INSTITUTION_IDENTITY: codes.DCM.RetainInstitutionIdentityOption,
    Option.RETAIN_UIDS: codes.DCM.RetainUidsOption,
}
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
# 2.25 + a UUIDv5 of the project: ours, needs no registration
IMPLEMENTATION_CLASS_UID = UID("2.25.324179283464283168909547722776067492784")
IMPLEMENTATION_VERSION = "PACS_BRIDGE_01"


@dataclass(frozen=True)
class PrivateKeep:
    """A private element the project keeps: its creator, group and element offset (0x10-0xFF)."""

    creator: str
    group: int
    offset: int


@dataclass(frozen=True)
class TrialAttributes:
    """Clinical Trial Subject/Study/Series attributes written into every output instance."""

    sponsor_name: str
    protocol_id: str
    protocol_name: str = ""
    site_id: str = ""
    site_name: str = ""
    coordinating_center: str = ""


@dataclass(frozen=True)
class DeidContext:
    """Everything a de-identification needs for one instance; built per subject by the ingest service."""

    policy: Policy
    key: bytes
    subject_code: str
    date_offset_days: int
    trial: TrialAttributes
    keep_private: frozenset[PrivateKeep] = frozenset()


@dataclass
class DeidResult:
    dataset: Dataset
    uid_map: dict[str, str] = field(default_factory=dict)  # original -> pseudo
    timepoint_label: str | None = None


class Deidentifier:
    """One instance's walk; holds what the walk accumulates (UID pairs, identifier tokens)."""

    def __init__(self, context: DeidContext, identifiers: values.Identifiers) -> None:
        self.context = context
        self.policy = context.policy
        self.identifiers = identifiers
        self.uid_map: dict[str, str] = {}
        options = context.policy.options
        self.shift_dates = Option.RETAIN_MODIFIED_DATES in options
        self.clean_descriptors = Option.CLEAN_DESCRIPTORS in options

    def map_uid(self, uid: str) -> str:
        uid = uid.strip("\x00 ")
        if not uid or values.is_well_known_uid(uid):
            return uid
        pseudo = self.uid_map.get(uid)
        if pseudo is None:
            pseudo = self.uid_map[uid] = values.pseudo_uid(self.context.key, uid)
        return pseudo

    def walk(self, ds: Dataset, clean_all_text: bool = False) -> None:
        value_type = ds.get("ValueType") if 0x0040A040 in ds else None
        required_value = _CONTENT_VALUE_TAGS.get(str(value_type)) if value_type else None
        for tag in list(ds.keys()):
            self.visit(ds, tag, clean_all_text, required_value)

    def visit(self, ds: Dataset, tag: BaseTag, clean_all_text: bool, required_value: int | None) -> None:
        number = int(tag)  # plain int comparisons: pydicom's BaseTag compares in Python, slowly
        group, element = number >> 16, number & 0xFFFF
        if group & 1:
            if not self.keep_private(ds, tag):
                del ds[tag]
            return
        if element == 0 or group in _OVERLAY_OR_CURVE:
            del ds[tag]  # group lengths (recomputed by nobody) and overlays/curves
            return
        raw = ds.get_item(tag, keep_deferred=True)  # the VR is enough: never read a deferred value here
        vr = _vr_of(raw, number)
        if vr is None:
            del ds[tag]  # unknown to the data dictionary: default deny
            return
        action = self.policy.action(number, vr == "SQ")
        if number == _TEXT_VALUE:
            action = Action.CLEAN if self.clean_descriptors else Action.DUMMY
        if action is Action.REMOVE and number == required_value:
            action = Action.DUMMY  # keeps the SR content item valid
        if action is None:
            action = Action.RECURSE if vr == "SQ" else Action.CLEAN if clean_all_text else Action.KEEP
        self.apply(ds, tag, vr, action, clean_all_text)

    def apply(self, ds: Dataset, tag: BaseTag, vr: str, action: Action, clean_all_text: bool) -> None:
        if action is Action.REMOVE:
            del ds[tag]
        elif vr == "SQ":
            if action is Action.EMPTY:
                ds[tag] = DataElement(tag, "SQ", Sequence())
            else:
                for item in ds[tag].value:
                    self.walk(item, clean_all_text or action is Action.CLEAN)
        elif action is Action.EMPTY:
            ds[tag] = DataElement(tag, vr, None)
        elif action is Action.UID or vr == "UI" and action is not Action.KEEP:
            self.map_uids(ds, tag)
        elif vr in ("DA", "DT") and action is not Action.DUMMY:
            if self.shift_dates:
                self.shift(ds, tag, vr)
        elif action is Action.DUMMY:
            ds[tag] = DataElement(tag, vr, values.DUMMIES.get(vr, values.DUMMY_TEXT))
        elif action is Action.CLEAN and vr in TEXT_VRS:
            self.clean(ds, tag)

    def map_uids(self, ds: Dataset, tag: BaseTag) -> None:
        element = ds[tag]
        if isinstance(element.value, MultiValue):
            element.value = [self.map_uid(v) for v in element.value]
        elif element.value:
            element.value = self.map_uid(element.value)

    def shift(self, ds: Dataset, tag: BaseTag, vr: str) -> None:
        element = ds[tag]
        if element.value in (None, ""):
            return
        shift = values.shift_date if vr == "DA" else values.shift_datetime
        originals = element.value if isinstance(element.value, MultiValue) else [element.value]
        shifted = [shift(str(v), self.context.date_offset_days) for v in originals]
        if any(s is None for s in shifted):
            element.value = None  # unreadable date: emptied rather than leaked
        else:
            element.value = shifted if len(shifted) > 1 else shifted[0]

    def clean(self, ds: Dataset, tag: BaseTag) -> None:
        element = ds[tag]
        if element.value in (None, ""):
            return
        if not self.clean_descriptors:
            ds[tag] = DataElement(tag, element.VR, values.DUMMY_TEXT)
            return
        originals = element.value if isinstance(element.value, MultiValue) else [element.value]
        cleaned = [values.clean_text(str(v), self.identifiers) for v in originals]
        element.value = cleaned if len(cleaned) > 1 else cleaned[0]

    def keep_private(self, ds: Dataset, tag: BaseTag) -> bool:
        keep = self.context.keep_private
        if not keep:
            return False
        group, element = tag >> 16, tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:  # a private creator: kept if any of its elements may be kept
            creator = str(ds[tag].value).strip()
            return any(k.creator == creator and k.group == group for k in keep)
        if element < 0x1000:
            return False
        creator_tag = Tag(group, element >> 8)
        if creator_tag not in ds:
            return False
        creator = str(ds[creator_tag].value).strip()
        return PrivateKeep(creator, group, element & 0xFF) in keep


def _vr_of(raw: RawDataElement | DataElement, tag: int) -> str | None:
    """The element's VR, or None when the data dictionary does not know the tag."""
    if not _in_dictionary(tag):
        return None
    vr = raw.VR
    if vr in (None, "UN") or (vr and " or " in vr):
        vr = dictionary_VR(tag)
        if " or " in vr:  # ambiguous (US or SS ...): pydicom resolves it on conversion
            return "OW" if "OW" in vr else vr.split(" or ")[0]
    return str(vr)


@cache
def _in_dictionary(tag: int) -> bool:
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


def identifiers_of(ds: Dataset) -> values.Identifiers:
    """The names and identifiers of this instance (top level), for Clean Descriptors."""
    names: list[str] = []
    for tag in ds.keys():
        if not tag.group & 1 and _dictionary_vr(tag) == "PN":
            names.extend(_strings(ds[tag].value))
    others: list[str] = []
    for keyword in _IDENTIFIER_KEYWORDS:
        others.extend(_strings(ds.get(keyword)))
    birth = str(ds.get("PatientBirthDate") or "")
    if len(birth) == 8:
        others += [f"{birth[6:]}.{birth[4:6]}.{birth[:4]}", f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"]
    return values.collect_identifiers(names, others)


def _strings(value: object) -> list[str]:
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, MultiValue) else [str(value)]


@cache
def _dictionary_vr(tag: int) -> str | None:
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def deidentify(ds: Dataset, context: DeidContext) -> DeidResult:
    """De-identify `ds` in place and return it with the UID pairs it mapped."""
    label = str(ds.get("ClinicalTrialTimePointID") or "").strip() or None
    identifiers = identifiers_of(ds)
    walker = Deidentifier(context, identifiers)
    walker.walk(ds)
    if label:
        label = values.clean_text(label, identifiers) or None
    _write_identity(ds, context, label)
    if hasattr(ds, "file_meta"):
        _rebuild_file_meta(ds)
    return DeidResult(dataset=ds, uid_map=walker.uid_map, timepoint_label=label)


def _write_identity(ds: Dataset, context: DeidContext, label: str | None) -> None:
    """Subject pseudonym, Clinical Trial attributes and the record of what was done (PS3.15 E.1.1)."""
    options = context.policy.options
    ds.PatientName = context.subject_code
    ds.PatientID = context.subject_code
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"pacs-bridge PS3.15 E.1-1 {TABLE_EDITION}"
    applied = [codes.DCM.BasicApplicationConfidentialityProfile] + [
        code for option, code in _OPTION_CODES.items() if option in options
    ]
    sequence = Sequence()
    for code in applied:
        item = Dataset()
        item.CodeValue = code.value
        item.CodingSchemeDesignator = code.scheme_designator
        item.CodeMeaning = code.meaning
        sequence.append(item)
    ds.DeidentificationMethodCodeSequence = sequence
    ds.LongitudinalTemporalInformationModified = (
        "MODIFIED"
        if Option.RETAIN_MODIFIED_DATES in options
        else "UNMODIFIED"
        if Option.RETAIN_FULL_DATES in options
        else "REMOVED"
    )
    trial = context.trial
    ds.ClinicalTrialSponsorName = trial.sponsor_name
    ds.ClinicalTrialProtocolID = trial.protocol_id
    ds.ClinicalTrialProtocolName = trial.protocol_name or None
    ds.ClinicalTrialSiteID = trial.site_id or None
    ds.ClinicalTrialSiteName = trial.site_name or None
    ds.ClinicalTrialSubjectID = context.subject_code
    ds.ClinicalTrialTimePointID = label
    ds.ClinicalTrialCoordinatingCenterName = trial.coordinating_center or None


def _rebuild_file_meta(ds: Dataset) -> None:
    meta = ds.file_meta
    transfer_syntax = meta.get("TransferSyntaxUID")
    for tag in list(meta.keys()):
        if tag not in (0x00020001, 0x00020010):
            del meta[tag]
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if transfer_syntax:
        meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
