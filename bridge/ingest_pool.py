"""Ingest of received files in worker processes, so that de-identification and indexing use every core.

Each worker builds its own ingest service (and database connection) once; files are handed over in
batches (one transaction for a batch's rows). They stay where they are: removing them is the caller's.
Workers come from the fork server (`bridge.forkserver`), which has imported the ingest modules once. With
one worker, files are ingested in the calling thread, without processes.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

from bridge import forkserver
from bridge.ingest import IngestItem, IngestResult, IngestService
from bridge.signals import interrupt_ignored


class IngestPool:
    def __init__(self, open_service: Callable[[], IngestService], workers: int) -> None:
        self._open_service = open_service
        self._local: IngestService | None = None
        self._pool: ProcessPoolExecutor | None = None
        self.capacity = max(1, workers)  # batches worth having in progress at once
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=forkserver.context(),
                initializer=_start_worker,
                initargs=(open_service,),
            )
            with interrupt_ignored():  # inherited from the start: Ctrl-C is the caller's to handle
                for _ in range(workers):  # start the workers now: they load while the remote is searched
                    self._pool.submit(_ready)

    def submit(self, items: list[IngestItem]) -> Future[list[IngestResult | Exception]]:
        """Ingest a batch (one transaction for its rows); per item, its result or what stopped it alone.
        With one worker the batch is ingested before this returns."""
        if self._pool is not None:
            return self._pool.submit(_ingest_in_worker, items)
        if self._local is None:
            self._local = self._open_service()
        future: Future[list[IngestResult | Exception]] = Future()
        try:
            future.set_result(self._local.ingest_many(items))
        except Exception as error:
            future.set_exception(error)
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._local is not None:
            self._local.database.dispose()


_worker_service: IngestService | None = None


def _start_worker(open_service: Callable[[], IngestService]) -> None:
    global _worker_service
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # whoever started the pool decides when it stops
    _worker_service = open_service()


def _ready() -> None:
    """A task that only makes the pool start a worker."""


def _ingest_in_worker(items: list[IngestItem]) -> list[IngestResult | Exception]:
    assert _worker_service is not None, "worker not initialised"
    return _worker_service.ingest_many(items)
