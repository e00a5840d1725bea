"""Elements encoded to bytes exactly as pydicom's writer would, for the values the bridge writes.

pydicom's encoder costs tens of microseconds an element; most elements of a de-identified instance are
still raw (their bytes are written back with a new header) or plain ASCII text, single numbers and
sequences of plain text, which are encoded here at a fraction of the cost. Anything else returns None and
goes through pydicom's encoder; tests compare every path here with pydicom's output byte for byte.
"""

from __future__ import annotations

import struct

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)  # explicit VR with a 32-bit length


def text_element(tag: BaseTag, vr: str, text: str, *, implicit: bool, little: bool) -> RawDataElement | None:
    """A raw element holding `text` as pydicom would encode the value for `vr`: plain ASCII text, or a person
    name without components or groups; None for anything else (give pydicom the value)."""
    if not text.isascii() or vr not in TEXT_VRS and (vr != "PN" or "=" in text or "^" in text):
        return None
    data = padded(text.encode("ascii"), vr)
    return RawDataElement(tag, vr, len(data), data, 0, implicit, little)


def encoded_value(vr: str, value: object, *, implicit: bool = True, little: bool) -> bytes | None:
    """`value` as pydicom's writer encodes it for `vr` (a sequence's items hold elements of the encoding
    given), or None if it cannot."""
    encoder = DicomBytesIO()
    encoder.is_implicit_VR, encoder.is_little_endian = implicit, little
    try:
        write_data_element(encoder, DataElement(BaseTag(0x00080000), vr, value))
    except Exception:  # pydicom raises several types for a value it cannot encode
        return None
    header = 8 if implicit or vr not in LONG_VRS else 12  # tag, (VR,) length
    return encoder.getvalue()[header:]


def tag_order(item: tuple[BaseTag, object]) -> int:
    """Sort key of a dataset item: the tag as a plain int (BaseTag compares in Python, slowly)."""
    return int(item[0])


def encoded_element(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """The element as bytes when this module can encode it exactly as pydicom would (raw, plain ASCII text
    and person names, single numbers, sequences of plain text); None when it needs pydicom's encoder."""
    if isinstance(element, RawDataElement):
        return _raw_bytes(element, implicit=implicit, little=little)
    if not isinstance(element, DataElement):
        return None
    vr = element.VR
    if vr == "SQ":
        return _sequence_bytes(element, implicit=implicit, little=little)
    if vr in TEXT_VRS:
        data = _text_value(element)
    elif vr == "PN":
        data = _person_name_value(element.value)
    elif vr in _NUMBER_FORMATS:
        data = _number_value(element.value, _NUMBER_FORMATS[vr][little])
    else:
        return None
    if data is None:
        return None
    header = element_header(element.tag, vr, len(data), implicit=implicit, little=little)
    return None if header is None else header + data


# Element headers, compiled once: (group, element, length), (group, element, VR, length).
_IMPLICIT = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
_EXPLICIT_SHORT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_EXPLICIT_LONG = {True: struct.Struct("<HH2s2xL"), False: struct.Struct(">HH2s2xL")}
UNDEFINED_LENGTH = 0xFFFFFFFF


def element_header(tag: int, vr: str | None, length: int, *, implicit: bool, little: bool) -> bytes | None:
    """The element header for the transfer syntax, or None when the VR cannot hold the length."""
    if implicit:
        return _IMPLICIT[little].pack(tag >> 16, tag & 0xFFFF, length)
    if not vr or len(vr) != 2:
        return None
    if vr in LONG_VRS:
        return _EXPLICIT_LONG[little].pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    if length > 0xFFFF:
        return None
    return _EXPLICIT_SHORT[little].pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def _raw_bytes(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """An untouched element with a defined length, as bytes; None when it needs pydicom's encoder."""
    if not isinstance(element, RawDataElement) or element.length == UNDEFINED_LENGTH:
        return None
    value = element.value or b""
    header = element_header(element.tag, element.VR, len(value), implicit=implicit, little=little)
    return None if header is None else header + value


def with_group_length(body: bytes) -> bytes:
    """The file meta group: its group length element, then `body` (Explicit VR Little Endian)."""
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


def _text_bytes(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """A text element whose values are plain ASCII strings (what de-identification writes: pseudo UIDs,
    shifted dates, dummies, cleaned text), encoded here; None for anything else (pydicom's encoder)."""
    if not isinstance(element, DataElement) or element.VR not in TEXT_VRS:
        return None
    data = _text_value(element)
    if data is None:
        return None
    header = element_header(element.tag, element.VR, len(data), implicit=implicit, little=little)
    return None if header is None else header + data


def _text_value(element: DataElement) -> bytes | None:
    """The padded value of a text element holding plain ASCII strings; None for anything else."""
    value = element.value
    if isinstance(value, str):
        text = value
    elif value is None:
        text = ""
    elif isinstance(value, MultiValue) and all(isinstance(v, str) for v in value):
        text = "\\".join(value)
    else:
        return None
    if not text.isascii():
        return None  # the character set decides: pydicom's encoder
    return padded(text.encode("ascii"), element.VR)


def padded(data: bytes, vr: str) -> bytes:
    """Text values have an even length: UIDs are padded with a NUL, other text with a space."""
    if len(data) % 2:
        return data + (b"\x00" if vr == "UI" else b" ")
    return data


def _person_name_value(value: object) -> bytes | None:
    """The padded value of a person name de-identification wrote (a dummy, the subject code): one name made
    from a plain ASCII string without components and never encoded, whose encoding under any character set
    is its ASCII bytes. None for anything else, names read from the file among them (pydicom writes their
    original bytes)."""
    if value is None:
        return b""
    if not isinstance(value, PersonName) or value.original_string is not None:
        return None
    text = str(value)
    if not text.isascii() or "=" in text or "^" in text:  # groups and components: pydicom's rules
        return None
    data = text.encode("ascii")
    return data + b" " if len(data) % 2 else data


# struct formats of the binary number VRs, by little endian or not (pydicom's writer uses the same)
_NUMBER_FORMATS = {
    vr: {True: struct.Struct(f"<{code}"), False: struct.Struct(f">{code}")}
    for vr, code in (
        ("US", "H"),
        ("SS", "h"),
        ("UL", "L"),
        ("SL", "l"),
        ("UV", "Q"),
        ("SV", "q"),
        ("FL", "f"),
        ("FD", "d"),
    )
}


def _number_value(value: object, number: struct.Struct) -> bytes | None:
    """One binary number (what pydicom read, or a dummy), packed; None for several numbers or anything
    else (pydicom's encoder)."""
    if value is None:
        return b""
    if type(value) is not int and type(value) is not float:
        return None
    try:
        return number.pack(value)
    except struct.error:  # out of range: pydicom's encoder says so
        return None


# Item, item delimitation and sequence delimitation tags (FFFE,E000), (FFFE,E00D), (FFFE,E0DD) have the
# layout of an implicit VR element header.
_ITEM = _IMPLICIT


def _sequence_bytes(element: DataElement, *, implicit: bool, little: bool) -> bytes | None:
    """A sequence whose items hold only plain ASCII text elements (as the method code sequence that
    de-identification writes), encoded as pydicom's writer does: defined lengths unless the sequence or
    item was read with undefined length. None for anything else (pydicom's encoder)."""
    marker = _ITEM[little]
    items = bytearray()
    for item in element.value:
        body = bytearray()
        for tag, child in sorted(item.items(), key=tag_order):
            encoded = None if not tag & 0xFFFF else _text_bytes(child, implicit=implicit, little=little)
            if encoded is None:  # group lengths, raw or other elements: pydicom's rules
                return None
            body += encoded
        if item.is_undefined_length_sequence_item:
            items += marker.pack(0xFFFE, 0xE000, UNDEFINED_LENGTH) + body + marker.pack(0xFFFE, 0xE00D, 0)
        else:
            items += marker.pack(0xFFFE, 0xE000, len(body)) + body
    undefined = element.is_undefined_length
    header = element_header(
        element.tag, "SQ", UNDEFINED_LENGTH if undefined else len(items), implicit=implicit, little=little
    )
    if header is None:
        return None
    return header + items + (marker.pack(0xFFFE, 0xE0DD, 0) if undefined else b"")
