"""Element access without pydicom's conversions where the raw bytes already say it.

pydicom converts a raw element on first access (~20 us each, and an instance has dozens); these helpers read
plain values straight from the raw bytes and fall back to pydicom for anything else, so the result is always
what pydicom would give. Module constants of tags (`tag_of`) skip the keyword look-up on every access.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.tag import BaseTag

from bridge.dicom.encoding import text_element


@functools.cache
def dictionary_vr(tag: int) -> str | None:
    """The data dictionary's VR of a tag (e.g. "US or SS"); None for private and unknown tags."""
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return None


def tag_of(keyword: str) -> BaseTag:
    """The tag of a data dictionary keyword, for module constants: `value_of(ds, TAG)` skips the keyword
    look-up `ds.Keyword` does on every access."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return BaseTag(tag)


def value_of(ds: Dataset, tag: BaseTag) -> Any:
    """`ds.get(keyword)` by tag: the element's value (converted from raw, as pydicom does), or None."""
    return ds[tag].value if tag in ds else None


# Text VRs whose values pydicom decodes from ASCII bytes the same under every character set (no escape
# sequences) and, for one value, returns as the string without trailing spaces and NULs.
_PLAIN_TEXT_VRS = frozenset({"AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UT"})


def plain_text(element: object, vr: str | None) -> str | None:
    """The value pydicom's conversion gives a raw text element holding one plain ASCII value, computed from
    its bytes without converting it (pydicom's conversion costs ~20 us an element); None for anything else
    (several values, other characters, a converted or deferred element): then ask pydicom."""
    if not isinstance(element, RawDataElement) or vr not in _PLAIN_TEXT_VRS:
        return None
    value = element.value
    if value is None:  # deferred, or empty
        return None if element.length else ""
    if not value.isascii() or b"\\" in value or b"\x1b" in value:
        return None
    text = value.decode("ascii").rstrip(" \x00")
    return text.strip() if vr == "UI" else text  # pydicom's UID strips both ends


def text_of(ds: Dataset, tag: BaseTag) -> str:
    """`str(ds[tag].value or "")`, "" when absent, without converting a plain raw text value."""
    element = ds.get_item(tag, keep_deferred=True)
    if element is None:
        return ""
    text = plain_text(element, element.VR or dictionary_vr(tag))
    if text is not None:
        return text
    value = ds[tag].value
    return str(value) if value else ""


def number_of(ds: Dataset, tag: BaseTag) -> Any:
    """`ds[tag].value` (None when absent), without converting a raw value holding one number: a US, or an
    IS written as a plain integer (several values, a decimal point: pydicom's conversion decides)."""
    element = ds.get_item(tag, keep_deferred=True)
    if element is None:
        return None
    if isinstance(element, RawDataElement) and element.value:
        vr = element.VR or dictionary_vr(tag)
        if vr == "US" and len(element.value) == 2:
            return (_US_LITTLE if element.is_little_endian else _US_BIG).unpack(element.value)[0]
        if vr == "IS":
            text = element.value.strip(b" \x00")
            if (text[1:] if text[:1] in (b"+", b"-") else text).isdigit():
                return int(text)
    return ds[tag].value


_US_LITTLE, _US_BIG = struct.Struct("<H"), struct.Struct(">H")


def put_raw(ds: Dataset, element: RawDataElement) -> None:
    """`ds[element.tag] = element`, for a raw element of a public group other than pixel data's, as pydicom's
    `__setitem__` ends up doing it, without its checks for what does not apply (private creators, cached
    pixel arrays, sequences): a fifth of the de-identification walk's time."""
    tag = element.tag
    if tag & 0x10000 or tag >> 16 == 0x7FE0 or element.VR == "SQ":
        ds[tag] = element
    else:
        ds._dict[tag] = element


def value_length(ds: FileDataset, tag: int) -> int:
    """Length in bytes of a value, without loading it when it was deferred."""
    element = ds.get_item(tag, keep_deferred=True)
    if isinstance(element, RawDataElement):
        return element.length if element.value is None else len(element.value)
    return len(element.value) if element.value is not None else 0


def put_value(ds: Dataset, keyword: str, value: object, encoding: tuple[bool, bool] | None) -> None:
    """`setattr(ds, keyword, value)` without pydicom's keyword and dictionary look-ups (cached here). As
    pydicom does, an element already present keeps its VR and only takes the new value. Plain text is put
    as a raw element of the file's `encoding` (implicit VR, little endian): written as it is."""
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


@functools.cache
def _keyword_entry(keyword: str) -> tuple[BaseTag, str]:
    tag = tag_of(keyword)
    return tag, str(dictionary_VR(tag))
