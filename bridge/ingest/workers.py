"""Ingest worker processes, so that de-identification and indexing use every core.

Work reaches them in one of two ways, by who holds it:
- `IngestPool`: a caller with files in hand (`import`, `pull`) submits batches and gets each batch's
  results back. Its processes are forks of the fork server (`bridge.process.forkserver`), which imported
  the ingest modules once; with one worker, batches are ingested in the calling thread, without processes.
- `run_spool_worker`: the body of one of `serve`'s worker processes. The spool is the source of truth and
  the only channel: listeners (in any process) admit entries, workers claim them by rename, a batch at a
  time. An entry is removed only after ingest committed (stored, duplicate or quarantined), so a crash
  anywhere re-runs it and ingest recognises what it already has. They run at a lower CPU priority than the
  listeners: a waiting PACS is answered first, de-identification catches up after a burst.

Either way a worker process opens its own services (database engines included) once, and a batch of
`BATCH_SIZE` instances is one transaction for its rows. Files are left where they are: removing them is the
caller's (the spool's entries: the spool worker's, once committed).
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Protocol

from bridge.ingest.service import IngestItem, IngestResult, IngestService
from bridge.process import forkserver
from bridge.process.logs import configure_logging
from bridge.process.metrics import metrics
from bridge.process.signals import interrupt_ignored
from storage.spool import Spool, SpoolEntry

logger = logging.getLogger(__name__)

BATCH_SIZE = 16  # instances per ingest call (one transaction for their rows), for every intake
WORKER_NICENESS = 10
IDLE_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 60.0


class WorkerServices(Protocol):
    """What a worker process opens once: its ingest services, closed when the process ends."""

    def ingest(self, actor: str) -> IngestService: ...

    def close(self) -> None: ...


class IngestPool:
    """Batches ingested by `workers` processes (each opening its services with `open_services`, ingesting as
    `local`'s actor), or by `local` in the calling thread when `workers` is 1."""

    def __init__(
        self, local: IngestService, workers: int, *, open_services: Callable[[], WorkerServices] | None = None
    ) -> None:
        self._local = local
        self._pool: ProcessPoolExecutor | None = None
        self.capacity = max(1, workers)  # batches worth having in progress at once
        if workers > 1:
            if open_services is None:
                raise ValueError("several ingest workers need open_services")
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=forkserver.context(),
                initializer=_start_pool_worker,
                initargs=(open_services, local.actor),
            )
            with interrupt_ignored():  # inherited from the start: Ctrl-C is the caller's to handle
                for _ in range(workers):  # start the workers now: they load while the remote is searched
                    self._pool.submit(_ready)

    def submit(self, items: list[IngestItem]) -> Future[list[IngestResult | Exception]]:
        """Ingest a batch (one transaction for its rows); per item, its result or what stopped it alone.
        With one worker the batch is ingested before this returns."""
        if self._pool is not None:
            return self._pool.submit(_ingest_in_pool_worker, items)
        future: Future[list[IngestResult | Exception]] = Future()
        try:
            future.set_result(self._local.ingest_many(items))
        except Exception as error:
            future.set_exception(error)
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


_pool_worker: IngestService | None = None  # the ingest service of this pool worker process


def _start_pool_worker(open_services: Callable[[], WorkerServices], actor: str) -> None:
    global _pool_worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # whoever started the pool decides when it stops
    _pool_worker = open_services().ingest(actor)  # for the life of the process


def _ready() -> None:
    """A task that only makes the pool start a worker."""


def _ingest_in_pool_worker(items: list[IngestItem]) -> list[IngestResult | Exception]:
    assert _pool_worker is not None, "worker not initialised"
    return _pool_worker.ingest_many(items)


def run_spool_worker(
    open_services: Callable[[], WorkerServices],
    actor: str,
    spool_root: Path,
    drain: Event,
    stop: Event,
    log_level: str,
    supervisor: int,
) -> None:
    """Worker process body: ingest claimed entries until `stop`, or until the spool is empty once `drain`,
    or until the `supervisor` process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when workers stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(log_level)
    os.nice(WORKER_NICENESS)
    services = open_services()
    service = services.ingest(actor)
    spool = Spool(spool_root)
    # Clearing what is committed waits on the filesystem's journal, and need not hold up the next batch (an
    # entry a crash leaves is ingested again: a duplicate, recognised as such).
    clearing = ThreadPoolExecutor(1, thread_name_prefix="spool-done")
    failures = 0
    try:
        while not stop.is_set():
            if os.getppid() != supervisor:  # the serving process died: its next start releases our claims
                logger.error("the serving process is gone: this ingest worker stops")
                break
            batch = spool.claim(BATCH_SIZE)
            if not batch:
                if drain.is_set():
                    break
                time.sleep(IDLE_SECONDS)
                continue
            if stop.is_set():
                for entry in batch:
                    spool.unclaim(entry)
                continue
            received = [_received_at(entry) for entry in batch]
            try:
                results = service.ingest_many([IngestItem(e.path, e.project, e.source, checked=True) for e in batch])
            except Exception as exc:  # the database is down, say: everything stays in the spool
                results = [exc] * len(batch)
            _observe_latency(results, received)
            done = []
            for entry, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    failures += 1
                    logger.error("ingest of a spool entry failed (%s); it stays in the spool", type(result).__name__)
                    logger.debug("failure detail", exc_info=result)
                    spool.unclaim(entry)
                else:
                    failures = 0
                    done.append(entry)
            clearing.submit(_clear, spool, done)
            if failures:
                time.sleep(min(MAX_BACKOFF_SECONDS, 0.5 * 2**failures))
    finally:
        clearing.shutdown(wait=True)
        services.close()


def _received_at(entry: SpoolEntry) -> float | None:
    """When the entry was acknowledged: its file was last written then, and renamed into the spool as is."""
    try:
        return entry.path.stat().st_mtime
    except OSError:
        return None


def _observe_latency(results: Sequence[object], received: Sequence[float | None]) -> None:
    latency, now = metrics().latency, time.time()
    for result, at in zip(results, received, strict=True):
        if at is not None and not isinstance(result, Exception):
            latency.observe(max(0.0, now - at))


def _clear(spool: Spool, entries: list[SpoolEntry]) -> None:
    for entry in entries:
        try:
            spool.done(entry)
        except OSError:  # still claimed: given back once this process is gone, then found a duplicate
            logger.exception("could not remove an ingested spool entry")
