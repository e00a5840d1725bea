"""The listener's transport, end to end against a real `serve` process: TLS (with and without client
certificates), a 1 GiB instance received and ingested in bounded memory, every common transfer syntax stored
as it arrived, and the segmentation SOP classes (including Label Map Segmentation, newer than pydicom)."""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import ipaddress
import os
import socket
import sqlite3
import ssl
import struct
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    SegmentationStorage,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.association import Association

from bridge.remotes.scu import c_store
from tests import factory
from tests.serve_process import DCMTK_ENV, StartBridge

LABEL_MAP_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.7"
SUCCESS = 0x0000
PIXEL_DATA = 0x7FE00010
MIB = 1024 * 1024
Contexts = Sequence[tuple[str, Sequence[str]]]  # (SOP class, transfer syntaxes) per presentation context


# --------------------------------------------------------------------------
# TLS material
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    usage: x509.ObjectIdentifier | None,
    san: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    """A certificate valid now for a day; `usage` None makes it a CA (strict-X.509-clean either way)."""
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    if usage is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_tls_files(folder: Path) -> TlsFiles:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca_name = _name("pacs-bridge test CA")
    ca = _issue("pacs-bridge test CA", ca_key, ca_name, ca_key, usage=None)
    server = _issue(
        "127.0.0.1",
        server_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client = _issue("MODALITY", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    files = TlsFiles(
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        client_cert=folder / "client.pem",
        client_key=folder / "client.key",
    )
    for certificate, path in ((ca, files.ca_cert), (server, files.server_cert), (client, files.client_cert)):
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, files.server_key)
    _write_key(client_key, files.client_key)
    return files


def tls_dimse(files: TlsFiles, *, require_client_certificate: bool = False) -> str:
    """`[dimse]` keys for TLS; dotted keys, because the harness puts `dimse=` text before other tables."""
    text = f'tls.cert_file = "{files.server_cert}"\ntls.key_file = "{files.server_key}"\n'
    if require_client_certificate:
        text += f'tls.ca_file = "{files.ca_cert}"\n'
    return text


def client_context(files: TlsFiles, *, with_certificate: bool) -> ssl.SSLContext:
    """A client context that verifies the server against the test CA (and the 127.0.0.1 SAN)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca_cert))
    if with_certificate:
        context.load_cert_chain(str(files.client_cert), str(files.client_key))
    return context


# --------------------------------------------------------------------------
# Clients and the index
# --------------------------------------------------------------------------


@contextmanager
def association(
    port: int,
    contexts: Contexts,
    *,
    called: str = "BRIDGE",
    tls: tuple[ssl.SSLContext, str] | None = None,
    timeout: float = 30,
) -> Iterator[Association]:
    """A pynetdicom association from MODALITY, one presentation context per (SOP class, syntaxes) pair;
    released (or aborted) on exit. pynetdicom 3.0.4 drops its socket without closing it when shutdown()
    fails (a peer that already closed, a TLS alert), so the socket is closed here too: the suite turns the
    ResourceWarning into an error."""
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = timeout
    for sop_class, syntaxes in contexts:
        ae.add_requested_context(sop_class, syntaxes)
    sockets: list[socket.socket] = []

    def opened(event: evt.Event) -> None:
        connection = event.assoc.dul.socket
        if connection is not None and connection.socket is not None:
            sockets.append(connection.socket)

    assoc = ae.associate("127.0.0.1", port, ae_title=called, tls_args=tls, evt_handlers=[(evt.EVT_CONN_OPEN, opened)])
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()
        if assoc.is_alive():
            assoc.abort()
        for connection in sockets:
            connection.close()


def send_all(port: int, contexts: Contexts, datasets: list[Dataset], **options: Any) -> list[int]:
    """C-STORE each dataset on one association; the statuses answered (-1: no answer)."""
    with association(port, contexts, **options) as assoc:
        assert assoc.is_established, "association was not accepted"
        statuses = []
        for ds in datasets:
            answer = c_store(assoc, ds)
            statuses.append(int(answer.Status) if "Status" in answer else -1)
        return statuses


def can_associate(port: int, **options: Any) -> bool:
    """Whether an association (CT Image Storage) is accepted; released at once."""
    with association(port, [(CTImageStorage, [ExplicitVRLittleEndian])], **options) as assoc:
        return bool(assoc.is_established)


def storescu(port: int, files: list[Path], *, called: str = "BRIDGE", timeout: float = 120) -> str:
    """Send with DCMTK storescu (verbose); fails unless every C-STORE was answered with Success."""
    completed = subprocess.run(
        ["storescu", "-v", "-R", "-aet", "MODALITY", "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert output.count("Received Store Response (Success)") == len(files), output
    return output


@dataclass(frozen=True)
class IndexedInstance:
    sop_class_uid: str
    transfer_syntax_uid: str
    path: Path
    size: int


def indexed_instances(folder: Path) -> list[IndexedInstance]:
    """What the bridge's SQLite index holds (read-only, so the running service is never blocked)."""
    database = folder / "bridge.db"
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as connection:
        rows = connection.execute("SELECT sop_class_uid, transfer_syntax_uid, path, size FROM instance").fetchall()
    return [IndexedInstance(c, t, folder / "store" / p, int(s)) for c, t, p, s in rows]


# --------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------


def fake_frame(label: str, size: int = 4000) -> bytes:
    """Stand-in compressed bytes (even length). The bridge never decodes pixel data, so these need not be a
    valid codestream: what is tested is that the encapsulated bytes come out exactly as they went in."""
    body = hashlib.sha256(label.encode()).digest() * (size // 32)
    return b"\xff\xd8" + body[: size - 4] + b"\xff\xd9"


def ct_in(transfer_syntax: str, patient: factory.PatientSpec, study_uid: str, number: int) -> Dataset:
    """One CT encoded in `transfer_syntax`: native or real RLE pixels via the factory, otherwise a fake frame
    encapsulated with the Image Pixel attributes that syntax implies."""
    if transfer_syntax in (ImplicitVRLittleEndian, ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, RLELossless):
        return factory.make_ct(patient, study_uid=study_uid, instance_number=number, transfer_syntax=transfer_syntax)
    ds = factory.make_ct(patient, study_uid=study_uid, instance_number=number)
    if transfer_syntax == JPEGBaseline8Bit:  # 8-bit only
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = encapsulate([fake_frame(transfer_syntax)])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = UID(transfer_syntax)
    if transfer_syntax == JPEGBaseline8Bit:
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = 10
        ds.LossyImageCompressionMethod = "ISO_10918_1"
    return ds


def write_large_ct(path: Path, frames: int, rows: int = 512, columns: int = 512) -> tuple[int, str]:
    """A multi-frame CT written without holding its pixels: the header by pydicom, then the Pixel Data element
    header (Explicit VR LE, OW, defined length) and the pixel bytes streamed in 1 MiB chunks. Returns the
    Pixel Data length and its SHA-256."""
    ds = factory.make_ct(factory.make_patient(7), rows=rows, columns=columns)
    del ds.PixelData
    ds.NumberOfFrames = frames
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    length = frames * rows * columns * 2
    assert length % 2 == 0 and length < 0xFFFFFFFF
    seed = os.urandom(MIB)
    digest = hashlib.sha256()
    with path.open("ab") as out:
        out.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, length))
        remaining, turn = length, 0
        while remaining:
            shift = (turn * 4099) % MIB  # every chunk different, so a lost or repeated chunk changes the hash
            chunk = (seed[shift:] + seed[:shift])[: min(MIB, remaining)]
            out.write(chunk)
            digest.update(chunk)
            remaining -= len(chunk)
            turn += 1
    return length, digest.hexdigest()


def pixel_data_digest(path: Path, offset: int, length: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        stream.seek(offset)
        remaining = length
        while remaining:
            chunk = stream.read(min(8 * MIB, remaining))
            assert chunk, f"{path} ends inside Pixel Data"
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------
# Process memory (from /proc: psutil is not a dependency)
# --------------------------------------------------------------------------


def rss_bytes(pid: int) -> int | None:
    """VmRSS of a process, or None once it has gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def descendants(root: int) -> list[int]:
    """`root` and every process below it (serve, its ingest workers, multiprocessing's helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        parent = int(stat.rpartition(")")[2].split()[1])  # the name may contain spaces and parentheses
        children.setdefault(parent, []).append(int(entry.name))
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        queue.extend(children.get(pid, []))
    return found


class MemoryWatch:
    """Peak RSS per process of a tree, against a baseline taken when the watch is created."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.baseline = {pid: rss for pid in descendants(root) if (rss := rss_bytes(pid)) is not None}
        self.peak = dict(self.baseline)

    def sample(self) -> None:
        for pid in descendants(self.root):
            rss = rss_bytes(pid)
            if rss is None:
                continue
            self.baseline.setdefault(pid, rss)  # a process started later (a replaced worker) from its first sample
            self.peak[pid] = max(self.peak[pid], rss) if pid in self.peak else rss

    def growth(self) -> dict[int, int]:
        return {pid: self.peak[pid] - self.baseline[pid] for pid in self.peak}

    def describe(self) -> str:
        return ", ".join(
            f"pid {pid}{' (serve)' if pid == self.root else ''}: {self.baseline[pid] / MIB:.0f} -> "
            f"{self.peak[pid] / MIB:.0f} MiB (+{growth / MIB:.1f})"
            for pid, growth in sorted(self.growth().items())
        )


# --------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


CT_CONTEXT = [(CTImageStorage, [ExplicitVRLittleEndian])]


@pytest.mark.integration
def test_tls_listener_accepts_tls_and_refuses_plain_associations(
    start_bridge: StartBridge, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """With a certificate configured the listener speaks TLS only: a plain association must not get through."""
    bridge = start_bridge(dimse=tls_dimse(tls_files))
    assert "(TLS)" in bridge.log.read_text()
    ct = factory.make_ct(factory.make_patient(1))

    tls = (client_context(tls_files, with_certificate=False), "127.0.0.1")
    assert send_all(bridge.port, CT_CONTEXT, [ct], tls=tls) == [SUCCESS]
    bridge.wait_for("open", 1)

    assert not can_associate(bridge.port)
    assert [i.sop_class_uid for i in indexed_instances(tmp_path)] == [CTImageStorage]


@pytest.mark.integration
def test_tls_listener_with_ca_file_requires_a_client_certificate(
    start_bridge: StartBridge, tmp_path: Path, tls_files: TlsFiles
) -> None:
    """`ca_file` makes the certificate the caller's credential: none, no association; the CA's, accepted."""
    bridge = start_bridge(dimse=tls_dimse(tls_files, require_client_certificate=True))

    anonymous = (client_context(tls_files, with_certificate=False), "127.0.0.1")
    assert not can_associate(bridge.port, tls=anonymous)

    certified = (client_context(tls_files, with_certificate=True), "127.0.0.1")
    ct = factory.make_ct(factory.make_patient(2))
    assert send_all(bridge.port, CT_CONTEXT, [ct], tls=certified) == [SUCCESS]
    bridge.wait_for("open", 1)
    assert len(indexed_instances(tmp_path)) == 1


@pytest.mark.integration
def test_an_idle_connection_does_not_stall_a_tls_listener(start_bridge: StartBridge, tls_files: TlsFiles) -> None:
    """A caller that connects and never starts the TLS handshake must cost one thread, not the listener."""
    bridge = start_bridge(dimse=tls_dimse(tls_files))
    tls = (client_context(tls_files, with_certificate=False), "127.0.0.1")
    with socket.create_connection(("127.0.0.1", bridge.port)):  # says nothing
        time.sleep(0.5)
        accepted = can_associate(bridge.port, tls=tls, timeout=5)
    assert accepted
    assert can_associate(bridge.port, tls=tls)


@pytest.fixture
def remove_big_files(tmp_path: Path) -> Iterator[None]:
    """Delete every file over 64 MiB under tmp_path afterwards (source, spool, store, quarantine, whatever
    the outcome): pytest keeps the last few tmp_paths."""
    yield
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size > 64 * MIB:
            path.unlink(missing_ok=True)


GROWTH_LIMIT = 200 * MIB + 16 * MIB  # the budget, plus a margin for allocator noise


@pytest.mark.integration
@pytest.mark.slow
def test_a_1_gib_instance_is_received_and_ingested_in_bounded_memory(
    start_bridge: StartBridge, tmp_path: Path, remove_big_files: None
) -> None:
    """Received to a file and ingested by streaming: neither serve nor a worker may hold the pixels."""
    bridge = start_bridge()
    assert bridge.process is not None
    # warm up first, so that imports and caches filled by the first instances do not count as growth
    warm = factory.write_files(factory.make_series(factory.make_patient(8), count=4), tmp_path / "warm")
    storescu(bridge.port, warm)
    bridge.wait_for("open", 4)

    source = tmp_path / "large.dcm"
    frames = 2048  # 2048 x 512 x 512 x 2 bytes = 1 GiB of Pixel Data
    length, digest = write_large_ct(source, frames)
    assert source.stat().st_size > length

    watch = MemoryWatch(bridge.process.pid)
    started = time.monotonic()
    sender = subprocess.Popen(
        ["storescu", "-v", "-R", "-aet", "MODALITY", "-aec", "BRIDGE", "127.0.0.1", str(bridge.port), str(source)],
        env=DCMTK_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        indexed: list[IndexedInstance] = []
        while time.monotonic() - started < 600:
            watch.sample()
            indexed = [i for i in indexed_instances(tmp_path) if i.size > length]
            if indexed and sender.poll() is not None:
                break
            time.sleep(0.2)
    finally:
        if sender.poll() is None:
            sender.kill()
        output = sender.communicate(timeout=30)[0]
    elapsed = time.monotonic() - started
    print(f"1 GiB instance sent and indexed in {elapsed:.1f} s; peak RSS growth: {watch.describe()}")
    assert sender.returncode == 0 and "Received Store Response (Success)" in output, output
    assert indexed, f"not indexed after {elapsed:.0f} s:\n{bridge.log.read_text()[-3000:]}"

    [stored] = indexed
    size = stored.path.stat().st_size
    assert size == stored.size and length < size < length + MIB
    header = dcmread(stored.path, stop_before_pixels=True)
    assert header.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and int(header.NumberOfFrames) == frames
    deferred = dcmread(stored.path, defer_size=1024)  # Pixel Data left in the file: only its position is read
    element = deferred.get_item(PIXEL_DATA, keep_deferred=True)  # pydicom 3 would read it otherwise
    assert isinstance(element, RawDataElement)
    assert element.length == length and element.value_tell + length == size
    assert pixel_data_digest(stored.path, element.value_tell, length) == digest

    assert all(growth <= GROWTH_LIMIT for growth in watch.growth().values()), watch.describe()


SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEG2000Lossless,
    RLELossless,
]


@pytest.mark.integration
def test_each_transfer_syntax_is_stored_as_received(start_bridge: StartBridge, tmp_path: Path) -> None:
    """The bridge de-identifies headers only: the transfer syntax and the (encapsulated) pixel bytes stay."""
    bridge = start_bridge()
    patient, study_uid = factory.make_patient(3), generate_uid()
    sent = {ts: ct_in(ts, patient, study_uid, number) for number, ts in enumerate(SYNTAXES, start=1)}

    contexts = [(CTImageStorage, [ts]) for ts in SYNTAXES]  # one presentation context per syntax
    with association(bridge.port, contexts) as assoc:
        assert {str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts} == set(SYNTAXES)
        statuses = [int(c_store(assoc, ds).get("Status", -1)) for ds in sent.values()]
    assert statuses == [SUCCESS] * len(SYNTAXES)
    bridge.wait_for("open", len(SYNTAXES))

    indexed = indexed_instances(tmp_path)
    stored = {i.transfer_syntax_uid: i for i in indexed}
    assert len(indexed) == len(SYNTAXES) and set(stored) == set(SYNTAXES)
    for ts, ds in sent.items():
        result = dcmread(stored[ts].path)
        assert result.file_meta.TransferSyntaxUID == ts
        assert result.PixelData == ds.PixelData, f"Pixel Data changed in {UID(ts).name}"
        assert result.PatientID != patient.patient_id  # it was de-identified on the way


@pytest.mark.integration
def test_segmentation_and_label_map_segmentation_are_accepted(start_bridge: StartBridge, tmp_path: Path) -> None:
    """SEG via DCMTK; Label Map Segmentation (unknown to pydicom 3.0 and DCMTK 3.6.7) via pynetdicom by UID."""
    bridge = start_bridge()
    seg = factory.make_seg(factory.make_series(factory.make_patient(4), count=2))
    storescu(bridge.port, factory.write_files([seg], tmp_path / "seg"))

    label_map = copy.deepcopy(seg)
    label_map.SOPClassUID = label_map.file_meta.MediaStorageSOPClassUID = UID(LABEL_MAP_SEGMENTATION_STORAGE)
    label_map.SOPInstanceUID = label_map.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    label_map.SeriesInstanceUID = generate_uid()
    contexts = [(LABEL_MAP_SEGMENTATION_STORAGE, [ExplicitVRLittleEndian])]  # by UID: pydicom lacks its name
    assert send_all(bridge.port, contexts, [label_map]) == [SUCCESS]

    bridge.wait_for("open", 2)
    assert sorted(i.sop_class_uid for i in indexed_instances(tmp_path)) == sorted(
        [SegmentationStorage, LABEL_MAP_SEGMENTATION_STORAGE]
    )
