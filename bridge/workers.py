"""Ingest workers: processes that take spool entries, run the ingest service, and clear the entry.

The spool is the source of truth: an entry is removed only after ingest committed (stored, duplicate or
quarantined), so a crash anywhere re-runs it, and ingest recognises what it already has. The dispatcher in
the serving process tracks what is in flight, retries failures with backoff, rescans the spool for entries
nobody holds (a worker that died), and replaces dead workers.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from bridge.ingest import IngestService
from bridge.spool import Spool, SpoolEntry

logger = logging.getLogger(__name__)

RESCAN_SECONDS = 30.0
WORKER_NICENESS = 10
RETRY_SECONDS = (1.0, 5.0, 30.0, 120.0)


@dataclass(frozen=True)
class _Done:
    path: Path
    ok: bool


def _work(open_service: Callable[[], IngestService], spool_root: Path, tasks: Queue[Any], results: Queue[Any]) -> None:
    """A worker process: ingest entries until told to stop (None). It runs at a lower CPU priority than the
    listener: a waiting PACS is answered first, de-identification catches up when the burst is over."""
    os.nice(WORKER_NICENESS)
    service = open_service()
    spool = Spool(spool_root)
    while (entry := tasks.get()) is not None:
        if not entry.path.exists():  # handled by another worker before a restart re-queued it
            results.put(_Done(entry.path, ok=True))
            continue
        try:
            service.ingest(entry.path, project=entry.project, source=entry.source)
        except Exception as exc:
            logger.error("ingest of a spool entry failed (%s); it stays in the spool", type(exc).__name__)
            logger.debug("failure detail", exc_info=True)
            results.put(_Done(entry.path, ok=False))
            continue
        spool.done(entry)
        results.put(_Done(entry.path, ok=True))
    service.database.dispose()


class IngestWorkers:
    def __init__(self, open_service: Callable[[], IngestService], spool: Spool, count: int) -> None:
        self._context = multiprocessing.get_context("spawn")  # safe to start from a threaded process
        self._open_service = open_service
        self._spool = spool
        self._count = count
        self._tasks: Queue[Any] = self._context.Queue()
        self._results: Queue[Any] = self._context.Queue()
        self._processes: list[BaseProcess] = []
        self._in_flight: dict[Path, SpoolEntry] = {}
        self._failures: dict[Path, int] = {}
        self._retry_at: dict[Path, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._dispatcher = threading.Thread(target=self._dispatch, name="ingest-dispatcher", daemon=True)
        self.completed = 0

    def start(self) -> None:
        for _ in range(self._count):
            self._start_process()
        self._dispatcher.start()
        self.rescan()

    def _start_process(self) -> None:
        process = self._context.Process(
            target=_work,
            args=(self._open_service, self._spool.root, self._tasks, self._results),
            name="pacs-bridge-ingest",
            daemon=True,
        )
        process.start()
        self._processes.append(process)

    def submit(self, entry: SpoolEntry) -> None:
        with self._lock:
            if entry.path in self._in_flight:
                return
            self._in_flight[entry.path] = entry
        self._tasks.put(entry)

    def rescan(self) -> int:
        """Queue every spool entry not already in flight (start-up drain, and lost work)."""
        before = len(self._in_flight)
        for entry in self._spool.entries():
            if entry.path not in self._retry_at:
                self.submit(entry)
        return len(self._in_flight) - before

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._in_flight)

    def _dispatch(self) -> None:
        last_scan = time.monotonic()
        while not self._stopping.is_set() or self.pending:
            try:
                done: _Done = self._results.get(timeout=0.5)
            except Exception:  # queue.Empty, raised by multiprocessing's queue
                done = None  # type: ignore[assignment]
            if done is not None:
                self._finish(done)
            now = time.monotonic()
            self._retry_due(now)
            self._replace_dead_workers()
            if now - last_scan > RESCAN_SECONDS and not self._stopping.is_set():
                last_scan = now
                self.rescan()

    def _finish(self, done: _Done) -> None:
        with self._lock:
            entry = self._in_flight.pop(done.path, None)
        if done.ok:
            self.completed += 1
            self._failures.pop(done.path, None)
            return
        failures = self._failures[done.path] = self._failures.get(done.path, 0) + 1
        if entry is not None and not self._stopping.is_set():
            delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS)) - 1]
            self._retry_at[done.path] = time.monotonic() + delay

    def _retry_due(self, now: float) -> None:
        for path, when in list(self._retry_at.items()):
            if when <= now:
                del self._retry_at[path]
                if path.exists():
                    self.submit(SpoolEntry(path=path, project=path.parent.parent.name, source=path.parent.name))

    def _replace_dead_workers(self) -> None:
        for process in list(self._processes):
            if not process.is_alive() and not self._stopping.is_set():
                logger.error("an ingest worker died (exit code %s); starting another", process.exitcode)
                self._processes.remove(process)
                self._start_process()
                with self._lock:
                    self._in_flight.clear()  # what it held is still in the spool: the next rescan finds it
                self.rescan()

    def stop(self, timeout: float = 60.0) -> None:
        """Finish what is queued (flush), then stop the workers. Unfinished entries stay in the spool."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline and any(p.is_alive() for p in self._processes):
            time.sleep(0.1)
        self._stopping.set()
        for _ in self._processes:
            self._tasks.put(None)
        for process in self._processes:
            process.join(max(0.1, deadline - time.monotonic()))
            if process.is_alive():
                process.terminate()
        self._dispatcher.join(timeout=5)
