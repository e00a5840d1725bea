"""Ingest of received files in worker processes, so that de-identification and indexing use every core.

Each worker builds its own ingest service (and database connection) once; a file handed over belongs to
the pool, which removes it once ingested. Workers are spawned, not forked: the caller may be `serve`, with
threads running. With one worker, files are ingested in the calling thread, without processes.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path

from bridge.ingest import IngestService, Outcome


class IngestPool:
    def __init__(self, open_service: Callable[[], IngestService], workers: int) -> None:
        self._open_service = open_service
        self._local: IngestService | None = None
        self._pool: ProcessPoolExecutor | None = None
        if workers > 1:
            self._pool = ProcessPoolExecutor(
                workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(open_service,),
            )
            for _ in range(workers):  # start the workers now: they load while the remote is searched
                self._pool.submit(_ready)

    def submit(self, path: Path, *, project: str, source: str) -> Future[Outcome]:
        if self._pool is not None:
            return self._pool.submit(_ingest_in_worker, path, project, source)
        if self._local is None:
            self._local = self._open_service()
        future: Future[Outcome] = Future()
        try:
            future.set_result(_ingest(self._local, path, project, source))
        except Exception as error:
            future.set_exception(error)
        return future

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self._local is not None:
            self._local.database.dispose()


def _ingest(service: IngestService, path: Path, project: str, source: str) -> Outcome:
    try:
        return service.ingest(path, project=project, source=source).outcome
    finally:
        path.unlink(missing_ok=True)


_worker_service: IngestService | None = None


def _start_worker(open_service: Callable[[], IngestService]) -> None:
    global _worker_service
    _worker_service = open_service()


def _ready() -> None:
    """A task that only makes the pool start a worker."""


def _ingest_in_worker(path: Path, project: str, source: str) -> Outcome:
    assert _worker_service is not None, "worker not initialised"
    return _ingest(_worker_service, path, project, source)
