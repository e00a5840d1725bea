"""Reading and writing instances without holding their bulk data in memory.

Values larger than `DEFER_SIZE` (pixel data, mostly) are left in the source file when reading and are
streamed from it when writing, so a 1 GB multi-frame instance costs a few MB of memory, and the elements
de-identification leaves untouched are written back as the bytes they arrived as.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.charset import default_encoding
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, PersonName

from bridge.plainread import dictionary_vr, read_plain

DEFER_SIZE = 256 * 1024
_CHUNK = 1 << 20
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)  # explicit VR with a 32-bit length


class MalformedInstance(ValueError):
    """The bytes are not a complete, parseable DICOM instance; the message says what is wrong."""


def read_instance(path: Path, tags: frozenset[int] | None = None) -> FileDataset:
    """Parse the file, leaving large values in place. Raises MalformedInstance for bad or truncated files.
    `tags`: the caller needs only these elements; others may be left out (when the file is a plain one)."""
    plain = read_plain(path, DEFER_SIZE, tags)  # the common case, in one pass; anything unusual is pydicom's
    return plain if plain is not None else _read_with_pydicom(path)


def _read_with_pydicom(path: Path) -> FileDataset:
    try:
        # force: read a bare dataset too; with a preamble and "DICM" pydicom reads the same either way
        ds = dcmread(path, defer_size=DEFER_SIZE, force=True)
        if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
            # deferred offsets point into the inflated body, which cannot be read back from the file
            ds = dcmread(path)
    except OSError:
        raise
    except Exception as exc:  # pydicom raises many types for bad input; all mean the same here
        raise MalformedInstance(f"unparseable DICOM ({type(exc).__name__})") from None
    if "TransferSyntaxUID" not in ds.file_meta and None not in ds.original_encoding:
        implicit, little = ds.original_encoding  # a bare dataset without Part 10 header
        ds.file_meta.TransferSyntaxUID = (
            ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
        )
        ds.file_meta.MediaStorageSOPClassUID = ds.get("SOPClassUID")
    size = path.stat().st_size
    for tag, raw in ds.items():  # as stored: never reads a deferred value
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        short = raw.value_tell + raw.length > size if raw.value is None else len(raw.value) < raw.length
        if short:
            raise MalformedInstance(f"truncated: element {tag} ends beyond the end of the file")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise MalformedInstance("no Transfer Syntax UID in the file meta information")
    return ds


def looks_like_dicom(path: Path) -> bool:
    """Part 10 files, and bare datasets that start with a group 0002 or 0008 element (old exports)."""
    with path.open("rb") as stream:
        head = stream.read(132)
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8


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


def text_element(tag: BaseTag, vr: str, text: str, *, implicit: bool, little: bool) -> RawDataElement | None:
    """A raw element holding `text` as pydicom would encode the value for `vr`: plain ASCII text, or a person
    name without components or groups; None for anything else (give pydicom the value)."""
    if not text.isascii() or vr not in _TEXT_VRS and (vr != "PN" or "=" in text or "^" in text):
        return None
    data = _padded(text.encode("ascii"), vr)
    return RawDataElement(tag, vr, len(data), data, 0, implicit, little)


def put_raw(ds: Dataset, element: RawDataElement) -> None:
    """`ds[element.tag] = element`, for a raw element of a public group other than pixel data's, as pydicom's
    `__setitem__` ends up doing it, without its checks for what does not apply (private creators, cached
    pixel arrays, sequences): a fifth of the de-identification walk's time."""
    tag = element.tag
    if tag & 0x10000 or tag >> 16 == 0x7FE0 or element.VR == "SQ":
        ds[tag] = element
    else:
        ds._dict[tag] = element


def encoded_value(vr: str, value: object, *, implicit: bool = True, little: bool) -> bytes | None:
    """`value` as pydicom's writer encodes it for `vr` (a sequence's items hold elements of the encoding
    given), or None if it cannot."""
    encoder = DicomBytesIO()
    encoder.is_implicit_VR, encoder.is_little_endian = implicit, little
    try:
        write_data_element(encoder, DataElement(BaseTag(0x00080000), vr, value))
    except Exception:  # pydicom raises several types for a value it cannot encode
        return None
    header = 8 if implicit or vr not in _LONG_VRS else 12  # tag, (VR,) length
    return encoder.getvalue()[header:]


def value_length(ds: FileDataset, tag: int) -> int:
    """Length in bytes of a value, without loading it when it was deferred."""
    element = ds.get_item(tag, keep_deferred=True)
    if isinstance(element, RawDataElement):
        return element.length if element.value is None else len(element.value)
    return len(element.value) if element.value is not None else 0


def _is_deferred(element: object) -> bool:
    return isinstance(element, RawDataElement) and element.value is None and element.length not in (0, 0xFFFFFFFF)


def write_instance(out: BinaryIO, ds: FileDataset, source: Path) -> None:
    """Write `ds` as a Part 10 file, streaming deferred values from `source` (the file it was read from).

    Elements still as read (raw) are written back as their bytes with a new header. Elements read or
    changed by de-identification are encoded here when they are plain ASCII text, names it wrote, single
    numbers or sequences of plain text (byte for byte as pydicom would, at a fraction of the cost); the
    others go through pydicom's encoder.
    """
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # the deflated body must be compressed as a whole; deferred values are read by pydicom
        dcmwrite(out, ds, enforce_file_format=True)
        return
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    pending = bytearray(_PREAMBLE)
    meta = _file_meta_bytes(ds.file_meta)
    if meta is None:  # incomplete or unusual: pydicom adds what the standard requires
        encoder = DicomBytesIO()
        write_file_meta_info(encoder, ds.file_meta, enforce_standard=True)
        meta = encoder.getvalue()
    pending += meta
    encoding = ds.get("SpecificCharacterSet", default_encoding)
    with source.open("rb") as stream:
        for tag, element in sorted(ds.items(), key=_tag_order):
            if _is_deferred(element):
                out.write(pending)
                pending.clear()
                _copy_element(out, element, stream, implicit=implicit, little=little)  # type: ignore[arg-type]
            elif (encoded := _encoded(element, implicit=implicit, little=little)) is not None:
                pending += encoded
            else:
                encoder = DicomBytesIO()
                encoder.is_implicit_VR, encoder.is_little_endian = implicit, little
                write_data_element(encoder, ds.get_item(tag), encoding)
                pending += encoder.getvalue()
    out.write(pending)


def _tag_order(item: tuple[BaseTag, object]) -> int:
    """Sort key of a dataset item: the tag as a plain int (BaseTag compares in Python, slowly)."""
    return int(item[0])


def _encoded(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """The element as bytes when this module can encode it exactly as pydicom would (raw, plain ASCII text
    and person names, single numbers, sequences of plain text); None when it needs pydicom's encoder."""
    if isinstance(element, RawDataElement):
        return _raw_bytes(element, implicit=implicit, little=little)
    if not isinstance(element, DataElement):
        return None
    vr = element.VR
    if vr == "SQ":
        return _sequence_bytes(element, implicit=implicit, little=little)
    if vr in _TEXT_VRS:
        data = _text_value(element)
    elif vr == "PN":
        data = _person_name_value(element.value)
    elif vr in _NUMBER_FORMATS:
        data = _number_value(element.value, _NUMBER_FORMATS[vr][little])
    else:
        return None
    if data is None:
        return None
    header = _header(element.tag, vr, len(data), implicit=implicit, little=little)
    return None if header is None else header + data


# Element headers, compiled once: (group, element, length), (group, element, VR, length).
_IMPLICIT = {True: struct.Struct("<HHL"), False: struct.Struct(">HHL")}
_EXPLICIT_SHORT = {True: struct.Struct("<HH2sH"), False: struct.Struct(">HH2sH")}
_EXPLICIT_LONG = {True: struct.Struct("<HH2s2xL"), False: struct.Struct(">HH2s2xL")}
_UNDEFINED = 0xFFFFFFFF


def _header(tag: int, vr: str | None, length: int, *, implicit: bool, little: bool) -> bytes | None:
    """The element header for the transfer syntax, or None when the VR cannot hold the length."""
    if implicit:
        return _IMPLICIT[little].pack(tag >> 16, tag & 0xFFFF, length)
    if not vr or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return _EXPLICIT_LONG[little].pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)
    if length > 0xFFFF:
        return None
    return _EXPLICIT_SHORT[little].pack(tag >> 16, tag & 0xFFFF, vr.encode("ascii"), length)


def _raw_bytes(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """An untouched element with a defined length, as bytes; None when it needs pydicom's encoder."""
    if not isinstance(element, RawDataElement) or element.length == _UNDEFINED:
        return None
    value = element.value or b""
    header = _header(element.tag, element.VR, len(value), implicit=implicit, little=little)
    return None if header is None else header + value


_META_REQUIRED = (0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)


def _file_meta_bytes(meta: Dataset) -> bytes | None:
    """The file meta group (Explicit VR Little Endian, with its group length) when every element is raw or
    plain text, as after de-identification rebuilt it; None otherwise (pydicom's writer completes it)."""
    if any(tag not in meta for tag in _META_REQUIRED):
        return None
    body = bytearray()
    for tag, element in sorted(meta.items(), key=_tag_order):
        if tag == 0x00020000:
            continue
        encoded = _encoded(element, implicit=False, little=True)
        if encoded is None:
            return None
        body += encoded
    return _with_group_length(bytes(body))


def _with_group_length(body: bytes) -> bytes:
    """The file meta group: its group length element, then `body` (Explicit VR Little Endian)."""
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body


_PREAMBLE = b"\x00" * 128 + b"DICM"
_META_VERSION = b"\x00\x01"  # (0002,0001) File Meta Information Version


def received_file_header(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str,
    implementation_class_uid: str,
    implementation_version: str,
) -> bytes:
    """Preamble, DICM prefix and file meta group for a dataset received over the network (a C-STORE's):
    followed by the dataset as it arrived, they make a Part 10 file (PS3.10 7.1)."""
    texts = (
        (0x00020002, "UI", sop_class_uid),
        (0x00020003, "UI", sop_instance_uid),
        (0x00020010, "UI", transfer_syntax_uid),
        (0x00020012, "UI", implementation_class_uid),
        (0x00020013, "SH", implementation_version),
        (0x00020016, "AE", source_ae_title),
    )
    elements = [(0x00020001, "OB", _META_VERSION)]
    elements += [(tag, vr, _padded(text.encode("ascii", "replace")[:64], vr)) for tag, vr, text in texts]
    body = bytearray()
    for tag, vr, data in elements:
        header = _header(tag, vr, len(data), implicit=False, little=True)
        assert header is not None  # short values: every VR holds them
        body += header + data
    return _PREAMBLE + _with_group_length(bytes(body))


def _text_bytes(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """A text element whose values are plain ASCII strings (what de-identification writes: pseudo UIDs,
    shifted dates, dummies, cleaned text), encoded here; None for anything else (pydicom's encoder)."""
    if not isinstance(element, DataElement) or element.VR not in _TEXT_VRS:
        return None
    data = _text_value(element)
    if data is None:
        return None
    header = _header(element.tag, element.VR, len(data), implicit=implicit, little=little)
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
    return _padded(text.encode("ascii"), element.VR)


def _padded(data: bytes, vr: str) -> bytes:
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
        for tag, child in sorted(item.items(), key=_tag_order):
            encoded = None if not tag & 0xFFFF else _text_bytes(child, implicit=implicit, little=little)
            if encoded is None:  # group lengths, raw or other elements: pydicom's rules
                return None
            body += encoded
        if item.is_undefined_length_sequence_item:
            items += marker.pack(0xFFFE, 0xE000, _UNDEFINED) + body + marker.pack(0xFFFE, 0xE00D, 0)
        else:
            items += marker.pack(0xFFFE, 0xE000, len(body)) + body
    undefined = element.is_undefined_length
    header = _header(element.tag, "SQ", _UNDEFINED if undefined else len(items), implicit=implicit, little=little)
    if header is None:
        return None
    return header + items + (marker.pack(0xFFFE, 0xE0DD, 0) if undefined else b"")


def _copy_element(out: BinaryIO, element: RawDataElement, stream: BinaryIO, *, implicit: bool, little: bool) -> None:
    header = _header(element.tag, element.VR or "UN", element.length, implicit=implicit, little=little)
    if header is None:
        raise MalformedInstance(f"element {element.tag} too long for its VR {element.VR}")
    out.write(header)
    stream.seek(element.value_tell)
    remaining = element.length
    while remaining:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            raise MalformedInstance(f"truncated: element {element.tag} ends beyond the end of the file")
        out.write(chunk)
        remaining -= len(chunk)
