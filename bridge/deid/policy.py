"""The PS3.15 policy applied to one element: what happens to it, decided from its tag, its VR and where it is.

An element listed in Table E.1-1 gets the table's action under the project's options (`table.Policy`); an
unlisted one is kept if the data dictionary knows it and removed if not (default deny); group lengths,
overlays and curves go; SR TEXT values are cleaned (or replaced). With Retain Longitudinal Temporal
Information with Modified Dates every retained DA and DT is shifted. This module decides; `deidentify` walks
the dataset and applies the decisions; nothing here touches bytes.
"""

from __future__ import annotations

import enum
import weakref
from functools import cache

from pydicom.datadict import dictionary_VR, get_entry

from bridge.deid.table import Action, Option, Policy

TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT", "PN"})
_OVERLAY_OR_CURVE = frozenset(range(0x5000, 0x5020, 2)) | frozenset(range(0x6000, 0x6020, 2))
_TEXT_VALUE = 0x0040A160  # SR TEXT content: free text the table does not list
CONTENT_VALUE_TAGS = {  # SR content item value attributes that are Type 1 for their Value Type
    "TEXT": 0x0040A160,
    "PNAME": 0x0040A123,
    "DATETIME": 0x0040A120,
    "DATE": 0x0040A121,
    "TIME": 0x0040A122,
    "UIDREF": 0x0040A124,
}


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
