"""Keyed values: UIDs, offsets and pseudonyms agree across calls and differ across keys."""

from __future__ import annotations

import re

import pytest

from bridge.deid import values


def test_pseudo_uid_is_valid_keyed_and_stable() -> None:
    uid = "1.2.826.0.1.3680043.8.498.1234567890"
    first, again = values.pseudo_uid(b"a" * 32, uid), values.pseudo_uid(b"a" * 32, uid)
    other = values.pseudo_uid(b"b" * 32, uid)
    assert first == again != other
    for result in (first, other):
        assert len(result) <= 64 and re.fullmatch(r"2\.25\.[1-9][0-9]*", result)


def test_date_offset_is_per_subject_and_in_range() -> None:
    offsets = {values.date_offset_days(b"k" * 32, f"patient{n}", 365) for n in range(200)}
    assert all(-365 <= o <= -1 for o in offsets) and len(offsets) > 100
    assert values.date_offset_days(b"k" * 32, "p", 365) == values.date_offset_days(b"k" * 32, "p", 365)


@pytest.mark.parametrize(
    ("value", "days", "expected"),
    [
        ("20240301", -1, "20240229"),
        ("20240105083000.123456+0100", -10, "20231226083000.123456+0100"),
        ("2024", -400, "2022"),
        ("20240105-0500", -5, "20231231-0500"),
        ("garbage", -1, None),
    ],
)
def test_shift_datetime_keeps_precision_and_zone(value: str, days: int, expected: str | None) -> None:
    shift = values.shift_date if len(value) == 8 and value.isdigit() else values.shift_datetime
    assert shift(value, days) == expected


def test_clean_text_removes_names_ids_and_dates_but_keeps_words() -> None:
    identifiers = values.collect_identifiers(["O'BRIEN^MARY ANNE"], ["PID000123", "CT-ROOM"])
    text = "CT thorax O'Brien mary 12.03.2023 PID000123 acc 20240105 ct-room 1.25mm"
    assert values.clean_text(text, identifiers) == "CT thorax acc 1.25mm"
