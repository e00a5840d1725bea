"""The quarantine: refused instances kept byte for byte with their reason, for a person to look at.

The folder holds identified data (like the spool); the index only records the reason, size, hash and
where the bytes are. A JSON sidecar beside each file repeats the reason for someone browsing the folder.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from storage.durable import StoredFile, copy_durably, write_durably


@dataclass(frozen=True)
class Quarantined:
    stored: StoredFile
    reason: str


class Quarantine:
    def __init__(self, root: Path) -> None:
        self.root = root

    def keep(self, source: Path, *, project: str | None, reason: str, origin: str) -> Quarantined:
        """Copy `source` into the quarantine with its reason. `origin` (e.g. the source path) stays local."""
        now = dt.datetime.now(dt.UTC)
        name = f"{project or '_unrouted'}/{now:%Y%m%d}/{uuid.uuid4().hex}"
        stored = copy_durably(self.root, f"{name}.dcm", source)
        sidecar = {
            "reason": reason,
            "origin": origin,
            "project": project,
            "at": now.isoformat(),
            "sha256": stored.sha256,
            "size": stored.size,
        }
        body = json.dumps(sidecar, indent=2).encode()
        write_durably(self.root, f"{name}.json", lambda out: None if out.write(body) else None)
        return Quarantined(stored=stored, reason=reason)
