"""Durable file writes, the toolkit under the store, the quarantine and the spool.

A file is written to a temporary name in `<root>/.incoming/<host>.<pid>/` (same filesystem), fsynced,
renamed into place and its folder fsynced, so that a crash leaves either the whole file or none. What a
crash leaves in `.incoming/` is never referenced and is removed by `sweep_incoming` at start-up; folders of
processes that are gone are found by `dead_incoming_folders`.
"""

from __future__ import annotations

import hashlib
import io
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
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


def write_durably(root: Path, relative_path: str, produce: Callable[[HashingWriter], object]) -> StoredFile:
    """Write `relative_path` under `root` with the bytes `produce` writes; replaces an existing file."""
    raw, temp_name, stored = write_temporary(root, relative_path, produce)
    settle(raw, temp_name, root / relative_path)
    fsync_folder((root / relative_path).parent)
    return stored


def new_temporary(root: Path) -> tuple[int, str]:
    """An empty temporary file in this process's incoming folder: (descriptor, name)."""
    incoming = _incoming_folder(root)
    # folders are created when missing rather than checked before every file: checks cost system calls
    return retry_in_new_folder(lambda: tempfile.mkstemp(dir=incoming, suffix=".tmp"), incoming)


def write_temporary(
    root: Path,
    relative_path: str,
    produce: Callable[[HashingWriter], object],
    opened: tuple[int, str] | None = None,
) -> tuple[BinaryIO, str, StoredFile]:
    """The bytes `produce` writes, in a temporary file still open (not yet fsynced), and what they are.
    `opened`: an empty temporary file to use, else one is created."""
    fd, temp_name = opened or new_temporary(root)
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


def settle(raw: BinaryIO, temp_name: str, target: Path) -> None:
    """fsync the temporary file, close it and rename it into place (removed if any of it fails)."""
    try:
        with raw:
            os.fsync(raw.fileno())
        retry_in_new_folder(lambda: os.replace(temp_name, target), target.parent)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def retry_in_new_folder(action: Callable[[], T], folder: Path) -> T:
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
