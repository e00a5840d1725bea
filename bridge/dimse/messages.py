"""DIMSE command sets (PS3.7 section 9.3, Annex E): the few the receiver reads and answers, and the C-STORE
requests of C-GET sub-operations.

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
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_CANCEL_RQ = 0x0FFF
NO_DATASET = 0x0101
HAS_DATASET = 0x0001  # any value but NO_DATASET says a dataset follows

_AFFECTED_SOP_CLASS = 0x00000002
_COMMAND_FIELD = 0x00000100
_MESSAGE_ID = 0x00000110
_MESSAGE_ID_RESPONDED = 0x00000120
_MOVE_DESTINATION = 0x00000600
_PRIORITY = 0x00000700
_DATASET_TYPE = 0x00000800
_STATUS = 0x00000900
_ERROR_COMMENT = 0x00000902
_AFFECTED_SOP_INSTANCE = 0x00001000
_REMAINING = 0x00001020
_COMPLETED = 0x00001021
_FAILED = 0x00001022
_WARNING = 0x00001023
_ERROR_COMMENT_LENGTH = 64  # LO
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
    message_id_responded: int = 0  # responses and C-CANCEL-RQ
    status: int | None = None  # responses
    move_destination: str = ""  # C-MOVE-RQ


@dataclass(frozen=True)
class SubOperationCounts:
    """The Number of Remaining/Completed/Failed/Warning Sub-operations of a C-MOVE-RSP or C-GET-RSP;
    `remaining` None leaves it out (a final response)."""

    remaining: int | None
    completed: int
    failed: int
    warning: int


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
            message_id_responded=_us_value(elements.get(_MESSAGE_ID_RESPONDED)) or 0,
            status=_us_value(elements.get(_STATUS)),
            move_destination=_text(elements.get(_MOVE_DESTINATION, b"")).strip(),
        )
    except (KeyError, struct.error):
        raise MalformedCommand("command set without Command Field or Command Data Set Type") from None


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip("\x00 ")


def _us_value(value: bytes | None) -> int | None:
    return _US.unpack(value[:2])[0] if value is not None and len(value) >= 2 else None


def encode_response(
    request: Command,
    response_field: int,
    status: int,
    *,
    has_dataset: bool = False,
    counts: SubOperationCounts | None = None,
    error_comment: str = "",
) -> bytes:
    """The response command set to `request`, with `status`: an identifier follows when `has_dataset`,
    C-MOVE/C-GET responses carry their sub-operation `counts`; `error_comment` (failures) is cut to 64
    characters."""
    body = bytearray()
    if request.sop_class_uid:
        body += _uid(_AFFECTED_SOP_CLASS, request.sop_class_uid)
    body += _us(_COMMAND_FIELD, response_field)
    body += _us(_MESSAGE_ID_RESPONDED, request.message_id)
    body += _us(_DATASET_TYPE, HAS_DATASET if has_dataset else NO_DATASET)
    body += _us(_STATUS, status)
    if error_comment:
        body += _text_element(_ERROR_COMMENT, error_comment[:_ERROR_COMMENT_LENGTH])
    if request.sop_instance_uid:
        body += _uid(_AFFECTED_SOP_INSTANCE, request.sop_instance_uid)
    if counts is not None:
        if counts.remaining is not None:
            body += _us(_REMAINING, counts.remaining)
        body += _us(_COMPLETED, counts.completed) + _us(_FAILED, counts.failed) + _us(_WARNING, counts.warning)
    return _command_set(body)


def encode_store_request(*, message_id: int, sop_class_uid: str, sop_instance_uid: str) -> bytes:
    """A C-STORE-RQ (a dataset follows) of a C-GET sub-operation (which names no move originator)."""
    body = bytearray()
    body += _uid(_AFFECTED_SOP_CLASS, sop_class_uid)
    body += _us(_COMMAND_FIELD, C_STORE_RQ)
    body += _us(_MESSAGE_ID, message_id)
    body += _us(_PRIORITY, 0)  # medium
    body += _us(_DATASET_TYPE, HAS_DATASET)
    body += _uid(_AFFECTED_SOP_INSTANCE, sop_instance_uid)
    return _command_set(body)


def _command_set(body: bytearray) -> bytes:
    """The elements with the Command Group Length in front."""
    return _ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + bytes(body)


def _text_element(tag: int, value: str) -> bytes:
    data = value.encode("ascii", "replace")
    if len(data) % 2:
        data += b" "
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(data)) + data


def _us(tag: int, value: int) -> bytes:
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, 2) + _US.pack(value)


def _uid(tag: int, value: str) -> bytes:
    data = value.encode("ascii")
    if len(data) % 2:
        data += b"\x00"
    return _ELEMENT.pack(tag >> 16, tag & 0xFFFF, len(data)) + data
