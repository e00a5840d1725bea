"""The store's batches: files fsynced and renamed in the background, each folder synced once, failures named."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from storage.durable import INCOMING
from storage.filestore import FileStore


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
