"""The spool: received instances made durable before they are acknowledged, until ingest has them.

An entry is a Part 10 file at `<root>/<project>/<source>/<time>-<random>.dcm`: the folder names carry what
the worker needs (project, intake label), so a single rename makes an entry complete and visible. Partial
files live in `<root>/.incoming/<host>.<pid>/` (same filesystem) and are swept at start-up like the store's.

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
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.filestore import INCOMING, fsync_folder, process_alive, sweep_incoming

CLAIMED = ".claimed"
_LABEL = re.compile(r"[^A-Za-z0-9_.:-]")  # a folder name; the source keeps its colon


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    project: str
    source: str


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

    def admit(self, partial: Path, *, project: str, source: str) -> SpoolEntry:
        """Make a fully received file durable and visible as a spool entry (fsync, rename, fsync folder)."""
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folder = self.root / project / _LABEL.sub("_", source)
        target = folder / f"{time.time_ns():020d}-{secrets.token_hex(6)}.dcm"
        try:
            os.replace(partial, target)
        except FileNotFoundError:  # the entry's folder is created with its first entry, not checked for each
            if not partial.exists():
                raise
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(partial, target)
        fsync_folder(folder)
        return SpoolEntry(path=target, project=project, source=target.parent.name)

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

    def sweep(self) -> int:
        return sweep_incoming(self.root)

    def backlog(self) -> int:
        return sum(1 for _ in self.entries())
