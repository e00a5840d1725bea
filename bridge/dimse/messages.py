"""DIMSE command sets (PS3.7 section 9.3, Annex E): the few the receiver reads and answers.

A command set is a handful of group 0000 elements, always Implicit VR Little Endian, so it is parsed and
built here with `struct` rather than through a pydicom Dataset on every C-STORE.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
NO_DATASET = 0x0101

_AFFECTED_SOP_CLASS = 0x00000002
_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_MESSAGE_ID_RESPONDED = 0x00000120
_DATASET_TYPE = 0x00000800
_STATUS = 0x00000900
_AFFECTED_SOP_INSTANCE = 0x00001000
_ELEMENT = struct.Struct("<HHL")
_US = struct.Struct("<H")


class MalformedCommand(ValueError):
    """A command set that cannot be parsed or lacks a required element."""


@dataclass(frozen=True)
class Command:
    command_field: int
    message_id: int
    has_dataset: bool
    sop_class_uid: str = ""
    sop_instance_uid: str = ""


def decode_command(data: bytes) -> Command:
    """Parse a received command set."""
    elements: dict[int, bytes] = {}
    position = 0
    while position < len(data):
        if position + 8 > len(data):
            raise MalformedCommand("truncated command element")
        group, element, length = _ELEMENT.unpack_from(data, position)
        position += 8
        if position + length > len(data):
            raise MalformedCommand("command element longer than the command set")
        elements[group << 16 | element] = data[position : position + length]
        position += length
    try:
        return Command(
            command_field=_US.unpack(elements[_COMMAND_FIELD][:2])[0],
            message_id=_US.unpack(elements.get(_MESSAGE_ID, b"\x00\x00")[:2])[0],
            has_dataset=_US.unpack(elements[_DATASET_TYPE][:2])[0] != NO_DATASET,
            sop_class_uid=_text(elements.get(_AFFECTED_SOP_CLASS, b"")),
            sop_instance_uid=_text(elements.get(_AFFECTED_SOP_INSTANCE, b"")),
        )
    except (KeyError, struct.error):
        raise MalformedCommand("command set without Command Field or Command Data Set Type") from None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ")


def encode_response(request: Command, response_field: int, status: int) -> bytes:
    """The response command set (no dataset) to `request`, with `status`."""
    body = bytearray()
    if request.sop_class_uid:
        body += _uid(_AFFECTED_SOP_CLASS, request.sop_class_uid)
    body += _us(_COMMAND_FIELD, response_field)
    body += _us(_MESSAGE_ID_RESPONDED, request.message_id)
    body += _us(_DATASET_TYPE, NO_DATASET)
    body += _us(_STATUS, status)
    if request.sop_instance_uid:
        body += _uid(_AFFECTED_SOP_INSTANCE, request.sop_instance_uid)
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + bytes(body)


def _us(tag: int, value: int) -> bytes:
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, 2) + _US.pack(value)


def _uid(tag: int, value: str) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00"
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(data)) + data
