"""De-identify one instance: Dataset in, Dataset and UID mapping out. Pure: no I/O, no database.

The walk visits every element at every depth. An element listed in Table E.1-1 gets the table's action
under the project's options (see `table.Policy`); an unlisted one is kept if the data dictionary knows it,
removed if not; private elements are removed unless the project keeps them; overlays and curves go. With
Retain Longitudinal Temporal Information with Modified Dates every retained DA and DT is shifted by the
subject's offset. Untouched elements stay as raw bytes, so the output is written without re-encoding them.
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import cast

from pydicom import Dataset, Sequence
from pydicom.datadict import dictionary_VR, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from bridge.deid import values
from bridge.deid.table import TABLE_EDITION, Action, Option, Policy
from bridge.dicomio import tag_of, value_of

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


# Tags as BaseTag constants: looked up in a dataset without converting a keyword or an int each time.
_IDENTIFIER_TAGS = tuple(tag_of(keyword) for keyword in _IDENTIFIER_KEYWORDS)
_PATIENT_BIRTH_DATE = tag_of("PatientBirthDate")
_CODE_ITEM_TAGS = (tag_of("CodeValue"), tag_of("CodingSchemeDesignator"), tag_of("CodeMeaning"))


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


class Step(enum.Enum):
    """What the walk does to one public element: an Action resolved for the element's VR and context."""

    KEEP = "keep"
    DELETE = "delete"
    EMPTY = "empty"
    EMPTY_SEQUENCE = "empty sequence"
    RECURSE = "recurse"
    RECURSE_CLEAN = "recurse, cleaning all text"
    UIDS = "map UIDs"
    SHIFT = "shift dates"
    DUMMY = "dummy"
    CLEAN = "clean"


_PLAN_LIMIT = 100_000  # decisions a plan remembers: far more than the data dictionary's tags


class Plan:
    """The walk's decision for a public element under one policy. It depends only on the tag, the VR as
    read and whether the enclosing sequence cleans all text, so it is made once per process and reused
    for every instance (most elements of an instance are kept as read)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.shift_dates = Option.RETAIN_MODIFIED_DATES in policy.options
        self.clean_descriptors = Option.CLEAN_DESCRIPTORS in policy.options
        self._memo: dict[tuple[int, str | None, bool], tuple[str | None, Step]] = {}

    def step(self, tag: int, read_vr: str | None, clean_all_text: bool) -> tuple[str | None, Step]:
        """The VR to write (None when the element goes) and the step."""
        key = (tag, read_vr, clean_all_text)
        found = self._memo.get(key)
        if found is None:
            found = self.decide(tag, read_vr, clean_all_text)
            if len(self._memo) < _PLAN_LIMIT:  # bounded: unknown tags and VRs come from the input
                self._memo[key] = found
        return found

    def decide(
        self, tag: int, read_vr: str | None, clean_all_text: bool, required: bool = False
    ) -> tuple[str | None, Step]:
        """`required`: the element is the value a SR content item must have (removal becomes a dummy)."""
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0 or group in _OVERLAY_OR_CURVE:
            return None, Step.DELETE  # group lengths (recomputed by nobody) and overlays/curves
        vr = _vr_of(read_vr, tag)
        if vr is None:
            return None, Step.DELETE  # unknown to the data dictionary: default deny
        action = self.policy.action(tag, vr == "SQ")
        if tag == _TEXT_VALUE:
            action = Action.CLEAN if self.clean_descriptors else Action.DUMMY
        if action is Action.REMOVE and required:
            action = Action.DUMMY  # keeps the SR content item valid
        if action is None:
            action = Action.RECURSE if vr == "SQ" else Action.CLEAN if clean_all_text else Action.KEEP
        return vr, self._step(vr, action, clean_all_text)

    def _step(self, vr: str, action: Action, clean_all_text: bool) -> Step:
        if action is Action.REMOVE:
            return Step.DELETE
        if vr == "SQ":
            if action is Action.EMPTY:
                return Step.EMPTY_SEQUENCE
            return Step.RECURSE_CLEAN if clean_all_text or action is Action.CLEAN else Step.RECURSE
        if action is Action.EMPTY:
            return Step.EMPTY
        if action is Action.UID or vr == "UI" and action is not Action.KEEP:
            return Step.UIDS
        if vr in ("DA", "DT") and action is not Action.DUMMY:
            return Step.SHIFT if self.shift_dates else Step.KEEP
        if action is Action.DUMMY:
            return Step.DUMMY
        if action is Action.CLEAN and vr in TEXT_VRS:
            return Step.CLEAN
        return Step.KEEP


_plans: weakref.WeakKeyDictionary[Policy, Plan] = weakref.WeakKeyDictionary()


def plan_for(policy: Policy) -> Plan:
    """The policy's plan, shared by every instance de-identified under it."""
    plan = _plans.get(policy)
    if plan is None:
        plan = _plans[policy] = Plan(policy)
    return plan


class Deidentifier:
    """One instance's walk; holds what the walk accumulates (UID pairs, identifier tokens)."""

    def __init__(self, context: DeidContext, identifiers: values.Identifiers) -> None:
        self.context = context
        self.plan = plan_for(context.policy)
        self.identifiers = identifiers
        self.uid_map: dict[str, str] = {}
        self.clean_descriptors = self.plan.clean_descriptors

    def map_uid(self, uid: str) -> str:
        uid = uid.strip("\x00 ")
        if not uid or values.is_well_known_uid(uid):
            return uid
        pseudo = self.uid_map.get(uid)
        if pseudo is None:
            pseudo = self.uid_map[uid] = values.pseudo_uid(self.context.key, uid)
        return pseudo

    def walk(self, ds: Dataset, clean_all_text: bool = False) -> None:
        """Visit every element of `ds`, at every depth. Most are kept as read: that path is kept short."""
        value_type = ds.get("ValueType") if 0x0040A040 in ds else None
        required_value = _CONTENT_VALUE_TAGS.get(str(value_type)) if value_type else None
        step_of = self.plan.step
        # the dataset's own BaseTag keys: looking them up again is an identity match, never BaseTag.__eq__
        for tag in list(ds.keys()):
            number = int(tag)  # plain int comparisons: pydicom's BaseTag compares in Python, slowly
            if number & 0x10000:  # odd group: private
                if not self.keep_private(ds, tag):
                    del ds[tag]
                continue
            # the VR is enough: never read a deferred value here
            read_vr = cast("DataElement | RawDataElement", ds.get_item(tag, keep_deferred=True)).VR
            vr, step = step_of(number, read_vr, clean_all_text)
            if step is Step.KEEP:
                continue
            if step is Step.DELETE and number == required_value:
                vr, step = self.plan.decide(number, read_vr, clean_all_text, required=True)
            self.apply(ds, tag, vr, step)

    def apply(self, ds: Dataset, tag: BaseTag, vr: str | None, step: Step) -> None:
        if step is Step.DELETE or vr is None:
            del ds[tag]
        elif step is Step.RECURSE or step is Step.RECURSE_CLEAN:
            for item in ds[tag].value:
                self.walk(item, step is Step.RECURSE_CLEAN)
        elif step is Step.EMPTY_SEQUENCE:
            ds[tag] = DataElement(tag, "SQ", Sequence())
        elif step is Step.EMPTY:
            ds[tag] = DataElement(tag, vr, None)
        elif step is Step.UIDS:
            self.map_uids(ds, tag)
        elif step is Step.SHIFT:
            self.shift(ds, tag, vr)
        elif step is Step.DUMMY:
            ds[tag] = DataElement(tag, vr, values.DUMMIES.get(vr, values.DUMMY_TEXT))
        elif step is Step.CLEAN:
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


def _vr_of(read_vr: str | None, tag: int) -> str | None:
    """The element's VR, or None when the data dictionary does not know the tag."""
    if not _in_dictionary(tag):
        return None
    vr = read_vr
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
    for tag in list(ds.keys()):
        if not tag & 0x10000 and _dictionary_vr(int(tag)) == "PN":
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


def _put(ds: Dataset, keyword: str, value: object) -> None:
    """`setattr(ds, keyword, value)` without pydicom's keyword and dictionary look-ups (cached here). As
    pydicom does, an element already present keeps its VR and only takes the new value."""
    tag, vr = _keyword_entry(keyword)
    if tag in ds:
        element = ds[tag]
        element.value = value
    else:
        element = DataElement(tag, vr, value)
    ds[tag] = element


@cache
def _keyword_entry(keyword: str) -> tuple[BaseTag, str]:
    tag = tag_of(keyword)
    return tag, str(dictionary_VR(tag))


def _write_identity(ds: Dataset, context: DeidContext, label: str | None) -> None:
    """Subject pseudonym, Clinical Trial attributes and the record of what was done (PS3.15 E.1.1)."""
    options = context.policy.options
    _put(ds, "PatientName", context.subject_code)
    _put(ds, "PatientID", context.subject_code)
    _put(ds, "PatientIdentityRemoved", "YES")
    _put(ds, "DeidentificationMethod", f"pacs-bridge PS3.15 E.1-1 {TABLE_EDITION}")
    _put(ds, "DeidentificationMethodCodeSequence", Sequence([_code_item(code) for code in _applied_codes(options)]))
    _put(
        ds,
        "LongitudinalTemporalInformationModified",
        "MODIFIED"
        if Option.RETAIN_MODIFIED_DATES in options
        else "UNMODIFIED"
        if Option.RETAIN_FULL_DATES in options
        else "REMOVED",
    )
    trial = context.trial
    _put(ds, "ClinicalTrialSponsorName", trial.sponsor_name)
    _put(ds, "ClinicalTrialProtocolID", trial.protocol_id)
    _put(ds, "ClinicalTrialProtocolName", trial.protocol_name or None)
    _put(ds, "ClinicalTrialSiteID", trial.site_id or None)
    _put(ds, "ClinicalTrialSiteName", trial.site_name or None)
    _put(ds, "ClinicalTrialSubjectID", context.subject_code)
    _put(ds, "ClinicalTrialTimePointID", label)
    _put(ds, "ClinicalTrialCoordinatingCenterName", trial.coordinating_center or None)


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


def _rebuild_file_meta(ds: Dataset) -> None:
    meta = ds.file_meta
    transfer_syntax = meta.get("TransferSyntaxUID")
    for tag in list(meta.keys()):
        if int(tag) not in (0x00020001, 0x00020010):
            del meta[tag]
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if transfer_syntax:
        meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
