"""Reading and writing instances without holding their bulk data in memory.

Values larger than `DEFER_SIZE` (pixel data, mostly) are left in the source file when reading and are
streamed from it when writing, so a 1 GB multi-frame instance costs a few MB of memory, and the elements
de-identification leaves untouched are written back as the bytes they arrived as.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.multival import MultiValue
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

DEFER_SIZE = 256 * 1024
_CHUNK = 1 << 20
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UI", "UR", "UT"})
_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


class MalformedInstance(ValueError):
    """The bytes are not a complete, parseable DICOM instance; the message says what is wrong."""


def read_instance(path: Path) -> FileDataset:
    """Parse the file, leaving large values in place. Raises MalformedInstance for bad or truncated files."""
    try:
        ds = dcmread(path, defer_size=DEFER_SIZE, force=not has_preamble(path))
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
    for tag in ds.keys():
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        short = raw.value_tell + raw.length > size if raw.value is None else len(raw.value) < raw.length
        if short:
            raise MalformedInstance(f"truncated: element {tag} ends beyond the end of the file")
    if "TransferSyntaxUID" not in ds.file_meta:
        raise MalformedInstance("no Transfer Syntax UID in the file meta information")
    return ds


def has_preamble(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(132)[128:132] == b"DICM"


def looks_like_dicom(path: Path) -> bool:
    """Part 10 files, and bare datasets that start with a group 0002 or 0008 element (old exports)."""
    with path.open("rb") as stream:
        head = stream.read(132)
    return head[128:132] == b"DICM" or head[:2] in (b"\x02\x00", b"\x08\x00") and len(head) >= 8


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

    Elements still as read (raw) are written back as their bytes with a new header; only the elements
    de-identification changed go through pydicom's encoder.
    """
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # the deflated body must be compressed as a whole; deferred values are read by pydicom
        dcmwrite(out, ds, enforce_file_format=True)
        return
    implicit, little = transfer_syntax.is_implicit_VR, transfer_syntax.is_little_endian
    pending = bytearray(b"\x00" * 128 + b"DICM")
    meta = _file_meta_bytes(ds.file_meta)
    if meta is None:  # incomplete or unusual: pydicom adds what the standard requires
        encoder = DicomBytesIO()
        write_file_meta_info(encoder, ds.file_meta, enforce_standard=True)
        meta = encoder.getvalue()
    pending += meta
    encoding = ds.get("SpecificCharacterSet", default_encoding)
    with source.open("rb") as stream:
        for tag in sorted(ds.keys()):
            element = ds.get_item(tag, keep_deferred=True)
            if _is_deferred(element):
                out.write(pending)
                pending.clear()
                _copy_element(out, element, stream, implicit=implicit, little=little)  # type: ignore[arg-type]
            elif (raw := _raw_bytes(element, implicit=implicit, little=little)) is not None:
                pending += raw
            elif (text := _text_bytes(element, implicit=implicit, little=little)) is not None:
                pending += text
            else:
                encoder = DicomBytesIO()
                encoder.is_implicit_VR, encoder.is_little_endian = implicit, little
                write_data_element(encoder, ds.get_item(tag), encoding)
                pending += encoder.getvalue()
    out.write(pending)


def _header(tag: int, vr: str | None, length: int, *, implicit: bool, little: bool) -> bytes | None:
    """The element header for the transfer syntax, or None when the VR cannot hold the length."""
    endian = "<" if little else ">"
    header = struct.pack(f"{endian}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return header + struct.pack(f"{endian}L", length)
    if not vr or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return header + vr.encode("ascii") + b"\x00\x00" + struct.pack(f"{endian}L", length)
    if length > 0xFFFF:
        return None
    return header + vr.encode("ascii") + struct.pack(f"{endian}H", length)


def _raw_bytes(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """An untouched element with a defined length, as bytes; None when it needs pydicom's encoder."""
    if not isinstance(element, RawDataElement) or element.length == 0xFFFFFFFF:
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
    for tag in sorted(meta.keys()):
        if tag == 0x00020000:
            continue
        element = meta.get_item(tag)
        encoded = _raw_bytes(element, implicit=False, little=True)
        if encoded is None:
            encoded = _text_bytes(element, implicit=False, little=True)
        if encoded is None:
            return None
        body += encoded
    return struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + bytes(body)


def _text_bytes(element: object, *, implicit: bool, little: bool) -> bytes | None:
    """A text element whose values are plain ASCII strings (what de-identification writes: pseudo UIDs,
    shifted dates, dummies, cleaned text), encoded here; None for anything else (pydicom's encoder)."""
    if not isinstance(element, DataElement) or element.VR not in _TEXT_VRS:
        return None
    value = element.value
    values = list(value) if isinstance(value, MultiValue) else [] if value is None else [value]
    if not all(isinstance(v, str) for v in values):
        return None
    text = "\\".join(values)
    if not text.isascii():
        return None  # the character set decides: pydicom's encoder
    data = text.encode("ascii")
    if len(data) % 2:
        data += b"\x00" if element.VR == "UI" else b" "
    header = _header(element.tag, element.VR, len(data), implicit=implicit, little=little)
    return None if header is None else header + data


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
