"""A reader for the common case: a Part 10 file in little endian, without surprises, parsed in one pass.

pydicom's general reader costs ~0.25 ms per CT header, and every received instance is read twice (the
listener checks it, a worker de-identifies it). This builds the same dataset pydicom would (the same raw
elements, large values deferred, undefined-length sequences parsed by pydicom's own sequence reader) at a
fraction of the cost. Anything it does not expect (another transfer syntax, an unknown VR, an undefined
length other than a sequence's, a file that ends early) makes it return None, and the caller reads the
file with pydicom, whose verdict on odd files stays the one that counts.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import read_sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32, VR
from pydicom.values import convert_string

from bridge.dicom.elements import dictionary_vr

_BLOCK = 64 * 1024
_DEFLATED = DeflatedExplicitVRLittleEndian
_UNDEFINED = 0xFFFFFFFF
_CHARSET = 0x00080005
_ITEM_TAGS = frozenset({0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD})
# the VRs as they appear in an explicit VR element header, with a 32-bit length or a 16-bit one
_LONG = {str(vr).encode("ascii"): str(vr) for vr in EXPLICIT_VR_LENGTH_32}
_SHORT = {str(vr).encode("ascii"): str(vr) for vr in VR if len(vr) == 2 and vr not in EXPLICIT_VR_LENGTH_32}
_TAG_VR = struct.Struct("<HH2s")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<L")
_IMPLICIT = struct.Struct("<HHL")


class _Unexpected(Exception):
    """Something pydicom should judge: the caller falls back to it."""


class _Cursor:
    """The file read forward in blocks; positions are file offsets."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.size = size
        self.base = 0  # file offset of buffer[0]
        self.buffer = stream.read(_BLOCK)
        self.position = 0  # file offset of the next element

    def bytes_at(self, offset: int, length: int) -> bytes:
        """`length` bytes at file `offset` (reading further when the buffer ends first)."""
        start = offset - self.base
        if start < 0 or start + length > len(self.buffer):
            self.stream.seek(offset)
            self.base = offset
            self.buffer = self.stream.read(max(_BLOCK, length))
            start = 0
            if length > len(self.buffer):
                raise _Unexpected("the file ends inside an element")
        return self.buffer[start : start + length]


def read_plain(path: Path, defer_size: int, tags: frozenset[int] | None = None) -> FileDataset | None:
    """The instance in `path` as pydicom's `dcmread(path, defer_size=defer_size)` reads it, or None when the
    file is not the plain kind this reader knows (the caller then uses pydicom).

    `tags`: keep only these elements of the dataset (and its character set), for a caller that looks at a
    few: every element is still walked, so the file is judged as a whole, but the others are not built.
    """
    try:
        with path.open("rb") as stream:
            return _read(path, stream, defer_size, tags)
    except _Unexpected:
        return None


def _read(path: Path, stream: BinaryIO, defer_size: int, tags: frozenset[int] | None) -> FileDataset:
    size = path.stat().st_size
    cursor = _Cursor(stream, size)
    preamble = cursor.bytes_at(0, 132)
    if preamble[128:] != b"DICM":
        raise _Unexpected("no Part 10 preamble")
    cursor.position = 132
    meta, _ = _read_elements(cursor, implicit=False, defer_size=None, group=2, tags=None)
    syntax = meta.get(BaseTag(0x00020010))
    if not isinstance(syntax, RawDataElement) or not syntax.value:
        raise _Unexpected("no transfer syntax")
    transfer_syntax = UID(syntax.value.decode("ascii", "replace").strip("\x00 "))
    if not transfer_syntax.is_transfer_syntax or transfer_syntax in (ExplicitVRBigEndian, _DEFLATED):
        raise _Unexpected("a transfer syntax pydicom reads")
    implicit = transfer_syntax == ImplicitVRLittleEndian
    if implicit and cursor.position + 6 <= size and b"AA" <= cursor.bytes_at(cursor.position + 4, 2) <= b"ZZ":
        raise _Unexpected("explicit VR in a file that says implicit")  # pydicom reads it as explicit
    if tags is not None:
        tags = tags | {_CHARSET}
    elements, character_set = _read_elements(cursor, implicit=implicit, defer_size=defer_size, group=None, tags=tags)
    if not elements:
        raise _Unexpected("no dataset after the file meta information")
    ds = FileDataset(str(path), elements, preamble[:128], FileMetaDataset(meta), implicit, True)
    # the character set as pydicom's Dataset._character_set gives it, without converting the element
    ds.set_original_encoding(implicit, True, character_set)
    return ds


def _read_elements(
    cursor: _Cursor, *, implicit: bool, defer_size: int | None, group: int | None, tags: frozenset[int] | None
) -> tuple[dict[BaseTag, RawDataElement | DataElement], str | list[str]]:
    """Elements from `cursor.position` to the end of the file, or while they are of `group` (the file meta,
    always explicit VR); and the character set they declare (pydicom's default if none). Only those in
    `tags` are kept, when given. The common case, an element whose header and value are in the buffer
    already, is read without a method call."""
    elements: dict[BaseTag, RawDataElement | DataElement] = {}
    encoding: str | list[str] = default_encoding
    size = cursor.size
    position = cursor.position
    while position < size:
        if size - position < 8:
            raise _Unexpected("trailing bytes")
        buffer, start = cursor.buffer, position - cursor.base
        if start < 0 or start + 12 > len(buffer):  # the header is not (all) in the buffer: read on
            cursor.bytes_at(position, 12 if size - position >= 12 else 8)
            buffer, start = cursor.buffer, position - cursor.base
        if implicit:
            high, low, length = _IMPLICIT.unpack_from(buffer, start)
            vr = None
            value_tell = position + 8
        else:
            high, low, vr_bytes = _TAG_VR.unpack_from(buffer, start)
            if group is not None and high != group:
                break
            vr = _SHORT.get(vr_bytes)
            if vr is not None:
                length = _U16.unpack_from(buffer, start + 6)[0]
                value_tell = position + 8
            else:
                vr = _LONG.get(vr_bytes)
                if vr is None:
                    raise _Unexpected("an unknown VR, or implicit VR in an explicit file")
                if start + 12 > len(buffer):
                    raise _Unexpected("the file ends inside an element header")
                length = _U32.unpack_from(buffer, start + 8)[0]
                value_tell = position + 12
        tag = high << 16 | low
        if tag in _ITEM_TAGS:
            raise _Unexpected("an item or delimiter at the top level")
        if length == _UNDEFINED:
            # implicit VR: as pydicom decides it (for private and unknown tags it looks ahead for an item;
            # this reader leaves that to it)
            if vr is None and dictionary_vr(tag) == "SQ":
                vr = "SQ"
            if vr != "SQ":
                raise _Unexpected("undefined length outside a sequence")
            cursor.stream.seek(value_tell)
            try:
                sequence = read_sequence(cursor.stream, implicit, True, _UNDEFINED, encoding)
            except Exception:  # pydicom raises many types for bad input
                raise _Unexpected("a sequence pydicom cannot read") from None
            if tags is None or tag in tags:
                key = BaseTag(tag)
                elements[key] = DataElement(key, "SQ", sequence, value_tell, is_undefined_length=True)
            position = cursor.stream.tell()
            continue
        end = value_tell + length
        if end > size:
            raise _Unexpected("an element ends beyond the end of the file")
        if tags is not None and tag not in tags:
            position = end
            continue
        key = BaseTag(tag)
        value: bytes | None
        if defer_size is not None and length > defer_size and tag != _CHARSET:
            value = None
        elif not length:
            value = empty_value_for_VR(vr, raw=True)  # type: ignore[assignment]  # b"" or None when raw
        elif end - cursor.base <= len(buffer) and value_tell >= cursor.base:
            value = buffer[value_tell - cursor.base : end - cursor.base]
        else:
            value = cursor.bytes_at(value_tell, length)
        if tag == _CHARSET:
            encoding = convert_encodings(convert_string(value or b"", True))
        elements[key] = RawDataElement(key, vr, length, value, value_tell, implicit, True)
        position = end
    cursor.position = position
    return elements, encoding
