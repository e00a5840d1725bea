"""What every remote adapter shares: the protocol the puller uses, what it lists, where retrieved files go.

Adapters retry through `bridge.errors.with_retries` and nowhere else; the last failure is reported with the
remote's own message, redacted of original UIDs (`bridge.errors.redact`).
"""

from __future__ import annotations

import os
import queue
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol


@dataclass(frozen=True)
class RemoteSeries:
    uid: str
    count: int | None  # instances, as the remote counts them (None: it does not say)


@dataclass(frozen=True)
class RemoteInstance:
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class_uid: str | None = None


@dataclass
class Delivery:
    """Where an adapter puts retrieved instances: files in `folder`, handed over complete, one by one."""

    folder: Path
    files: queue.Queue[Path] = field(default_factory=queue.Queue)

    def new_file(self) -> tuple[int, Path]:
        fd, name = tempfile.mkstemp(dir=self.folder, suffix=".dcm")
        return fd, Path(name)

    def deliver(self, path: Path) -> None:
        self.files.put(path)


class FilePart:
    """One streamed part on its way to a file of a delivery (the multipart reader's sink)."""

    def __init__(self, delivery: Delivery) -> None:
        self.delivery = delivery
        fd, self.path = delivery.new_file()
        self.stream = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        return self.stream.write(data)

    def finish(self) -> None:
        self.stream.close()
        self.delivery.deliver(self.path)

    def abort(self) -> None:
        self.stream.close()
        self.path.unlink(missing_ok=True)


class Remote(Protocol):
    """A PACS the puller finds and retrieves from. `via_listener`: retrieved instances arrive at the bridge's
    own DICOM listener (C-MOVE), not through `Delivery`."""

    name: str
    parallel: int  # retrievals at once
    timeout: float  # seconds
    via_listener: bool

    def search_studies(self, filters: dict[str, str]) -> list[str]:
        """Study Instance UIDs; `TruncatedSearch` when the remote capped the results."""
        ...

    def search_series(self, study_uid: str) -> list[RemoteSeries]:
        """The series of a study, each with its instance count (the basis of the completeness check)."""
        ...

    def search_instances(self, study_uid: str, series_uid: str | None = None) -> list[RemoteInstance]:
        """The instances of a study, or of one of its series."""
        ...

    def retrieve(
        self,
        delivery: Delivery,
        study_uid: str,
        series_uid: str,
        sop_uid: str | None = None,
        sop_classes: frozenset[str] = frozenset(),
    ) -> int:
        """A series (or one instance); `sop_classes`: of its instances, as far as the search said."""
        ...

    def close(self) -> None: ...


def first_value(item: dict[str, Any], tag: str) -> str | None:
    values = item.get(tag, {}).get("Value")
    return str(values[0]) if values else None
