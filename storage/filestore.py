"""Durable files: the de-identified store and the quarantine.

A file is written to a temporary name in `<root>/.incoming/` (same filesystem), fsynced, renamed into place
and its folder fsynced (or, if the caller asks, left for it to sync once for several files), so that a
crash leaves either the whole file or none. What a crash leaves in `.incoming/` is never referenced and is
removed by `sweep_incoming` at start-up.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class StoredFile:
    relative_path: str
    size: int
    sha256: str


class HashingWriter:
    """A write-only file wrapper that counts and hashes what passes through it. Small writes (a DICOM
    writer emits each element header separately) are gathered into 256 KB blocks first."""

    _BLOCK = 256 * 1024

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hash = hashlib.sha256()
        self._pending = bytearray()
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        size = len(data)
        if len(self._pending) + size < self._BLOCK:
            self._pending += data
        else:
            self.flush()
            self._raw.write(data)
            self._hash.update(data)
        self.size += size
        return size

    def tell(self) -> int:
        return self.size

    def seek(self, offset: int, whence: int = 0) -> int:
        """Only a no-op seek to the current position: hashing needs the bytes in order."""
        target = offset if whence == 0 else self.size + offset
        if target != self.size:
            raise io.UnsupportedOperation("a hashing writer only writes forward")
        return self.size

    def flush(self) -> None:
        if self._pending:
            self._raw.write(self._pending)
            self._hash.update(self._pending)
            self._pending.clear()
        self._raw.flush()

    @property
    def sha256(self) -> str:
        if self._pending:
            raise RuntimeError("flush() before reading the hash")
        return self._hash.hexdigest()


INCOMING = ".incoming"


def _incoming_folder(root: Path) -> Path:
    """This process's own folder for partial files: `<root>/.incoming/<host>.<pid>`."""
    return root / INCOMING / f"{socket.gethostname()}.{os.getpid()}"


def process_alive(pid: int) -> bool:
    """Whether `pid` runs. A zombie (killed, not yet reaped by its new parent) counts as gone: what it
    held must be released now, not when someone reaps it."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (not Linux), or it ended meanwhile
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def sweep_incoming(root: Path) -> int:
    """Remove partial files left by crashed processes of this host; returns how many there were."""
    host = socket.gethostname()
    removed = 0
    base = root / INCOMING
    if not base.is_dir():
        return 0
    for folder in base.iterdir():
        owner, _, pid = folder.name.rpartition(".")
        if owner != host or not pid.isdigit() or process_alive(int(pid)) and int(pid) != os.getpid():
            continue
        for leftover in folder.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        if int(pid) != os.getpid():
            folder.rmdir()
    return removed


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(
    root: Path, relative_path: str, produce: Callable[[HashingWriter], None], *, sync_folder: bool = True
) -> StoredFile:
    """Write `relative_path` under `root` with the bytes `produce` writes; replaces an existing file.

    With `sync_folder=False` the new name is durable only once the caller has synced its folder (ingest
    syncs each folder of a batch once, before committing the rows that point at its files)."""
    target = root / relative_path
    incoming = _incoming_folder(root)
    # folders are created when missing rather than checked before every file: checks cost system calls
    fd, temp_name = _retry_in_new_folder(lambda: tempfile.mkstemp(dir=incoming, suffix=".tmp"), incoming)
    try:
        with os.fdopen(fd, "wb") as raw:
            writer = HashingWriter(raw)
            produce(writer)
            writer.flush()
            os.fsync(raw.fileno())
        _retry_in_new_folder(lambda: os.replace(temp_name, target), target.parent)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    if sync_folder:
        fsync_folder(target.parent)
    return StoredFile(relative_path=relative_path, size=writer.size, sha256=writer.sha256)


def _retry_in_new_folder(action: Callable[[], T], folder: Path) -> T:
    """`action`, run again after creating `folder` if it failed because the folder is missing."""
    try:
        return action()
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
        return action()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def copy_durably(root: Path, relative_path: str, source: Path) -> StoredFile:
    """Durable copy of `source`, streamed in chunks (quarantine keeps the bytes exactly as received)."""

    def produce(writer: HashingWriter) -> None:
        with source.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                writer.write(chunk)

    return write_durably(root, relative_path, produce)


class FileStore:
    """De-identified instances, laid out as project/study/series/instance.dcm with pseudo UIDs only."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @staticmethod
    def relative_path(project: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        return f"{project}/{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def write(
        self, relative_path: str, produce: Callable[[HashingWriter], None], *, sync_folder: bool = True
    ) -> StoredFile:
        return write_durably(self.root, relative_path, produce, sync_folder=sync_folder)

    def sync_folder(self, relative_path: str) -> None:
        """Make durable the name of a file written with `sync_folder=False` (and of the others beside it)."""
        fsync_folder((self.root / relative_path).parent)

    def path(self, relative_path: str) -> Path:
        return self.root / relative_path
