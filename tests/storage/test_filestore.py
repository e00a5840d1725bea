"""Durable writes: whole file or none, same content twice is one file, crash leftovers are swept."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from storage.filestore import INCOMING, FileStore, sweep_incoming, write_durably


def test_write_is_durable_hashed_and_idempotent(tmp_path: Path) -> None:
    relative = FileStore.relative_path("lung", "2.25.1", "2.25.2", "2.25.3")
    first = write_durably(tmp_path, relative, lambda out: out.write(b"DICM" * 100))
    second = write_durably(tmp_path, relative, lambda out: out.write(b"DICM" * 100))
    assert first == second
    assert first.sha256 == hashlib.sha256(b"DICM" * 100).hexdigest() and first.size == 400
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / "lung/2.25.1/2.25.2/2.25.3.dcm"]


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def explode(out) -> None:  # type: ignore[no-untyped-def]
        out.write(b"half")
        raise OSError("disk went away")

    with pytest.raises(OSError):
        write_durably(tmp_path, "p/a/b/c.dcm", explode)
    assert not (tmp_path / "p/a/b/c.dcm").exists()
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_leftovers_of_a_killed_process_are_swept(tmp_path: Path) -> None:
    """A real process is SIGKILLed in the middle of a write; its partial file is removed at start-up."""
    script = (
        "import os, sys, time\n"
        "from pathlib import Path\n"
        "from storage.filestore import write_durably\n"
        "def produce(out):\n"
        "    out.write(b'x' * 1000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
        f"write_durably(Path({str(tmp_path)!r}), 'p/s/e/i.dcm', produce)\n"
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2]
    ) as process:
        assert process.stdout is not None and process.stdout.readline().strip() == "writing"
        process.kill()
        process.wait()
    partial = [p for p in (tmp_path / INCOMING).rglob("*") if p.is_file()]
    assert len(partial) == 1 and not (tmp_path / "p/s/e/i.dcm").exists()
    assert sweep_incoming(tmp_path) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_sweep_spares_files_of_live_processes(tmp_path: Path) -> None:
    import socket

    live = tmp_path / INCOMING / f"{socket.gethostname()}.{os.getppid()}"
    live.mkdir(parents=True)
    (live / "busy.tmp").write_bytes(b"x")
    assert sweep_incoming(tmp_path) == 0 and (live / "busy.tmp").exists()


def assert_only_spares_left(root: Path) -> None:
    """Nothing of a batch's files is left in the incoming folder: only the empty spares made ahead."""
    left = [p.stat().st_size for p in (root / INCOMING).rglob("*") if p.is_file()]
    assert set(left) <= {0} and len(left) <= 5


def test_a_batch_is_in_place_and_each_folder_synced_once_when_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's files are fsynced and renamed in the background; `finish()` waits for them and syncs each
    folder once (missing folders are created on the way)."""
    import storage.filestore as filestore

    synced: list[Path] = []
    monkeypatch.setattr(filestore, "fsync_folder", synced.append)
    store = FileStore(tmp_path)
    batch = store.batch()
    paths = ["p/a/b/1.dcm", "p/a/b/2.dcm", "p/a/c/3.dcm"]
    stored = [batch.write(relative, lambda out: out.write(b"DICM")) for relative in paths]
    assert [s.sha256 for s in stored] == [hashlib.sha256(b"DICM").hexdigest()] * 3
    assert batch.finish() == {}
    assert all((tmp_path / relative).read_bytes() == b"DICM" for relative in paths)
    assert sorted(synced) == [tmp_path / "p/a/b", tmp_path / "p/a/c"]
    assert_only_spares_left(tmp_path)


def test_a_batch_names_the_files_that_did_not_become_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An fsync that fails (a disk error: simulated, it cannot be caused safely for real) fails its file
    alone, which is not put in place; a folder that cannot be synced fails the files in it."""
    import storage.filestore as filestore

    real_fsync, real_sync_folder = os.fsync, filestore.fsync_folder
    store = FileStore(tmp_path)
    batch = store.batch()
    batch.write("p/a/b/1.dcm", lambda out: out.write(b"good"))

    def fsync(fd: int) -> None:
        if os.fstat(fd).st_size == len(b"bad"):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    def sync_folder(folder: Path) -> None:
        if folder.name == "c":
            raise OSError(5, "Input/output error")
        real_sync_folder(folder)

    monkeypatch.setattr(filestore.os, "fsync", fsync)
    monkeypatch.setattr(filestore, "fsync_folder", sync_folder)
    batch.write("p/a/b/2.dcm", lambda out: out.write(b"bad"))
    batch.write("p/a/c/3.dcm", lambda out: out.write(b"good"))
    failed = batch.finish()
    assert sorted(failed) == ["p/a/b/2.dcm", "p/a/c/3.dcm"]
    assert (tmp_path / "p/a/b/1.dcm").read_bytes() == b"good" and not (tmp_path / "p/a/b/2.dcm").exists()
    assert_only_spares_left(tmp_path)
