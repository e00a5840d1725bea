"""The receiver's own upper-layer protocol, spoken to by real peers and by raw sockets for the broken cases.

The raw-socket peer builds its A-ASSOCIATE-RQ with pynetdicom's encoder and frames P-DATA by hand, so that it
can stop half-way through a dataset or send garbage, which no real SCU does on purpose.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import CTImageStorage

from tests import factory
from tests.serve_process import StartBridge, spool_files
from tests.test_serve import send, storescu

pytestmark = pytest.mark.integration
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def associate_raw(port: int, called: str = "BRIDGE") -> socket.socket:
    """Open an association proposing CT Image Storage (context 1, Explicit VR LE); returns the socket."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID("1.2.840.10008.3.1.1.1")
    primitive.calling_ae_title = "RAWPEER"
    primitive.called_ae_title = called
    context = build_context(CTImageStorage, [EXPLICIT_LE])
    context.context_id = 1
    primitive.presentation_context_definition_list = [context]
    maximum = MaximumLengthNotification()
    maximum.maximum_length_received = 16384
    primitive.user_information = [maximum]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    peer = socket.create_connection(("127.0.0.1", port), timeout=30)
    peer.sendall(request.encode())
    header = _read(peer, 6)
    assert header[0] == 0x02, f"association not accepted (PDU type {header[0]})"
    _read(peer, struct.unpack(">L", header[2:])[0])
    return peer


def _read(peer: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = peer.recv(length - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def p_data(context_id: int, control: int, fragment: bytes) -> bytes:
    item = struct.pack(">LBB", len(fragment) + 2, context_id, control) + fragment
    return struct.pack(">BxL", 0x04, len(item)) + item


def store_command(ds: Dataset) -> bytes:
    """A C-STORE-RQ command set, Implicit VR Little Endian, with its group length."""
    command = Dataset()
    command.AffectedSOPClassUID = ds.SOPClassUID
    command.CommandField = 0x0001
    command.MessageID = 7
    command.Priority = 0
    command.CommandDataSetType = 0x0000
    command.AffectedSOPInstanceUID = ds.SOPInstanceUID
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, True
    write_dataset(body, command)
    encoded = body.getvalue()
    return struct.pack("<HHLL", 0, 0, 4, len(encoded)) + encoded


def dataset_bytes(ds: Dataset) -> bytes:
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return body.getvalue()


def incoming_files(folder: Path) -> list[Path]:
    return [p for p in (folder / "spool" / ".incoming").rglob("*") if p.is_file()]


def test_a_peer_that_disappears_mid_dataset_leaves_nothing(start_bridge: StartBridge, tmp_path: Path) -> None:
    """Half an instance, then the connection drops: nothing admitted, no partial file left, service up."""
    bridge = start_bridge()
    ds = factory.make_ct(factory.make_patient(3), rows=256, columns=256)
    data = dataset_bytes(ds)
    peer = associate_raw(bridge.port)
    peer.sendall(p_data(1, 0x03, store_command(ds)))
    peer.sendall(p_data(1, 0x00, data[: len(data) // 2]))  # not the last fragment
    deadline = time.monotonic() + 10
    while not incoming_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert incoming_files(tmp_path), "the dataset is written as it arrives"
    peer.close()
    deadline = time.monotonic() + 10
    while incoming_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert incoming_files(tmp_path) == []
    assert spool_files(tmp_path) == []
    assert send(bridge.port, [ds]) == [0]  # the whole instance, sent again, is taken
    assert bridge.wait_for("open", 1)["instances"] == 1


def test_fragments_in_many_small_pdus_are_reassembled(start_bridge: StartBridge, tmp_path: Path) -> None:
    """Command and dataset split over many P-DATA-TF PDUs (a 4 kB maximum PDU, as old PACS use)."""
    bridge = start_bridge(dimse="max_pdu_size = 4096")
    images = factory.make_series(factory.make_patient(4), count=3, rows=128, columns=128)
    files = factory.write_files(images, tmp_path / "in")
    sent = storescu(bridge.port, "BRIDGE", files, calling="OLDPACS")
    assert sent.returncode == 0, sent.stderr
    assert bridge.wait_for("open", 3)["instances"] == 3


def test_the_dataset_may_arrive_in_fragments_of_any_size(start_bridge: StartBridge, tmp_path: Path) -> None:
    """One PDV per byte range of odd sizes, the last one flagged: the spooled file holds exactly the bytes."""
    bridge = start_bridge()
    ds = factory.make_ct(factory.make_patient(6))
    data = dataset_bytes(ds)
    peer = associate_raw(bridge.port)
    command = store_command(ds)
    peer.sendall(p_data(1, 0x01, command[:10]) + p_data(1, 0x03, command[10:]))
    cuts = [0, 1, 7, 1000, 1001, len(data)]
    for start, end in zip(cuts, cuts[1:], strict=False):
        peer.sendall(p_data(1, 0x02 if end == len(data) else 0x00, data[start:end]))
    assert read_status(peer) == 0x0000
    peer.close()
    assert bridge.wait_for("open", 1)["instances"] == 1


def test_a_store_for_another_sop_class_than_its_context_is_refused(start_bridge: StartBridge, tmp_path: Path) -> None:
    bridge = start_bridge()
    ds = factory.make_mr(factory.make_patient(9))  # sent on the CT Image Storage context
    peer = associate_raw(bridge.port)
    peer.sendall(p_data(1, 0x03, store_command(ds)) + p_data(1, 0x02, dataset_bytes(ds)))
    assert read_status(peer) == 0x0122  # SOP class not supported
    peer.close()
    assert spool_files(tmp_path) == [] and incoming_files(tmp_path) == []


def read_status(peer: socket.socket) -> int:
    """The Status of the next response (a command set in one P-DATA-TF)."""
    header = _read(peer, 6)
    assert header[0] == 0x04, f"expected P-DATA-TF, got PDU type {header[0]}"
    response = _read(peer, struct.unpack(">L", header[2:])[0])
    status_at = response.index(struct.pack("<HHL", 0x0000, 0x0900, 2))
    return int(struct.unpack("<H", response[status_at + 8 : status_at + 10])[0])


def test_garbage_instead_of_an_association_request_is_aborted(start_bridge: StartBridge) -> None:
    bridge = start_bridge()
    peer = socket.create_connection(("127.0.0.1", bridge.port), timeout=30)
    peer.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while chunk := peer.recv(1024):
        answer += chunk
    peer.close()
    assert answer[:1] == b"\x07"  # A-ABORT, then the connection closes
    assert send(bridge.port, [factory.make_ct(factory.make_patient(7))]) == [0]


def test_associations_beyond_the_limit_are_rejected_transiently(start_bridge: StartBridge) -> None:
    bridge = start_bridge(dimse="max_associations = 2\nlisteners = 1")  # the limit is per listener process
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage)
    held = [ae.associate("127.0.0.1", bridge.port, ae_title="BRIDGE") for _ in range(2)]
    assert all(assoc.is_established for assoc in held)
    third = ae.associate("127.0.0.1", bridge.port, ae_title="BRIDGE")
    try:
        assert third.is_rejected
        rejection = third.acceptor.primitive
        assert (rejection.result, rejection.result_source, rejection.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        for assoc in held:
            assoc.release()
    assert send(bridge.port, [factory.make_ct(factory.make_patient(8))]) == [0]  # free again
