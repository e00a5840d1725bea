"""`pacs-bridge serve`: start-up, the listener, the ingest workers, and a clean stop on SIGTERM/SIGINT.

Start-up drains the spool first (queues what an earlier run acknowledged but did not finish) before it
accepts associations. Stopping refuses new associations, lets those in progress finish, then lets the
workers finish what is queued; whatever is left stays in the spool for the next start.
"""

from __future__ import annotations

import functools
import logging
import signal
import threading
import time
from types import FrameType

from bridge.dimse.receiver import StoreReceiver
from bridge.dimse.server import audit_with, start_listener
from bridge.runtime import open_ingest, prepare
from bridge.settings import Settings
from bridge.spool import Spool
from bridge.workers import IngestWorkers

logger = logging.getLogger(__name__)


def serve(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or threading.Event()
    prepare(settings)
    spool = Spool(settings.storage.spool_dir)
    leftovers = spool.sweep()
    if leftovers:
        logger.info("removed %d partially received instances left by an earlier crash", leftovers)

    workers = IngestWorkers(functools.partial(open_ingest, settings, "serve:ingest"), spool, settings.dimse.workers)
    workers.start()
    if workers.pending:
        logger.info("resuming %d received instances from the spool", workers.pending)

    ingest = open_ingest(settings, "serve:dimse")
    receiver = StoreReceiver(
        spool=spool,
        ingest=ingest,
        submit=workers.submit,
        min_free_bytes=settings.dimse.min_free_space_mb * 1024 * 1024,
    )
    server = start_listener(settings, receiver, audit_with(ingest.database, "serve:dimse"))
    dimse = settings.dimse
    logger.info(
        "listening on %s:%d as %s%s",
        dimse.host,
        server.server_address[1],
        dimse.ae_title,
        " (TLS)" if dimse.tls.enabled else "",
    )

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    try:
        stop.wait()
    finally:
        _stop(server, workers, settings)
        ingest.database.dispose()
        logger.info("stopped")


def _stop(server: object, workers: IngestWorkers, settings: Settings) -> None:
    server.shutdown()  # type: ignore[attr-defined]  # no new associations; the listening socket closes
    deadline = time.monotonic() + settings.dimse.dimse_timeout
    while server.active_associations and time.monotonic() < deadline:  # type: ignore[attr-defined]
        time.sleep(0.1)
    for association in server.active_associations:  # type: ignore[attr-defined]
        logger.warning("aborting an association still open after dimse.dimse_timeout")
        association.abort()
    workers.stop(timeout=settings.dimse.dimse_timeout)
