"""The spool: received instances made durable before they are acknowledged, until ingest has them.

An entry is a Part 10 file at `<root>/<project>/<source>/<time>-<random>.dcm`: the folder names carry what
the worker needs (project, intake label), so a single rename makes an entry complete and visible. Partial
files live in `<root>/.incoming/<host>.<pid>/` (same filesystem).

A received file is made durable with one fsync: before it, the file's preamble (128 bytes that DICOM leaves
to the application) is given a marker holding the entry's project and source, its length and the CRC-32 of
the rest of the file. The rename into the spool follows without syncing the folder (a second disk flush on
every C-STORE's path): if a crash loses the rename, recovery at the next start finds the file in
`.incoming/`, checks it against its marker and puts it in the spool. What fails the check was never
acknowledged (Success is answered after the fsync, and a file fsynced whole matches its marker) and is
removed, as are unmarked partial files.

Workers claim entries by renaming them into `<root>/.claimed/<host>.<pid>/`, so any number of listener and
worker processes share one spool without a coordinator; the claims of a process that died are put back.
The spool holds identified data: it is protected like the PACS.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.durable import INCOMING, dead_incoming_folders, fsync_folder, process_alive

CLAIMED = ".claimed"
_LABEL = re.compile(r"[^A-Za-z0-9_.:-]")  # a folder name; the source keeps its colon
PREAMBLE = 128
_MAGIC = b"pacs-bridge:spl1"
_MARKER = struct.Struct("<16sQL")  # magic, length of the file after the preamble, its CRC-32; then names


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    project: str
    source: str


class IncomingFile:
    """A file being received into the spool's incoming folder, and the CRC-32 of what follows its preamble
    (for the marker: computed as the bytes pass, never read back)."""

    def __init__(self, folder: Path, header: bytes) -> None:
        self.path = folder / f"{secrets.token_hex(8)}.part"
        self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        _write_all(self.fd, memoryview(header))
        self.crc = zlib.crc32(memoryview(header)[PREAMBLE:])

    def write(self, data: memoryview) -> None:
        assert self.fd is not None
        _write_all(self.fd, data)
        self.crc = zlib.crc32(data, self.crc)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _owner() -> str:
    return f"{socket.gethostname()}.{os.getpid()}"


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming: tuple[int, Path] | None = None  # (pid, folder): created once per process

    @property
    def incoming(self) -> Path:
        """Where receivers write partial files: this process's folder under `.incoming/` (created once)."""
        if self._incoming is None or self._incoming[0] != os.getpid():  # first use, or a forked process
            folder = self.root / INCOMING / _owner()
            folder.mkdir(parents=True, exist_ok=True)
            self._incoming = (os.getpid(), folder)
        return self._incoming[1]

    def receive(self, header: bytes) -> IncomingFile:
        """A new file in this process's incoming folder, starting with `header` (preamble and file meta)."""
        return IncomingFile(self.incoming, header)

    def admit(self, partial: Path, *, project: str, source: str, crc: int | None = None) -> SpoolEntry:
        """Make a fully received file durable and visible as a spool entry. `crc`: the CRC-32 of the file
        after its preamble (computed as it was written); with it, the file is marked and fsynced, then
        renamed (see the module's docstring); without it, or when the names do not fit in the marker, it is
        fsynced, renamed, and its folder fsynced."""
        label = _LABEL.sub("_", source)
        marker = None if crc is None else _marker(project, label, partial.stat().st_size - PREAMBLE, crc)
        fd = os.open(partial, os.O_RDONLY if marker is None else os.O_WRONLY)
        try:
            if marker is not None:
                os.pwrite(fd, marker, 0)
            os.fsync(fd)
        finally:
            os.close(fd)
        target = self._enter(partial, project, label)
        if marker is None:
            fsync_folder(target.parent)
        return SpoolEntry(path=target, project=project, source=label)

    def _enter(self, partial: Path, project: str, label: str) -> Path:
        """Rename a durable file into the spool under a new entry name (not synced)."""
        folder = self.root / project / label
        target = folder / f"{time.time_ns():020d}-{secrets.token_hex(6)}.dcm"
        try:
            os.replace(partial, target)
        except FileNotFoundError:  # the entry's folder is created with its first entry, not checked for each
            if not partial.exists():
                raise
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
        return target

    def entries(self, limit: int | None = None) -> Iterator[SpoolEntry]:
        """Complete, unclaimed entries, oldest first within each project and source."""
        if not self.root.is_dir():
            return
        count = 0
        projects = sorted(
            (p for p in os.scandir(self.root) if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name
        )
        for project in projects:
            for source in sorted((s for s in os.scandir(project.path) if s.is_dir()), key=lambda s: s.name):
                for name in sorted(n for n in os.listdir(source.path) if n.endswith(".dcm")):
                    yield SpoolEntry(path=Path(source.path) / name, project=project.name, source=source.name)
                    count += 1
                    if limit is not None and count >= limit:
                        return

    def claim(self, limit: int) -> list[SpoolEntry]:
        """Take up to `limit` entries for this process; an entry another process took first is skipped."""
        claimed = []
        for entry in self.entries(limit=limit * 2):
            target = self.root / CLAIMED / _owner() / entry.project / entry.source / entry.path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(entry.path, target)
            except FileNotFoundError:
                continue
            claimed.append(SpoolEntry(path=target, project=entry.project, source=entry.source))
            if len(claimed) == limit:
                break
        return claimed

    def unclaim(self, entry: SpoolEntry) -> None:
        """Give a claimed entry back (ingest failed, or the worker is stopping)."""
        folder = self.root / entry.project / entry.source
        folder.mkdir(parents=True, exist_ok=True)
        os.rename(entry.path, folder / entry.path.name)

    def done(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)

    def release_dead_claims(self) -> int:
        """Put back what processes of this host that are gone had claimed; returns how many entries."""
        base = self.root / CLAIMED
        if not base.is_dir():
            return 0
        host = socket.gethostname()
        released = 0
        for owner in os.scandir(base):
            name, _, pid = owner.name.rpartition(".")
            if name != host or not pid.isdigit() or process_alive(int(pid)):
                continue
            for path in sorted(Path(owner.path).glob("*/*/*.dcm")):
                self.unclaim(SpoolEntry(path=path, project=path.parent.parent.name, source=path.parent.name))
                released += 1
            shutil.rmtree(owner.path, ignore_errors=True)  # only empty folders are left
        return released

    def recover(self, *, at_start: bool) -> tuple[int, int]:
        """Files left in `.incoming/` by processes that are gone (`at_start`: this one's too, which an
        earlier process with the same pid may have left): marked ones whose bytes match their marker go into
        the spool (they may have been acknowledged), the others are removed (they were not). Returns
        (entries recovered, files removed)."""
        recovered = removed = 0
        folders: set[Path] = set()
        for folder in dead_incoming_folders(self.root, include_own=at_start):
            for leftover in folder.iterdir():
                found = _marked(leftover)
                if found is None:
                    leftover.unlink(missing_ok=True)
                    removed += 1
                else:
                    folders.add(self._enter(leftover, *found).parent)
                    recovered += 1
            if folder.name != _owner():
                folder.rmdir()
        for folder in folders:
            fsync_folder(folder)
        return recovered, removed

    def backlog(self) -> int:
        return sum(1 for _ in self.entries())

    def writable(self) -> bool:
        """Whether instances can be received into the spool (its folder is made on first use)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.root, os.W_OK | os.X_OK)


def _marker(project: str, label: str, length: int, crc: int) -> bytes | None:
    """The preamble of a durable spool file, or None when the names do not fit in it."""
    names = f"{project}/{label}".encode()
    marker = _MARKER.pack(_MAGIC, length, crc) + names
    return marker.ljust(PREAMBLE, b"\x00") if len(marker) < PREAMBLE else None


def _marked(path: Path) -> tuple[str, str] | None:
    """(project, source label) of a file whose bytes match its marker; None for anything else."""
    try:
        with path.open("rb") as stream:
            preamble = stream.read(PREAMBLE)
            if len(preamble) < PREAMBLE or not preamble.startswith(_MAGIC):
                return None
            _, length, crc = _MARKER.unpack_from(preamble)
            actual, size = 0, 0
            while chunk := stream.read(1 << 20):
                actual, size = zlib.crc32(chunk, actual), size + len(chunk)
    except OSError:
        return None
    if size != length or actual != crc:
        return None
    project, _, label = preamble[_MARKER.size :].rstrip(b"\x00").decode("utf-8", "replace").partition("/")
    return (project, label) if project and label else None
