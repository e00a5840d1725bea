"""Part 10 files read and written without holding their bulk data in memory.

Values larger than `DEFER_SIZE` (pixel data, mostly) are left in the source file when reading and are
streamed from it when writing, so a 1 GB multi-frame instance costs a few MB of memory, and the elements
de-identification leaves untouched are written back as the bytes they arrived as. Plain files are read by
`fastread` in one pass; anything unusual by pydicom, whose verdict on odd files is the one that counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from bridge.dicom.encoding import element_header, encoded_element, padded, tag_order, with_group_length
from bridge.dicom.fastread import read_plain
from bridge.errors import MalformedInstance

DEFER_SIZE = 256 * 1024
_CHUNK = 1 << 20


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
        for tag, element in sorted(ds.items(), key=tag_order):
            if _is_deferred(element):
                out.write(pending)
                pending.clear()
                _copy_element(out, element, stream, implicit=implicit, little=little)  # type: ignore[arg-type]
            elif (encoded := encoded_element(element, implicit=implicit, little=little)) is not None:
                pending += encoded
            else:
                encoder = DicomBytesIO()
                encoder.is_implicit_VR, encoder.is_little_endian = implicit, little
                write_data_element(encoder, ds.get_item(tag), encoding)
                pending += encoder.getvalue()
    out.write(pending)


_META_REQUIRED = (0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012)


def _file_meta_bytes(meta: Dataset) -> bytes | None:
    """The file meta group (Explicit VR Little Endian, with its group length) when every element is raw or
    plain text, as after de-identification rebuilt it; None otherwise (pydicom's writer completes it)."""
    if any(tag not in meta for tag in _META_REQUIRED):
        return None
    body = bytearray()
    for tag, element in sorted(meta.items(), key=tag_order):
        if tag == 0x00020000:
            continue
        encoded = encoded_element(element, implicit=False, little=True)
        if encoded is None:
            return None
        body += encoded
    return with_group_length(bytes(body))


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
    elements += [(tag, vr, padded(text.encode("ascii", "replace")[:64], vr)) for tag, vr, text in texts]
    body = bytearray()
    for tag, vr, data in elements:
        header = element_header(tag, vr, len(data), implicit=False, little=True)
        assert header is not None  # short values: every VR holds them
        body += header + data
    return _PREAMBLE + with_group_length(bytes(body))


def _copy_element(out: BinaryIO, element: RawDataElement, stream: BinaryIO, *, implicit: bool, little: bool) -> None:
    header = element_header(element.tag, element.VR or "UN", element.length, implicit=implicit, little=little)
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
