"""One pull from start to end, as `pacs-bridge pull` and the schedules of `serve` run it."""

from __future__ import annotations

import functools
import threading
from contextlib import AbstractContextManager, nullcontext

from bridge.ingest_pool import IngestPool
from bridge.pull import Puller, PullFilters, PullProgress, PullReport
from bridge.remotes.connect import move_destination, open_remote, receiving
from bridge.runtime import open_ingest, prepare
from bridge.settings import RemoteSettings, Settings
from bridge.spool import Spool


def run_pull(
    settings: Settings,
    remote: RemoteSettings,
    project: str,
    filters: PullFilters,
    *,
    actor: str,
    progress: PullProgress | None = None,
    prepared: bool = False,
    cancel: threading.Event | None = None,
    workers: int = 1,
) -> PullReport:
    """Pull into `project`. C-MOVE needs a listener for the remote to send to: `serve`'s, or one started
    here for the duration. `workers` processes ingest what is retrieved. Raises `RemoteError` when the remote
    cannot be searched at all."""
    if not prepared:
        prepare(settings)
    ingest = open_ingest(settings, f"pull:{actor}")
    pool = IngestPool(functools.partial(open_ingest, settings, f"pull:{actor}"), workers)
    adapter = open_remote(settings, remote, project)
    listening: AbstractContextManager[None] = nullcontext()
    if adapter.via_listener:
        listening = receiving(settings, move_destination(settings, remote, project))
    try:
        with listening:
            puller = Puller(adapter, ingest, project, Spool(settings.storage.spool_dir).incoming, pool)
            return puller.pull(filters, progress, cancel)
    finally:
        pool.close()
        adapter.close()
        ingest.database.dispose()
