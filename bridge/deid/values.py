"""Value transformations of de-identification: keyed UIDs, shifted dates, dummies, cleaned text.

All keyed functions take the project key, so every node and every resend maps the same input to the same
output, and two projects map the same patient to unrelated values.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pydicom._uid_dict import UID_dictionary

UID_ROOT = "2.25."


def keyed_digest(key: bytes, purpose: str, value: str) -> bytes:
    return hmac.digest(key, f"{purpose}\x00{value}".encode(), hashlib.sha256)


def is_well_known_uid(uid: str) -> bool:
    """SOP classes, transfer syntaxes, coding schemes and other registry UIDs are never remapped."""
    return uid in UID_dictionary


@lru_cache(maxsize=4096)  # the study, series and frame of reference UIDs come again with every instance
def pseudo_uid(key: bytes, uid: str) -> str:
    """`2.25.<decimal of 128 keyed bits>`: at most 44 characters, no leading zeros, same input same output."""
    number = int.from_bytes(keyed_digest(key, "uid", uid.strip())[:16], "big")
    return f"{UID_ROOT}{number}"


def date_offset_days(key: bytes, patient_key: str, max_days: int) -> int:
    """One keyed offset per subject, in [-max_days, -1]: shifts every date of the subject backwards."""
    number = int.from_bytes(keyed_digest(key, "date-offset", patient_key)[:8], "big")
    return -(1 + number % max_days)


def patient_key(key: bytes, issuer: str, patient_id: str) -> str:
    """Keyed hash of (issuer, patient ID): the vault's lookup key, revealing nothing without the key."""
    return keyed_digest(key, "patient", f"{issuer}\x00{patient_id}").hex()


def shift_date(value: str, days: int) -> str | None:
    """Shift a DA value ('YYYYMMDD'); None when it is not a date this can read."""
    text = value.strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        date = dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    try:
        return (date + dt.timedelta(days=days)).strftime("%Y%m%d")
    except OverflowError:
        return None


_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(.*?)([+-]\d{4})?$")


def shift_datetime(value: str, days: int) -> str | None:
    """Shift the date part of a DT value, keeping its precision, its time part and its time-zone suffix.

    A DT of year or year-month precision is shifted as the first day of that period and written back at
    the same precision.
    """
    match = _DT.match(value.strip())
    if not match:
        return None
    year, month, day, rest, zone = match.groups()
    try:
        date = dt.date(int(year), int(month or 1), int(day or 1)) + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    if rest and not re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", rest):
        return None
    text = f"{date.year:04d}"
    if month:
        text += f"{date.month:02d}"
    if day:
        text += f"{date.day:02d}"
    return text + (rest or "") + (zone or "")


DUMMY_TEXT = "ANONYMIZED"

DUMMIES: dict[str, object] = {
    "AE": "ANONYMIZED",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DT": "19000101000000",
    "TM": "000000",
    "DS": "0",
    "IS": "0",
    "LO": DUMMY_TEXT,
    "LT": DUMMY_TEXT,
    "SH": DUMMY_TEXT,
    "ST": DUMMY_TEXT,
    "UC": DUMMY_TEXT,
    "UT": DUMMY_TEXT,
    "PN": DUMMY_TEXT,
    "UR": "",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
    "OB": b"\x00\x00",
    "OD": b"\x00" * 8,
    "OF": b"\x00" * 4,
    "OL": b"\x00" * 4,
    "OV": b"\x00" * 8,
    "OW": b"\x00\x00",
    "UN": b"\x00\x00",
}


_DATE_LIKE = re.compile(
    r"(?<![0-9])(?:(?:19|20)\d{2}[-./]?[01]\d[-./]?[0-3]\d|[0-3]?\d[-./][01]?\d[-./](?:19|20)?\d{2})(?![0-9])"
)
_ID_LIKE = re.compile(r"(?<![\w])[\w-]*\d[\w-]*(?![\w])")


@dataclass(frozen=True)
class Identifiers:
    """What Clean Descriptors removes from free text: whole phrases (a name component, an ID) and words."""

    phrases: frozenset[str]
    words: frozenset[str]


def collect_identifiers(names: Iterable[str], others: Iterable[str]) -> Identifiers:
    """Person names give their components and every word of 2+ letters; other identifiers give their whole
    value and their words of 4+ characters (so that 'CT' in a station name does not erase 'CT' elsewhere)."""
    phrases: set[str] = set()
    words: set[str] = set()
    for name in names:
        for component in re.split(r"[\^=]+", name):
            component = component.strip()
            if len(component) >= 2:
                phrases.add(component.casefold())
                words.update(w for w in re.split(r"\W+", component.casefold()) if len(w) >= 2)
    for value in others:
        value = value.strip()
        if len(value) >= 2:
            phrases.add(value.casefold())
            words.update(w for w in re.split(r"\W+", value.casefold()) if len(w) >= 4)
    return Identifiers(frozenset(phrases), frozenset(words))


_WORD = re.compile(r"\w+")
_SPACES = re.compile(r"\s{2,}")


@lru_cache(maxsize=256)
def clean_text(text: str, identifiers: Identifiers) -> str:
    """Remove identifiers, dates and ID-like numbers (five or more digits) from a descriptor. Memoized: the
    descriptors of a series repeat instance after instance, and so do the identifiers of its patient."""
    cleaned = text
    for pattern in _phrase_patterns(identifiers.phrases):
        cleaned = pattern.sub("", cleaned)
    cleaned = _DATE_LIKE.sub("", cleaned)
    cleaned = _ID_LIKE.sub(lambda m: "" if sum(c.isdigit() for c in m.group()) >= 5 else m.group(), cleaned)
    if identifiers.words:

        def drop(match: re.Match[str]) -> str:
            return "" if match.group().casefold() in identifiers.words else match.group()

        cleaned = _WORD.sub(drop, cleaned)
    cleaned = _SPACES.sub(" ", cleaned)
    return cleaned.strip(" ^-_,;:/")


@lru_cache(maxsize=64)
def _phrase_patterns(phrases: frozenset[str]) -> tuple[re.Pattern[str], ...]:
    """One pattern per phrase, longest first (removed one after the other, as the order matters)."""
    patterns = []
    for phrase in sorted(phrases, key=len, reverse=True):
        boundary = r"(?<!\w)" if phrase.isascii() else ""  # CJK names have no word separators
        pattern = boundary + re.escape(phrase) + (r"(?!\w)" if phrase.isascii() else "")
        patterns.append(re.compile(pattern, flags=re.IGNORECASE))
    return tuple(patterns)
