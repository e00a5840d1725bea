"""One pull from start to end, as `pacs-bridge pull` and the schedules of `serve` run it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

from bridge.ingest.service import IngestService
from bridge.ingest.workers import IngestPool, WorkerServices
from bridge.pull.filters import PullFilters
from bridge.pull.puller import Puller, PullProgress, PullReport
from bridge.remotes.connect import move_destination, open_remote
from bridge.settings import RemoteSettings, Settings
from storage.db import Database
from storage.spool import Spool

Receiving = Callable[[str], AbstractContextManager[None]]
"""While inside `receiving(ae_title)`, a DICOM listener takes C-MOVE sub-operations sent to that AE title."""


class PullServices(Protocol):
    """What a pull uses of its process's runtime."""

    database: Database

    def ingest(self, actor: str) -> IngestService: ...


def run_pull(
    settings: Settings,
    services: PullServices,
    remote: RemoteSettings,
    project: str,
    filters: PullFilters,
    *,
    actor: str,
    progress: PullProgress | None = None,
    cancel: threading.Event | None = None,
    workers: int = 1,
    open_services: Callable[[], WorkerServices] | None = None,
    receiving: Receiving | None = None,
) -> PullReport:
    """Pull into `project`. `workers` processes (opening theirs with `open_services`) ingest what is
    retrieved. C-MOVE needs a listener for the remote to send to: `receiving` provides it for the duration
    (`serve`'s own, or one started for the pull). Raises `RemoteError` when the remote cannot be searched at
    all."""
    ingest = services.ingest(f"pull:{actor}")
    pool = IngestPool(ingest, workers, open_services=open_services)  # its workers start while we search
    try:
        adapter = open_remote(settings, remote, project)
        try:
            listening: AbstractContextManager[None] = nullcontext()
            if adapter.via_listener:
                if receiving is None:
                    raise ValueError("a C-MOVE pull needs a listener: pass `receiving`")
                listening = receiving(move_destination(settings, remote, project))
            with listening:
                puller = Puller(
                    adapter,
                    database=services.database,
                    ingest=ingest,
                    project=project,
                    incoming=Spool(settings.storage.spool_dir).incoming,
                    ingest_pool=pool,
                )
                return puller.pull(filters, progress, cancel)
        finally:
            adapter.close()
    finally:
        pool.close()
