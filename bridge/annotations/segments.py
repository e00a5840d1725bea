"""What a segment is besides its mask: its label, coded properties and display colour.

A project's `[[projects.NAME.labels]]` table codes each label; a label not in the table gets the default
coding (SNOMED CT Morphologically Abnormal Structure / Neoplasm) and a colour of a fixed palette, so that the
same label always looks the same. Segments travel as JSON in the version rows (`to_json`, `from_json`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pydicom.sr.coding import Code

from bridge.settings import LabelCodeSettings

DEFAULT_CATEGORY = "49755003^SCT^Morphologically Abnormal Structure"
DEFAULT_TYPE = "108369006^SCT^Neoplasm"
_PALETTE = (  # distinct on a grey image
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 190),
)


@dataclass(frozen=True)
class Segment:
    """One segment of an annotation version: number (1-based, the mask stack's index + 1) and coding."""

    number: int
    label: str
    category: str  # value^scheme^meaning
    type: str
    region: str | None
    colour: tuple[int, int, int]
    voxels: int = 0


def code_of(triplet: str) -> Code:
    value, scheme, meaning = triplet.split("^", 2)
    return Code(value=value, scheme_designator=scheme, meaning=meaning)


def triplet_of(code: Code) -> str:
    return f"{code.value}^{code.scheme_designator}^{code.meaning}"


def coded(number: int, label: str, table: Sequence[LabelCodeSettings], voxels: int = 0) -> Segment:
    """The segment `label` as the project codes it."""
    for entry in table:
        if entry.label.lower() == label.lower():
            colour = entry.colour or _PALETTE[(number - 1) % len(_PALETTE)]
            return Segment(number, entry.label, entry.category, entry.type, entry.region, colour, voxels)
    return Segment(number, label, DEFAULT_CATEGORY, DEFAULT_TYPE, None, _PALETTE[(number - 1) % len(_PALETTE)], voxels)


def to_json(segments: Sequence[Segment]) -> str:
    return json.dumps([asdict(segment) for segment in segments])


def from_json(text: str) -> list[Segment]:
    return [Segment(**{**item, "colour": tuple(item["colour"])}) for item in json.loads(text)]
