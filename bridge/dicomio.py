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
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileDataset
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

DEFER_SIZE = 256 * 1024
_CHUNK = 1 << 20
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
    """Write `ds` as a Part 10 file, streaming deferred values from `source` (the file it was read from)."""
    transfer_syntax = UID(ds.file_meta.TransferSyntaxUID)
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # the deflated body must be compressed as a whole; deferred values are read by pydicom
        dcmwrite(out, ds, enforce_file_format=True)
        return
    fp = DicomFileLike(out)
    fp.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(fp, ds.file_meta, enforce_standard=True)
    fp.is_implicit_VR = transfer_syntax.is_implicit_VR
    fp.is_little_endian = transfer_syntax.is_little_endian
    encoding = ds.get("SpecificCharacterSet", default_encoding)
    with source.open("rb") as stream:
        for tag in sorted(ds.keys()):
            element = ds.get_item(tag, keep_deferred=True)
            if _is_deferred(element):
                _copy_element(fp, element, stream)  # type: ignore[arg-type]
            else:
                write_data_element(fp, ds.get_item(tag), encoding)


def _copy_element(fp: DicomFileLike, element: RawDataElement, stream: BinaryIO) -> None:
    endian = "<" if fp.is_little_endian else ">"
    group, number = element.tag >> 16, element.tag & 0xFFFF
    header = struct.pack(f"{endian}HH", group, number)
    if fp.is_implicit_VR:
        header += struct.pack(f"{endian}L", element.length)
    else:
        vr = element.VR or "UN"
        if vr not in _LONG_VRS:
            raise MalformedInstance(f"element {element.tag} too long for its VR {vr}")
        header += vr.encode("ascii") + b"\x00\x00" + struct.pack(f"{endian}L", element.length)
    fp.write(header)
    stream.seek(element.value_tell)
    remaining = element.length
    while remaining:
        chunk = stream.read(min(_CHUNK, remaining))
        if not chunk:
            raise MalformedInstance(f"truncated: element {element.tag} ends beyond the end of the file")
        fp.write(chunk)
        remaining -= len(chunk)
