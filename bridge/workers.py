"""Ingest workers: processes that claim spool entries, run the ingest service, and clear each entry.

The spool is the source of truth and the only channel: listeners (in any process) admit entries, workers
claim them by rename, a batch at a time (one transaction for the batch's rows). An entry is removed only
after ingest committed (stored, duplicate or quarantined), so a crash anywhere re-runs it and ingest
recognises what it already has. Workers run at a lower CPU
priority than the listeners: a waiting PACS is answered first, de-identification catches up after a burst.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.synchronize import Event
from pathlib import Path

from bridge.ingest import IngestItem, IngestService
from bridge.logs import configure_logging
from bridge.spool import Spool, SpoolEntry

logger = logging.getLogger(__name__)

WORKER_NICENESS = 10
CLAIM_BATCH = 16
IDLE_SECONDS = 0.05
MAX_BACKOFF_SECONDS = 60.0


def run_worker(
    open_service: Callable[[], IngestService],
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
    service = open_service()
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
            batch = spool.claim(CLAIM_BATCH)
            if not batch:
                if drain.is_set():
                    break
                time.sleep(IDLE_SECONDS)
                continue
            if stop.is_set():
                for entry in batch:
                    spool.unclaim(entry)
                continue
            try:
                results = service.ingest_many([IngestItem(e.path, e.project, e.source, checked=True) for e in batch])
            except Exception as exc:  # the database is down, say: everything stays in the spool
                results = [exc] * len(batch)
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
        service.database.dispose()


def _clear(spool: Spool, entries: list[SpoolEntry]) -> None:
    for entry in entries:
        try:
            spool.done(entry)
        except OSError:  # still claimed: given back once this process is gone, then found a duplicate
            logger.exception("could not remove an ingested spool entry")
