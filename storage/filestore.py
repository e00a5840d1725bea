"""Durable files: the de-identified store and the quarantine.

A file is written to a temporary name in `<root>/.incoming/` (same filesystem), fsynced, renamed into place
and its folder fsynced, so that a crash leaves either the whole file or none. A batch of files (`FileBatch`)
is fsynced and renamed on a background thread while the caller prepares the next file, and each folder is
synced once for the batch. What a crash leaves in `.incoming/` is never referenced and is removed by
`sweep_incoming` at start-up.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing.util
import os
import queue
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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


def dead_incoming_folders(root: Path, *, include_own: bool) -> Iterator[Path]:
    """The folders of partial files under `root` of this host's processes that are gone (`include_own`: and
    this process's own, at start-up: an earlier process may have had the same pid)."""
    base = root / INCOMING
    if not base.is_dir():
        return
    host = socket.gethostname()
    for folder in base.iterdir():
        owner, _, pid = folder.name.rpartition(".")
        if owner != host or not pid.isdigit():
            continue
        own = int(pid) == os.getpid()
        if (own and include_own) or (not own and not process_alive(int(pid))):
            yield folder


def sweep_incoming(root: Path) -> int:
    """Remove partial files left by crashed processes of this host; returns how many there were."""
    removed = 0
    for folder in dead_incoming_folders(root, include_own=True):
        for leftover in folder.iterdir():
            leftover.unlink(missing_ok=True)
            removed += 1
        if folder.name != _incoming_folder(root).name:
            folder.rmdir()
    return removed


def fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(root: Path, relative_path: str, produce: Callable[[HashingWriter], None]) -> StoredFile:
    """Write `relative_path` under `root` with the bytes `produce` writes; replaces an existing file."""
    raw, temp_name, stored = _write_temporary(root, relative_path, produce)
    _settle(raw, temp_name, root / relative_path)
    fsync_folder((root / relative_path).parent)
    return stored


def _new_temporary(root: Path) -> tuple[int, str]:
    """An empty temporary file in this process's incoming folder: (descriptor, name)."""
    incoming = _incoming_folder(root)
    # folders are created when missing rather than checked before every file: checks cost system calls
    return _retry_in_new_folder(lambda: tempfile.mkstemp(dir=incoming, suffix=".tmp"), incoming)


def _write_temporary(
    root: Path,
    relative_path: str,
    produce: Callable[[HashingWriter], None],
    opened: tuple[int, str] | None = None,
) -> tuple[BinaryIO, str, StoredFile]:
    """The bytes `produce` writes, in a temporary file still open (not yet fsynced), and what they are.
    `opened`: an empty temporary file to use, else one is created."""
    fd, temp_name = opened or _new_temporary(root)
    raw = os.fdopen(fd, "wb")
    try:
        writer = HashingWriter(raw)
        produce(writer)
        writer.flush()
    except BaseException:
        raw.close()
        Path(temp_name).unlink(missing_ok=True)
        raise
    return raw, temp_name, StoredFile(relative_path=relative_path, size=writer.size, sha256=writer.sha256)


def _settle(raw: BinaryIO, temp_name: str, target: Path) -> None:
    """fsync the temporary file, close it and rename it into place (removed if any of it fails)."""
    try:
        with raw:
            os.fsync(raw.fileno())
        _retry_in_new_folder(lambda: os.replace(temp_name, target), target.parent)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


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


class _SpareFiles:
    """Empty temporary files made ahead on the settler threads. Creating a file waits while the filesystem
    commits another file's fsync (ext4's journal, ~0.1-0.4 ms each time with fsyncs this frequent), and the
    thread that de-identifies should not wait. They are removed when the process exits (a killed one's are
    swept at the next start-up)."""

    _AHEAD = 4

    def __init__(self, root: Path) -> None:
        self._root = root
        self._ready: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()
        # removed when this object goes, or at exit: in the main process (atexit) and in multiprocessing's
        # workers (which skip atexit); the callback holds the queue, not this object
        multiprocessing.util.Finalize(self, _discard, args=(self._ready,), exitpriority=0)

    def take(self) -> tuple[int, str]:
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return _new_temporary(self._root)

    def make(self) -> None:
        if self._ready.qsize() < self._AHEAD:
            self._ready.put(_new_temporary(self._root))


def _discard(ready: queue.SimpleQueue[tuple[int, str]]) -> None:
    while True:
        try:
            fd, name = ready.get_nowait()
        except queue.Empty:
            return
        os.close(fd)
        Path(name).unlink(missing_ok=True)


class FileBatch:
    """The files behind one batch of rows. Each is written by the caller; its fsync and rename into place
    run on a background thread (the disk waits while the caller de-identifies the next one). `finish()`
    waits for them and syncs each folder once: only then may rows point at the files."""

    def __init__(self, root: Path, settler: ThreadPoolExecutor, spares: _SpareFiles) -> None:
        self._root = root
        self._settler = settler
        self._spares = spares
        self._pending: list[tuple[str, Future[None]]] = []

    def write(self, relative_path: str, produce: Callable[[HashingWriter], None]) -> StoredFile:
        """Write the file (its bytes and hash are final on return; it is durable after `finish()`)."""
        raw, temp_name, stored = _write_temporary(self._root, relative_path, produce, self._spares.take())
        self._pending.append((relative_path, self._settler.submit(_settle, raw, temp_name, self._root / relative_path)))
        self._settler.submit(self._spares.make)  # a failure here only means the next file is created in line
        return stored

    def finish(self) -> dict[str, OSError]:
        """Wait until every file is in place and its folder synced; the files that are not, with why."""
        failed: dict[str, OSError] = {}
        for relative_path, settled in self._pending:
            try:
                settled.result()
            except OSError as error:
                failed[relative_path] = error
        in_place = [relative_path for relative_path, _ in self._pending if relative_path not in failed]
        unsynced: dict[str, OSError] = {}
        for folder in dict.fromkeys(relative_path.rpartition("/")[0] for relative_path in in_place):
            try:
                fsync_folder(self._root / folder)
            except OSError as error:
                unsynced[folder] = error
        for relative_path in in_place:
            if (problem := unsynced.get(relative_path.rpartition("/")[0])) is not None:
                failed[relative_path] = problem
        self._pending.clear()
        return failed


class FileStore:
    """De-identified instances, laid out as project/study/series/instance.dcm with pseudo UIDs only."""

    _SETTLERS = 2  # concurrent fsyncs: the filesystem commits them together

    def __init__(self, root: Path) -> None:
        self.root = root
        self._settler: ThreadPoolExecutor | None = None
        self._settler_lock = threading.Lock()
        self._spares = _SpareFiles(root)

    @staticmethod
    def relative_path(project: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        return f"{project}/{study_uid}/{series_uid}/{sop_instance_uid}.dcm"

    def batch(self) -> FileBatch:
        """Several files made durable together: see `FileBatch`."""
        with self._settler_lock:  # created on first use, in the process that uses it (workers are forked)
            if self._settler is None:
                self._settler = ThreadPoolExecutor(self._SETTLERS, thread_name_prefix="store-fsync")
        return FileBatch(self.root, self._settler, self._spares)

    def path(self, relative_path: str) -> Path:
        return self.root / relative_path
