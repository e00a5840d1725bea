"""PS3.15 Table E.1-1 as a lookup: tag -> the action to apply under a project's options.

Compound actions depend on the attribute's Type in the IOD, which a generic de-identifier cannot know for
every IOD. The rule chosen keeps every output valid without knowing the Type:
- a plain attribute whose action offers D (X/D, Z/D, X/Z/D) gets D: a dummy value is valid for Type 1, 2
  and 3 alike; X/Z gets Z (the table only offers it where the attribute is never Type 1);
- a sequence offering Z gets Z (an empty sequence); X/D on a sequence gets X (those are Type 3); D and
  X/Z/U* keep the sequence and de-identify each item (the items' attributes are in the table themselves).
When several enabled options give an action, K (keep) beats C (clean), which beats the basic profile.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

TABLE_EDITION = "2024b"


class Action(enum.Enum):
    KEEP = "K"
    REMOVE = "X"
    EMPTY = "Z"
    DUMMY = "D"
    CLEAN = "C"
    UID = "U"
    RECURSE = "R"  # keep the sequence, de-identify its items


class Option(enum.Enum):
    """Profile options, by their column name in the table data."""

    RETAIN_FULL_DATES = "rtnLongFullDatesOpt"
    RETAIN_MODIFIED_DATES = "rtnLongModifDatesOpt"
    CLEAN_DESCRIPTORS = "cleanDescOpt"
    RETAIN_UIDS = "rtnUIDsOpt"
    RETAIN_DEVICE_IDENTITY = "rtnDevIdOpt"
    RETAIN_PATIENT_CHARACTERISTICS = "rtnPatCharsOpt"
    RETAIN_INSTITUTION_IDENTITY = "rtnInstIdOpt"


@dataclass(frozen=True)
class Row:
    tag: int
    mask: int  # bits that must match; repeating groups like (50xx,xxxx) have fewer
    basic: str
    options: dict[str, str]


@cache
def rows() -> tuple[Row, ...]:
    raw = json.loads(resources.files("bridge.deid").joinpath("data/ps3.15-table-e1-1.json").read_text())
    parsed = []
    for entry in raw:
        hex_id = entry["id"].upper()
        if hex_id.startswith("GGGG"):
            continue  # private attributes: handled by the project's keep-list, not by a row
        mask = int("".join("0" if c == "X" else "F" for c in hex_id), 16)
        tag = int(hex_id.replace("X", "0"), 16)
        options = {o.value: entry[o.value] for o in Option if o.value in entry}
        parsed.append(Row(tag=tag, mask=mask, basic=entry["basicProfile"], options=options))
    return tuple(parsed)


class Policy:
    """The table resolved for one set of options; `action(tag, is_sequence)` is the only query."""

    def __init__(self, options: frozenset[Option]) -> None:
        self.options = options
        self._exact: dict[int, Row] = {}
        self._masked: list[Row] = []
        for row in rows():
            if row.mask == 0xFFFFFFFF:
                self._exact[row.tag] = row
            else:
                self._masked.append(row)
        self._cache: dict[tuple[int, bool], Action | None] = {}

    def row(self, tag: int) -> Row | None:
        found = self._exact.get(tag)
        if found is None:
            found = next((r for r in self._masked if tag & r.mask == r.tag), None)
        return found

    def action(self, tag: int, is_sequence: bool) -> Action | None:
        """The action for `tag`, or None when the table does not list it."""
        key = (int(tag), is_sequence)  # a plain int: pydicom's BaseTag compares in Python, slowly
        try:
            return self._cache[key]
        except KeyError:
            row = self.row(key[0])
            action = self._cache[key] = None if row is None else self._resolve(row, is_sequence)
            return action

    def _resolve(self, row: Row, is_sequence: bool) -> Action:
        chosen = {row.options[o.value] for o in self.options if o.value in row.options}
        code = "K" if "K" in chosen else "C" if "C" in chosen else row.basic
        if is_sequence:
            return _SEQUENCE_RULES[code]
        return _ELEMENT_RULES[code]


_ELEMENT_RULES = {
    "K": Action.KEEP,
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.DUMMY,
    "C": Action.CLEAN,
    "U": Action.UID,
    "X/Z": Action.EMPTY,
    "X/D": Action.DUMMY,
    "Z/D": Action.DUMMY,
    "X/Z/D": Action.DUMMY,
    "X/Z/U*": Action.UID,
}

_SEQUENCE_RULES = {
    "K": Action.RECURSE,
    "X": Action.REMOVE,
    "Z": Action.EMPTY,
    "D": Action.RECURSE,
    "C": Action.CLEAN,
    "U": Action.RECURSE,
    "X/Z": Action.EMPTY,
    "X/D": Action.REMOVE,
    "Z/D": Action.EMPTY,
    "X/Z/D": Action.EMPTY,
    "X/Z/U*": Action.RECURSE,
}
