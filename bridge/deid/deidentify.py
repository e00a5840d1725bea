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
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache

from pydicom import Dataset, Sequence
from pydicom.datadict import dictionary_VR, get_entry
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.tag import BaseTag, Tag
from pydicom.uid import UID

from bridge.caches import BoundedCache
from bridge.deid import values
from bridge.deid.table import TABLE_EDITION, Action, Option, Policy
from bridge.dicomio import encoded_value, plain_text, put_raw, tag_of, text_element, text_of, value_of
from bridge.plainread import dictionary_vr

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
_TIME_POINT_ID, _SOP_CLASS_UID, _SOP_INSTANCE_UID = (
    tag_of(k) for k in ("ClinicalTrialTimePointID", "SOPClassUID", "SOPInstanceUID")
)
_TRANSFER_SYNTAX = BaseTag(0x00020010)
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


Element = DataElement | RawDataElement  # an element as a dataset stores it: converted, or as read
_PLAN_LIMIT = 100_000  # decisions a plan remembers: far more than the data dictionary's tags


class Plan:
    """The walk's decision for a public element under one policy. It depends only on the tag, the VR as
    read and whether the enclosing sequence cleans all text, so it is made once per process and reused
    for every instance (most elements of an instance are kept as read)."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.shift_dates = Option.RETAIN_MODIFIED_DATES in policy.options
        self.clean_descriptors = Option.CLEAN_DESCRIPTORS in policy.options
        # what `step` decided, by (tag, VR as read, clean all text): the walk looks here first
        self.decided: dict[tuple[int, str | None, bool], tuple[str | None, Step]] = {}

    def step(self, tag: int, read_vr: str | None, clean_all_text: bool) -> tuple[str | None, Step]:
        """The VR to write (None when the element goes) and the step."""
        key = (tag, read_vr, clean_all_text)
        found = self.decided.get(key)
        if found is None:
            found = self.decide(tag, read_vr, clean_all_text)
            if len(self.decided) < _PLAN_LIMIT:  # bounded: unknown tags and VRs come from the input
                self.decided[key] = found
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
        step_of, decided = self.plan.step, self.plan.decided
        # items() as stored, raw or not (the VR is enough: never read a deferred value here); the dataset's
        # own BaseTag keys: looking them up again is an identity match, never BaseTag.__eq__
        for tag, element in list(ds.items()):
            number = int(tag)  # plain int comparisons: pydicom's BaseTag compares in Python, slowly
            if number & 0x10000:  # odd group: private
                if not self.keep_private(ds, tag):
                    del ds[tag]
                continue
            read_vr = element.VR
            found = decided.get((number, read_vr, clean_all_text))
            vr, step = found if found is not None else step_of(number, read_vr, clean_all_text)
            if step is Step.KEEP:
                continue
            if step is Step.DELETE and number == required_value:
                vr, step = self.plan.decide(number, read_vr, clean_all_text, required=True)
            self.apply(ds, tag, element, vr, step)

    def apply(self, ds: Dataset, tag: BaseTag, element: Element, vr: str | None, step: Step) -> None:
        """Do `step` to the element (`element` is as stored: raw or converted)."""
        if step is Step.DELETE or vr is None:
            del ds[tag]
        elif step is Step.RECURSE or step is Step.RECURSE_CLEAN:
            for item in ds[tag].value:
                self.walk(item, step is Step.RECURSE_CLEAN)
        elif step is Step.EMPTY_SEQUENCE:
            ds[tag] = DataElement(tag, "SQ", Sequence())
        elif step is Step.EMPTY:
            if not self.replace_raw(ds, element, vr, b""):
                ds[tag] = DataElement(tag, vr, None)
        elif step is Step.UIDS:
            self.map_uids(ds, tag, element, vr)
        elif step is Step.SHIFT:
            self.shift(ds, tag, element, vr)
        elif step is Step.DUMMY:
            if not self.replace_raw(ds, element, vr, None):
                ds[tag] = DataElement(tag, vr, values.DUMMIES.get(vr, values.DUMMY_TEXT))
        elif step is Step.CLEAN:
            self.clean(ds, tag, element, vr)

    def replace_raw(self, ds: Dataset, element: Element, vr: str, data: bytes | None) -> bool:
        """Put `data` (the dummy for `vr` when None) in place of a raw element, as a raw element of the same
        encoding: written as it is, never converted. False when the element is not raw (pydicom's way)."""
        if not isinstance(element, RawDataElement):
            return False
        little = element.is_little_endian
        if data is None and (data := _dummy_value(vr, little)) is None:
            return False
        put_raw(ds, RawDataElement(element.tag, vr, len(data), data, 0, element.is_implicit_VR, little))
        return True

    def replace_text(self, ds: Dataset, element: Element, vr: str, change: Callable[[str], str | None]) -> bool:
        """Replace a raw element holding one plain ASCII text value by `change(text)` (empty when None),
        without pydicom's conversions; False when the element or the result is anything else."""
        if not isinstance(element, RawDataElement) or element.VR not in (None, vr):
            return False
        text = plain_text(element, vr)
        if text is None:
            return False
        changed = change(text) if text else ""
        implicit, little = element.is_implicit_VR, element.is_little_endian
        new = text_element(element.tag, vr, changed or "", implicit=implicit, little=little)
        if new is None:
            return False
        put_raw(ds, new)
        return True

    def map_uids(self, ds: Dataset, tag: BaseTag, element: Element, vr: str) -> None:
        if self.replace_text(ds, element, vr, self.map_uid):
            return
        element = ds[tag]
        if isinstance(element.value, MultiValue):
            element.value = [self.map_uid(v) for v in element.value]
        elif element.value:
            element.value = self.map_uid(element.value)

    def shift(self, ds: Dataset, tag: BaseTag, element: Element, vr: str) -> None:
        shift = values.shift_date if vr == "DA" else values.shift_datetime
        if self.replace_text(ds, element, vr, lambda text: shift(text, self.context.date_offset_days)):
            return
        element = ds[tag]
        if element.value in (None, ""):
            return
        originals = element.value if isinstance(element.value, MultiValue) else [element.value]
        shifted = [shift(str(v), self.context.date_offset_days) for v in originals]
        if any(s is None for s in shifted):
            element.value = None  # unreadable date: emptied rather than leaked
        else:
            element.value = shifted if len(shifted) > 1 else shifted[0]

    def clean(self, ds: Dataset, tag: BaseTag, element: Element, vr: str) -> None:
        if self.replace_text(ds, element, vr, self.clean_one):
            return
        element = ds[tag]
        if element.value in (None, ""):
            return
        if not self.clean_descriptors:
            ds[tag] = DataElement(tag, element.VR, values.DUMMY_TEXT)
            return
        originals = element.value if isinstance(element.value, MultiValue) else [element.value]
        cleaned = [values.clean_text(str(v), self.identifiers) for v in originals]
        element.value = cleaned if len(cleaned) > 1 else cleaned[0]

    def clean_one(self, text: str) -> str:
        return values.clean_text(text, self.identifiers) if self.clean_descriptors else values.DUMMY_TEXT

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
def _dummy_value(vr: str, little: bool) -> bytes | None:
    """The encoded dummy value of a VR, in either byte order."""
    return encoded_value(vr, values.DUMMIES.get(vr, values.DUMMY_TEXT), little=little)


@cache
def _in_dictionary(tag: int) -> bool:
    try:
        get_entry(tag)
    except KeyError:
        return False
    return True


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


def deidentify(ds: Dataset, context: DeidContext) -> DeidResult:
    """De-identify `ds` in place and return it with the UID pairs it mapped."""
    label = text_of(ds, _TIME_POINT_ID).strip() or None
    identifiers = identifiers_of(ds)
    walker = Deidentifier(context, identifiers)
    walker.walk(ds)
    if label:
        label = values.clean_text(label, identifiers) or None
    encoding = _encoding_of(ds)
    _write_identity(ds, context, label, encoding)
    if encoding is not None:
        _rebuild_file_meta(ds)
    return DeidResult(dataset=ds, uid_map=walker.uid_map, timepoint_label=label)


def _encoding_of(ds: Dataset) -> tuple[bool, bool] | None:
    """(implicit VR, little endian) of the file's transfer syntax; None without file meta information."""
    file_meta = getattr(ds, "file_meta", None)
    if file_meta is None:
        return None
    syntax = UID(text_of(file_meta, _TRANSFER_SYNTAX))
    if not syntax.is_transfer_syntax:
        return None
    return syntax.is_implicit_VR, syntax.is_little_endian


def _put(ds: Dataset, keyword: str, value: object, encoding: tuple[bool, bool] | None) -> None:
    """`setattr(ds, keyword, value)` without pydicom's keyword and dictionary look-ups (cached here). As
    pydicom does, an element already present keeps its VR and only takes the new value. Plain text is put
    as a raw element of the file's `encoding`: written as it is."""
    tag, vr = _keyword_entry(keyword)
    if encoding is not None and (value is None or isinstance(value, str)):
        present = ds.get_item(tag, keep_deferred=True)
        if present is None or isinstance(present, RawDataElement) and present.VR in (None, vr):
            implicit, little = encoding
            if (raw := text_element(tag, vr, value or "", implicit=implicit, little=little)) is not None:
                put_raw(ds, raw)
                return
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


def _write_identity(ds: Dataset, context: DeidContext, label: str | None, encoding: tuple[bool, bool] | None) -> None:
    """Subject pseudonym, Clinical Trial attributes and the record of what was done (PS3.15 E.1.1)."""
    options = context.policy.options
    _put(ds, "PatientName", context.subject_code, encoding)
    _put(ds, "PatientID", context.subject_code, encoding)
    _put(ds, "PatientIdentityRemoved", "YES", encoding)
    _put(ds, "DeidentificationMethod", f"pacs-bridge PS3.15 E.1-1 {TABLE_EDITION}", encoding)
    _put_method_codes(ds, options, encoding)
    _put(
        ds,
        "LongitudinalTemporalInformationModified",
        "MODIFIED"
        if Option.RETAIN_MODIFIED_DATES in options
        else "UNMODIFIED"
        if Option.RETAIN_FULL_DATES in options
        else "REMOVED",
        encoding,
    )
    trial = context.trial
    _put(ds, "ClinicalTrialSponsorName", trial.sponsor_name, encoding)
    _put(ds, "ClinicalTrialProtocolID", trial.protocol_id, encoding)
    _put(ds, "ClinicalTrialProtocolName", trial.protocol_name or None, encoding)
    _put(ds, "ClinicalTrialSiteID", trial.site_id or None, encoding)
    _put(ds, "ClinicalTrialSiteName", trial.site_name or None, encoding)
    _put(ds, "ClinicalTrialSubjectID", context.subject_code, encoding)
    _put(ds, "ClinicalTrialTimePointID", label, encoding)
    _put(ds, "ClinicalTrialCoordinatingCenterName", trial.coordinating_center or None, encoding)


_METHOD_CODES = tag_of("DeidentificationMethodCodeSequence")


def _put_method_codes(ds: Dataset, options: frozenset[Option], encoding: tuple[bool, bool] | None) -> None:
    """The Deidentification Method Code Sequence: encoded once per options and encoding when the instance
    has none yet (the common case), else set as pydicom sets it."""
    if encoding is not None and _METHOD_CODES not in ds:
        data = _method_codes_value(options, *encoding)
        if data is not None:
            ds[_METHOD_CODES] = RawDataElement(_METHOD_CODES, "SQ", len(data), data, 0, *encoding)
            return
    _put(
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


def _rebuild_file_meta(ds: Dataset) -> None:
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
