"""The Part 10 header put in front of a received dataset, so that the spool holds ordinary DICOM files.

The dataset itself is stored as it arrived, in the transfer syntax of its presentation context (PS3.10 7.1:
file meta information, Explicit VR Little Endian, then the data set).
"""

from __future__ import annotations

import struct

from bridge.deid.deidentify import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

_SHORT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_PREAMBLE = b"\x00" * 128 + b"DICM"
_VERSION = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _element(element: int, vr: bytes, text: str, pad: bytes) -> bytes:
    data = text.encode("ascii", "replace")[:64]
    if len(data) % 2:
        data += pad
    return _SHORT.pack(0x0002, element, vr, len(data)) + data


def file_meta(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str, source_ae_title: str) -> bytes:
    """Preamble, DICM prefix and file meta group for a dataset received over the network."""
    body = (
        _VERSION
        + _element(0x0002, b"UI", sop_class_uid, b"\x00")
        + _element(0x0003, b"UI", sop_instance_uid, b"\x00")
        + _element(0x0010, b"UI", transfer_syntax_uid, b"\x00")
        + _element(0x0012, b"UI", str(IMPLEMENTATION_CLASS_UID), b"\x00")
        + _element(0x0013, b"SH", IMPLEMENTATION_VERSION, b" ")
        + _element(0x0016, b"AE", source_ae_title, b" ")
    )
    return _PREAMBLE + struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(body)) + body
