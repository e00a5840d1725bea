"""`pacs-bridge serve` with real peers: DCMTK's echoscu/storescu and pynetdicom's SCU over real sockets."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification

from bridge.remotes.scu import c_store
from storage.durable import INCOMING
from storage.spool import Spool
from tests import factory
from tests.dimse.test_transport import descendants
from tests.serve_process import DCMTK_ENV, StartBridge, spool_files

pytestmark = pytest.mark.integration


def echoscu(port: int, called: str, calling: str = "MODALITY") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["echoscu", "-v", "-aet", calling, "-aec", called, "127.0.0.1", str(port)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=60,
    )


def storescu(port: int, called: str, files: list[Path], calling: str = "MODALITY") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["storescu", "-R", "-aet", calling, "-aec", called, "127.0.0.1", str(port), *map(str, files)],
        capture_output=True,
        text=True,
        env=DCMTK_ENV,
        timeout=300,
    )


def send(port: int, datasets: list[Dataset], called: str = "BRIDGE", calling: str = "SCU") -> list[int]:
    """pynetdicom SCU: one association, the status of each C-STORE."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        return [int(c_store(assoc, ds).Status) for ds in datasets]
    finally:
        assoc.release()


def audit_actions(tmp_path: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        return list(db.execute("SELECT action, detail FROM auditevent"))


def test_echo_store_and_index_with_dcmtk(start_bridge: StartBridge, tmp_path: Path, database_url: str) -> None:
    bridge = start_bridge(database_url)
    assert echoscu(bridge.port, "LUNG").returncode == 0
    patient = factory.make_patient(1)
    images = factory.make_study(patient, study_date="20240105", modalities=("CT", "PT"), per_series=3)
    others = [factory.make_sr(patient, images[:3]), factory.make_seg(images[:3])]
    files = factory.write_files(images + others, tmp_path / "in")

    sent = storescu(bridge.port, "LUNG", files)

    assert sent.returncode == 0, sent.stderr
    counts = bridge.wait_for("lung", 8)
    assert (counts["subjects"], counts["timepoints"], counts["series"], counts["instances"]) == (1, 1, 4, 8)
    stored = list((tmp_path / "store" / "lung").rglob("*.dcm"))
    assert len(stored) == 8
    for path in stored:
        data = path.read_bytes()
        assert patient.patient_id.encode() not in data and b"LUNG-0001" in data
    deadline = time.monotonic() + 30
    while spool_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spool_files(tmp_path) == []  # each entry is cleared once ingested
    bridge.stop()
    log = bridge.log.read_text()
    for ds in images + others:
        for secret in (patient.patient_id, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.AccessionNumber)):
            assert secret not in log, "identified data in the service log"


def test_unknown_called_or_calling_ae_is_rejected_and_audited(start_bridge: StartBridge, tmp_path: Path) -> None:
    bridge = start_bridge()
    unknown_called = echoscu(bridge.port, "NOBODY")
    assert (
        unknown_called.returncode != 0
        and "Called AE Title Not Recognized" in unknown_called.stdout + unknown_called.stderr
    )
    stranger = echoscu(bridge.port, "LUNG", calling="STRANGER")
    assert stranger.returncode != 0 and "Calling AE Title Not Recognized" in stranger.stdout + stranger.stderr
    wrong_address = echoscu(bridge.port, "LUNG", calling="ELSEWHERE")
    assert (
        wrong_address.returncode != 0
        and "Calling AE Title Not Recognized" in wrong_address.stdout + wrong_address.stderr
    )
    assert echoscu(bridge.port, "LUNG", calling="PACS").returncode == 0  # allowed from 127.0.0.0/8
    assert echoscu(bridge.port, "BRIDGE", calling="ANYONE").returncode == 0  # default project: anyone
    rejected = [detail for action, detail in audit_actions(tmp_path) if action == "association.rejected"]
    assert len(rejected) == 3 and any("NOBODY" in d for d in rejected) and any("STRANGER" in d for d in rejected)


def test_bad_instances_get_failure_statuses_and_quarantine(start_bridge: StartBridge, tmp_path: Path) -> None:
    bridge = start_bridge()
    patient = factory.make_patient(2)
    good = factory.make_ct(patient)
    no_pixels = factory.make_ct(patient, instance_number=2)
    del no_pixels.PixelData
    no_patient = factory.make_ct(patient, instance_number=3)
    del no_patient.PatientID
    bad_uid = factory.make_ct(patient, instance_number=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid UID set on purpose
        bad_uid.SeriesInstanceUID = "1.2.3.04"

    statuses = send(bridge.port, [no_pixels, no_patient, bad_uid, good])

    assert statuses == [0xA900, 0xC000, 0xC000, 0x0000]
    bridge.wait_for("open", 1)
    quarantined = list((tmp_path / "quarantine").rglob("*.dcm"))
    assert len(quarantined) == 3
    assert bridge.status()["open"]["quarantined"] == 3
    assert echoscu(bridge.port, "BRIDGE").returncode == 0  # the service is still up


def test_truncated_dataset_is_refused(start_bridge: StartBridge, tmp_path: Path) -> None:
    """A dataset whose Pixel Data is cut short on the wire (sent from a truncated file, unparsed)."""
    bridge = start_bridge()
    [path] = factory.write_files([factory.make_ct(factory.make_patient(3), rows=128, columns=128)], tmp_path / "in")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 1000])
    ae = AE(ae_title="SCU")
    ae.add_requested_context(CTImageStorage, pydicom.uid.ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", bridge.port, ae_title="BRIDGE")
    assert assoc.is_established
    status = c_store(assoc, path)  # pynetdicom streams the file's bytes without decoding them
    assoc.release()
    assert int(status.Status) == 0xC000
    assert len(list((tmp_path / "quarantine").rglob("*.dcm"))) == 1


def test_low_disk_space_answers_out_of_resources(start_bridge: StartBridge, tmp_path: Path) -> None:
    bridge = start_bridge(dimse="min_free_space_mb = 1000000000")
    statuses = send(bridge.port, [factory.make_ct(factory.make_patient(4))])
    assert statuses == [0xA700]
    assert spool_files(tmp_path) == [] and not list((tmp_path / "quarantine").rglob("*.dcm"))


def test_sixteen_associations_at_once_and_a_stalled_peer(start_bridge: StartBridge, tmp_path: Path) -> None:
    bridge = start_bridge()
    connected = time.monotonic()
    stalled = socket.create_connection(("127.0.0.1", bridge.port))  # connects, never speaks
    patients = [factory.make_patient(10 + n) for n in range(16)]
    batches = [factory.make_series(p, count=3) for p in patients]
    results: list[list[int]] = [[] for _ in batches]

    def run(index: int) -> None:
        results[index] = send(bridge.port, batches[index])

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == [[0, 0, 0]] * 16
    assert bridge.wait_for("open", 48)["subjects"] == 16
    # the stalled peer never blocked anyone, and the server hangs up on it (ARTIM timer, acse_timeout = 5 s)
    stalled.settimeout(30)
    try:
        while stalled.recv(1024):  # whatever it sends (an A-ABORT at most), the connection then closes
            pass
    except ConnectionResetError:
        pass
    assert time.monotonic() - connected < 25
    stalled.close()


def test_sigterm_finishes_the_work(start_bridge: StartBridge, tmp_path: Path) -> None:
    bridge = start_bridge()
    datasets = factory.make_series(factory.make_patient(5), count=20)
    assert send(bridge.port, datasets) == [0] * 20
    assert bridge.stop() == 0  # clean exit; queued work is flushed before it
    assert spool_files(tmp_path) == []
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        assert db.execute("SELECT count(*) FROM instance").fetchone() == (20,)


def test_sigkill_loses_nothing_acknowledged(start_bridge: StartBridge, tmp_path: Path, database_url: str) -> None:
    """Kill the real server (and its workers) with SIGKILL during a four-association send; restart; every
    instance answered Success is indexed, every row has its file, no partial file is left anywhere."""
    bridge = start_bridge(database_url)
    batches = [factory.make_series(factory.make_patient(20 + n), count=40, rows=128, columns=128) for n in range(4)]
    acknowledged: list[str] = []
    lock = threading.Lock()

    def run(datasets: list[Dataset]) -> None:
        ae = AE(ae_title="SCU")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", bridge.port, ae_title="BRIDGE")
        if not assoc.is_established:
            return
        for ds in datasets:
            sop = str(ds.SOPInstanceUID)
            try:
                answer = c_store(assoc, ds)
            except Exception:
                return
            if answer and getattr(answer, "Status", None) == 0:
                with lock:
                    acknowledged.append(sop)
            if not assoc.is_established:
                return
        assoc.release()

    threads = [threading.Thread(target=run, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 60 and time.monotonic() < deadline:
        time.sleep(0.01)
    bridge.kill()
    for thread in threads:
        thread.join(60)
    assert 60 <= len(acknowledged) < 160, "the kill should land in the middle of the send"

    restarted = start_bridge(restart=bridge)
    restarted.wait_for("open", len(acknowledged))
    # Instances spooled but not yet answered when the kill came are ingested too: wait for the whole spool
    # (claims of the killed workers are put back once their processes are gone).
    deadline = time.monotonic() + 60
    while spool_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spool_files(tmp_path) == []
    restarted.stop()

    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT sop_instance_uid, path, size FROM instance")).all()
    engine.dispose()
    store = tmp_path / "store"
    for _, path, size in rows:
        assert (store / path).stat().st_size == size  # no row without its whole file
    files = [p for p in store.rglob("*") if p.is_file()]
    assert len(files) == len(rows)  # no stray or partial file in the store
    for path in files:
        pydicom.dcmread(path)  # every stored file parses
    from bridge.deid.values import pseudo_uid
    from bridge.keys import load_keys
    from bridge.settings import load_settings

    key = load_keys(load_settings(bridge.config).security).project_key("open")
    indexed = {uid for uid, _, _ in rows}
    assert {pseudo_uid(key, sop) for sop in acknowledged} <= indexed
    assert spool_files(tmp_path) == []


def test_received_files_whose_rename_a_crash_lost_are_ingested_at_start(
    start_bridge: StartBridge, tmp_path: Path
) -> None:
    """An instance is acknowledged once its file is fsynced with its marker; the rename into the spool is not
    synced. Files a crash left in `.incoming/` are checked against their marker at the next start: the whole
    one is ingested, the torn one (never acknowledged) removed, not quarantined."""
    spool = Spool(tmp_path / "spool")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    left = tmp_path / "spool" / INCOMING / f"{socket.gethostname()}.{dead.stdout.strip()}"
    left.mkdir(parents=True)
    whole, torn = factory.make_series(factory.make_patient(9), count=2)
    for ds in (whole, torn):
        (path,) = factory.write_files([ds], spool.incoming)
        entry = spool.admit(path, project="open", source="c-store:SCU", crc=zlib.crc32(path.read_bytes()[128:]))
        entry.path.rename(left / entry.path.name)
        if ds is torn:
            data = bytearray((left / entry.path.name).read_bytes())
            data[-10] ^= 0xFF
            (left / entry.path.name).write_bytes(bytes(data))

    bridge = start_bridge()
    bridge.wait_for("open", 1)
    deadline = time.monotonic() + 30
    while spool_files(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert spool_files(tmp_path) == [] and not left.exists()
    bridge.stop()
    assert bridge.status()["open"]["instances"] == 1
    assert not list((tmp_path / "quarantine").rglob("*.dcm"))
    log = bridge.log.read_text()
    assert "recovered 1 received instances" in log and "removed 1 partially received" in log


def test_a_taken_port_is_a_clear_start_up_error(tmp_path: Path) -> None:
    from tests.serve_process import REPOSITORY, write_serve_config

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_serve_config(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}", port, dimse="listeners = 1")
        result = subprocess.run(
            [sys.executable, "-m", "bridge", "serve", "--config", str(config)],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port}: cannot listen (Address already in use)" in result.stderr
    assert "Traceback" not in result.stderr


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie nobody reaped counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_listeners_and_workers_stop_when_the_serving_process_is_killed(start_bridge: StartBridge) -> None:
    """Only the serving process is killed (SIGKILL, not its group): its listener and ingest worker processes
    must not live on as orphans holding the port and claiming spool entries."""
    bridge = start_bridge()
    assert bridge.process is not None
    main = bridge.process.pid
    deadline = time.monotonic() + 60
    while len(children := [p for p in descendants(main) if p != main]) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # two ingest workers and one more listener (dimse.listeners = 2)
    assert len(children) >= 3, children
    os.kill(main, signal.SIGKILL)
    bridge.process.wait(30)
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if running(pid)], "orphaned processes of serve kept running"
