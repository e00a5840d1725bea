"""`pacs-bridge serve`: start-up, listeners, ingest workers, pull schedules, supervision, and a clean stop.

The serving process runs one listener and the pull schedules itself, and supervises the other processes:
`dimse.listeners - 1` more listeners on the same port (SO_REUSEPORT: the kernel spreads associations over
them, so receiving uses every core) and `dimse.workers` ingest workers. Start-up puts back what crashed
processes had claimed from the spool, and what they had received whole but not yet renamed into it, so what
an earlier run acknowledged is finished first.
SIGTERM/SIGINT: schedules stop after the study they are on, listeners stop accepting, open associations
finish, workers empty the spool, then everything exits; whatever is left stays in the spool for the next
start.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from bridge.dimse.receiver import StoreReceiver
from bridge.dimse.server import Listener, audit_with
from bridge.logs import configure_logging
from bridge.runtime import open_ingest, prepare
from bridge.schedules import Schedules
from bridge.settings import Settings
from bridge.signals import interrupt_ignored
from bridge.spool import Spool
from bridge.workers import run_worker

logger = logging.getLogger(__name__)
_SUPERVISE_SECONDS = 0.5


def serve(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or threading.Event()
    prepare(settings)
    spool = Spool(settings.storage.spool_dir)
    recovered, leftovers = spool.recover(at_start=True)
    if recovered:
        logger.info("recovered %d received instances left outside the spool by an earlier crash", recovered)
    if leftovers:
        logger.info("removed %d partially received instances left by an earlier crash", leftovers)
    released = spool.release_dead_claims()
    backlog = spool.backlog()
    if backlog:
        logger.info("resuming %d received instances from the spool (%d were being ingested)", backlog, released)

    listener = _Listener(settings, spool, reuse_port=settings.dimse.listeners > 1)  # fails early: port taken
    context = multiprocessing.get_context("spawn")  # safe to start from a process with threads
    processes = _Processes(settings, spool, context)
    processes.start()
    dimse = settings.dimse
    logger.info(
        "listening on %s:%d as %s%s (%d listener processes, %d ingest workers)",
        dimse.host,
        listener.port,
        dimse.ae_title,
        " (TLS)" if dimse.tls.enabled else "",
        dimse.listeners,
        dimse.workers,
    )

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    schedules = Schedules(settings, listener.ingest.database)
    try:
        schedules.start()
        while not stop.wait(_SUPERVISE_SECONDS):
            processes.supervise()
    finally:
        schedules.stop()  # a running pull ends after its study, while the listener still takes its C-MOVEs
        listener.stop(settings.dimse.dimse_timeout)
        processes.stop(settings.dimse.dimse_timeout)
        logger.info("stopped")


class _Listener:
    """A DICOM listener in this process: the receiver, its server, and its graceful stop."""

    def __init__(self, settings: Settings, spool: Spool, *, reuse_port: bool) -> None:
        self.ingest = open_ingest(settings, "serve:dimse")
        receiver = StoreReceiver(
            spool=spool, ingest=self.ingest, min_free_bytes=settings.dimse.min_free_space_mb * 1024 * 1024
        )
        self.server = Listener(
            settings, receiver, audit_with(self.ingest.database, "serve:dimse"), reuse_port=reuse_port
        )
        self.port = self.server.port

    def stop(self, grace: float) -> None:
        """No new associations; open ones get `grace` seconds to finish."""
        self.server.stop(grace)
        self.ingest.database.dispose()


def run_listener(settings: Settings, stop: Any, supervisor: int) -> None:
    """Body of an extra listener process: listen on the shared port until the supervisor says stop (or is
    gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_level)
    listener = _Listener(settings, Spool(settings.storage.spool_dir), reuse_port=True)
    while not stop.wait(_SUPERVISE_SECONDS):
        if os.getppid() != supervisor:  # the serving process died (SIGKILL): no one would stop this one
            logger.error("the serving process is gone: this listener stops")
            break
    listener.stop(settings.dimse.dimse_timeout)


class _Processes:
    """The extra listeners and the ingest workers: started, replaced when they die, stopped in order."""

    def __init__(self, settings: Settings, spool: Spool, context: Any) -> None:
        self.settings = settings
        self.spool = spool
        self.context = context
        self.drain = context.Event()
        self.stop_workers = context.Event()
        self.stop_listeners = context.Event()
        self.workers: list[BaseProcess] = []
        self.listeners: list[BaseProcess] = []

    def start(self) -> None:
        for _ in range(self.settings.dimse.workers):
            self.workers.append(self._worker())
        for _ in range(self.settings.dimse.listeners - 1):
            self.listeners.append(self._listener())

    def _worker(self) -> BaseProcess:
        open_service = functools.partial(open_ingest, self.settings, "serve:ingest")
        process = self.context.Process(
            target=run_worker,
            args=(open_service, self.spool.root, self.drain, self.stop_workers, self.settings.log_level, os.getpid()),
            name="pacs-bridge-ingest",
            daemon=True,
        )
        with interrupt_ignored():
            process.start()
        return process  # type: ignore[no-any-return]

    def _listener(self) -> BaseProcess:
        process = self.context.Process(
            target=run_listener,
            args=(self.settings, self.stop_listeners, os.getpid()),
            name="pacs-bridge-listener",
            daemon=True,
        )
        with interrupt_ignored():
            process.start()
        return process  # type: ignore[no-any-return]

    def supervise(self) -> None:
        """Replace dead processes; what a dead worker had claimed goes back to the spool, and what a dead
        listener had received and not yet put there is."""
        replaced = False
        for group, make in ((self.workers, self._worker), (self.listeners, self._listener)):
            for index, process in enumerate(group):
                if not process.is_alive():
                    logger.error("%s exited with %s; starting another", process.name, process.exitcode)
                    group[index] = make()
                    replaced = True
        self.spool.release_dead_claims()
        if replaced:
            self.spool.recover(at_start=False)

    def stop(self, grace: float) -> None:
        self.stop_listeners.set()
        for process in self.listeners:
            process.join(grace + 5)
        self.drain.set()  # workers finish the spool, then exit
        deadline = time.monotonic() + grace
        for process in self.workers:
            process.join(max(0.1, deadline - time.monotonic()))
        self.stop_workers.set()  # what is still unfinished stays in the spool
        for process in self.workers + self.listeners:
            process.join(10)
            if process.is_alive():
                process.terminate()
        self.spool.release_dead_claims()
