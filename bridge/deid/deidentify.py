"""De-identify one instance: Dataset in, Dataset and UID mapping out. Pure: no I/O, no database.

The walk visits every element at every depth and applies what `policy` decides for it; private elements are
removed unless the project keeps them; `identity` then writes what was done. Untouched elements stay as raw
bytes, so the output is written without re-encoding them; changed plain text is written back as raw
elements of the file's own encoding (`bridge.dicom`), anything else through pydicom.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from pydicom import Dataset, Sequence
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag

from bridge.deid import values
from bridge.deid.identifiers import identifiers_of
from bridge.deid.identity import TrialAttributes, encoding_of, rebuild_file_meta, write_identity
from bridge.deid.policy import CONTENT_VALUE_TAGS, Step, plan_for
from bridge.deid.table import Policy
from bridge.dicom.elements import plain_text, put_raw, tag_of, text_of
from bridge.dicom.encoding import encoded_value, text_element

_TIME_POINT_ID = tag_of("ClinicalTrialTimePointID")
Element = DataElement | RawDataElement  # an element as a dataset stores it: converted, or as read


@dataclass(frozen=True)
class PrivateKeep:
    """A private element the project keeps: its creator, group and element offset (0x10-0xFF)."""

    creator: str
    group: int
    offset: int


@dataclass(frozen=True)
class DeidContext:
    """Everything a de-identification needs for one instance; built per subject by the ingest service."""

    policy: Policy
    key: bytes
    subject_code: str
    date_offset_days: int
    trial: TrialAttributes
    keep_private: frozenset[PrivateKeep] = frozenset()
    # research-side UIDs an object coming back from the research side carries (a SEG's references): kept
    known_uids: frozenset[str] = frozenset()


@dataclass
class DeidResult:
    dataset: Dataset
    uid_map: dict[str, str] = field(default_factory=dict)  # original -> pseudo
    timepoint_label: str | None = None


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
        if not uid or values.is_well_known_uid(uid) or uid in self.context.known_uids:
            return uid
        pseudo = self.uid_map.get(uid)
        if pseudo is None:
            pseudo = self.uid_map[uid] = values.pseudo_uid(self.context.key, uid)
        return pseudo

    def walk(self, ds: Dataset, clean_all_text: bool = False) -> None:
        """Visit every element of `ds`, at every depth. Most are kept as read: that path is kept short."""
        value_type = ds.get("ValueType") if 0x0040A040 in ds else None
        required_value = CONTENT_VALUE_TAGS.get(str(value_type)) if value_type else None
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


@cache
def _dummy_value(vr: str, little: bool) -> bytes | None:
    """The encoded dummy value of a VR, in either byte order."""
    return encoded_value(vr, values.DUMMIES.get(vr, values.DUMMY_TEXT), little=little)


def deidentify(ds: Dataset, context: DeidContext) -> DeidResult:
    """De-identify `ds` in place and return it with the UID pairs it mapped."""
    label = text_of(ds, _TIME_POINT_ID).strip() or None
    identifiers = identifiers_of(ds)
    walker = Deidentifier(context, identifiers)
    walker.walk(ds)
    if label:
        label = values.clean_text(label, identifiers) or None
    encoding = encoding_of(ds)
    write_identity(
        ds,
        subject_code=context.subject_code,
        trial=context.trial,
        options=context.policy.options,
        label=label,
        encoding=encoding,
    )
    if encoding is not None:
        rebuild_file_meta(ds)
    return DeidResult(dataset=ds, uid_map=walker.uid_map, timepoint_label=label)
