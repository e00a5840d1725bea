"""The spool: received instances made durable before they are acknowledged, until ingest has them.

An entry is a Part 10 file at `<root>/<project>/<source>/<time>-<random>.dcm`: the folder names carry what
the worker needs (project, intake label), so a single rename makes an entry complete and visible. Partial
files live in `<root>/.incoming/` (same filesystem) and are swept at start-up like the store's.
The spool holds identified data: it is protected like the PACS.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.filestore import INCOMING, fsync_folder, sweep_incoming

_LABEL = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class SpoolEntry:
    path: Path
    project: str
    source: str


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def incoming(self) -> Path:
        """Where receivers write partial files: this process's folder under `.incoming/`."""
        folder = self.root / INCOMING / f"{os.uname().nodename}.{os.getpid()}"
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def admit(self, partial: Path, *, project: str, source: str) -> SpoolEntry:
        """Make a fully received file durable and visible as a spool entry (fsync, rename, fsync folder)."""
        fd = os.open(partial, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        folder = self.root / project / _LABEL.sub("_", source)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{time.time_ns():020d}-{secrets.token_hex(6)}.dcm"
        os.replace(partial, target)
        fsync_folder(folder)
        return SpoolEntry(path=target, project=project, source=source)

    def entries(self) -> Iterator[SpoolEntry]:
        """Every complete entry, oldest first (what a restart must finish)."""
        if not self.root.is_dir():
            return
        found = []
        for project in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != INCOMING):
            for source in sorted(p for p in project.iterdir() if p.is_dir()):
                for path in source.glob("*.dcm"):
                    found.append(SpoolEntry(path=path, project=project.name, source=source.name))
        yield from sorted(found, key=lambda entry: entry.path.name)

    def done(self, entry: SpoolEntry) -> None:
        entry.path.unlink(missing_ok=True)

    def sweep(self) -> int:
        return sweep_incoming(self.root)
