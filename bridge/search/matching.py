"""Matching keys to SQL conditions, as PS3.4 C.2.2.2 describes them: universal (empty), single value,
wildcard (`*`, `?`), list of UIDs, date and time ranges.

A key that cannot be a value of its attribute (a date that is no date) is a `MatchError`
naming the attribute, never the value (it could be an identifier typed into the wrong field).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import ColumnElement, String, false, func, literal, or_, true

from bridge.search.attributes import Attribute, Match

_ESCAPE = "\\"


class MatchError(ValueError):
    """A key that its attribute cannot match; the message names the attribute and the rule."""


def condition(attribute: Attribute, key: str) -> ColumnElement[bool] | None:
    """The condition a key puts on its attribute, or None for universal matching."""
    key = key.strip()
    if key in ("", "*"):
        return None
    column = attribute.expression
    if column is None:
        return false()  # always empty: no value matches it
    match attribute.match:
        case Match.UID:
            uids = [uid for uid in re.split(r"[\\,]", key) if uid]
            if not all(re.fullmatch(r"[0-9.]{1,64}", uid) for uid in uids):
                raise MatchError(f"{attribute.keyword}: a UID or a list of UIDs (digits and dots)")
            return column == uids[0] if len(uids) == 1 else column.in_(uids)
        case Match.DATE:
            return _range(attribute, column, key, _date)
        case Match.TIME:
            return _range(attribute, column, key, _time)
        case Match.NUMBER:
            try:
                number = float(key) if "." in key else int(key)
            except ValueError:
                raise MatchError(f"{attribute.keyword}: a number") from None
            return column == number
        case Match.CODES:
            padded = literal(",", String) + column + literal(",", String)
            return or_(*(padded.like(f"%,{_escaped(code)},%", escape=_ESCAPE) for code in _values(key)))
        case Match.NAME:
            return or_(*(_text(func.lower(column), value.lower()) for value in _values(key)))
        case _:
            return or_(*(_text(column, value) for value in _values(key)))


def _values(key: str) -> list[str]:
    return [value for value in key.split("\\") if value] or [key]


def _text(column: ColumnElement[Any], value: str) -> ColumnElement[bool]:
    if "*" not in value and "?" not in value:
        return column == value
    pattern = _escaped(value).replace("*", "%").replace("?", "_")
    return column.like(pattern, escape=_ESCAPE)


def _escaped(value: str) -> str:
    return value.replace(_ESCAPE, _ESCAPE * 2).replace("%", _ESCAPE + "%").replace("_", _ESCAPE + "_")


def _range(
    attribute: Attribute, column: ColumnElement[Any], key: str, convert: Callable[[str, bool], object]
) -> ColumnElement[bool]:
    low, dash, high = key.partition("-")
    try:
        if not dash:
            return column == convert(low, False)
        conditions = []
        if low:
            conditions.append(column >= convert(low, False))
        if high:
            conditions.append(column <= convert(high, True))
    except ValueError:
        raise MatchError(f"{attribute.keyword}: a value or a range (low-high) of {attribute.vr}") from None
    if not conditions:
        return true()
    return conditions[0] if len(conditions) == 1 else conditions[0] & conditions[1]


def _date(text: str, upper: bool) -> dt.date:
    """DA: YYYYMMDD."""
    if not re.fullmatch(r"\d{8}", text):
        raise ValueError(text)
    return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))


def _time(text: str, upper: bool) -> str:
    """TM compared as text (HHMMSS.FFFFFF sorts as time); an upper bound of lower precision covers the
    whole hour or minute it names."""
    plain = text.replace(":", "")
    if not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", plain):
        raise ValueError(text)
    return plain + "\uffff" if upper else plain
