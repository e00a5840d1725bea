"""`pacs-bridge serve`, the composition root of the service: one runtime, the intake, the pull schedules, the
HTTP API.

The serving process owns one `Runtime` (one database) and hands it down. The intake is what receives:
one DICOM listener in this process, `dimse.listeners - 1` more listener processes on the same port
(SO_REUSEPORT: the kernel spreads associations over them, so receiving uses every core) and
`dimse.workers` ingest worker processes, all supervised from here. Start-up puts back what crashed
processes had claimed from the spool, and what they had received whole but not yet renamed into it, so
what an earlier run acknowledged is finished first.
SIGTERM/SIGINT: schedules stop after the study they are on, listeners stop accepting, open associations
finish, workers empty the spool, then everything exits; whatever is left stays in the spool for the next
start.

A command-line C-MOVE pull with no `serve` running runs the intake alone (`receiving`), never the schedules.
"""

from __future__ import annotations

import functools
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from bridge.api.server import HttpProcess, wait_until_ready
from bridge.dimse.acceptor import Acceptor, audit_with
from bridge.dimse.association import Services
from bridge.dimse.qr_handlers import QueryRetrieveScp
from bridge.dimse.qr_service import QueryRetrieveService
from bridge.dimse.store import StoreService
from bridge.errors import ConfigError, RemoteError
from bridge.ingest.workers import run_spool_worker
from bridge.process.logs import configure_logging
from bridge.process.metrics import share_between_processes
from bridge.process.signals import interrupt_ignored
from bridge.pull.schedules import Schedules
from bridge.settings import Settings
from bridge.wiring import Runtime
from storage import statistics
from storage.spool import Spool

logger = logging.getLogger(__name__)
_SUPERVISE_SECONDS = 0.5
_STATISTICS_SECONDS = 60.0  # how often the planner statistics are looked at (`storage.statistics`)


def serve(settings: Settings, *, stop: threading.Event | None = None) -> None:
    """Run until `stop` is set or SIGTERM/SIGINT arrives."""
    stop = stop or threading.Event()
    if settings.http.enabled:
        share_between_processes(settings.http.metrics_dir)  # before any process that counts is started
    with Runtime.start(settings) as runtime:
        http = HttpProcess(settings, multiprocessing.get_context("spawn")) if settings.http.enabled else None
        try:
            intake = Intake(settings, runtime)  # fails early: port taken
        except BaseException:
            if http is not None:
                http.stop()
            raise
        if http is not None:
            host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.http.host, settings.http.host)
            ready = wait_until_ready(host, http.port)
            logger.info(
                "HTTP API on http://%s:%d%s", settings.http.host, http.port, "" if ready else " (not answering yet)"
            )
        dimse = settings.dimse
        logger.info(
            "listening on %s:%d as %s%s (%d listener processes, %d ingest workers)",
            dimse.host,
            intake.port,
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
        # the schedules' C-MOVE pulls are received by this intake's listener
        schedules = Schedules(settings, runtime, open_services=functools.partial(Runtime.open, settings))
        deliveries = Deliveries(settings, runtime)
        try:
            schedules.start()
            deliveries.start()
            looked_at = -_STATISTICS_SECONDS  # at start, then once a minute
            while not stop.wait(_SUPERVISE_SECONDS):
                intake.supervise()
                if http is not None:
                    http.supervise()
                if time.monotonic() - looked_at >= _STATISTICS_SECONDS:
                    looked_at = time.monotonic()
                    refresh_statistics(runtime)
        finally:
            if http is not None:
                http.stop()
            deliveries.stop()  # a SEG being sent is finished; what is queued stays queued
            schedules.stop()  # a running pull ends after its study, while the listener still takes its C-MOVEs
            intake.stop()
            logger.info("stopped")


def refresh_statistics(runtime: Runtime) -> None:
    """Fresh planner statistics after the index grew; a failure (a busy database) waits for the next look."""
    try:
        statistics.refresh(runtime.database.research_engine)
    except Exception:  # noqa: BLE001 - the service goes on; the next look tries again
        logger.warning("could not refresh the planner statistics", exc_info=True)


class Deliveries:
    """The outbox worker thread (`deliveries.enabled`): SEGs of final approvals to their destinations."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if not self.settings.deliveries.enabled:
            return
        from bridge.delivery.worker import DeliveryWorker

        worker = DeliveryWorker(self.settings, self.runtime)
        self.thread = threading.Thread(target=worker.run, args=(self.done,), name="deliveries", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join(self.settings.deliveries.lease_seconds)


@contextmanager
def receiving(settings: Settings, runtime: Runtime, called: str) -> Iterator[None]:
    """While inside: a listener receives C-MOVE sub-operations for `called`. A running `serve` does; else the
    intake runs here (listeners and ingest workers, no schedules), and on leaving it stops after its spool is
    ingested."""
    from bridge.remotes.scu import association_answers

    host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(settings.dimse.host, settings.dimse.host)
    if association_answers(
        host, settings.dimse.port, calling_ae=settings.dimse.ae_title, called_ae=called, tls=settings.dimse.tls.enabled
    ):
        yield
        return
    try:
        intake = Intake(settings, runtime)
    except ConfigError as error:
        raise RemoteError(f"cannot receive C-MOVE on port {settings.dimse.port}: {error}") from None
    done = threading.Event()

    def supervise() -> None:
        while not done.wait(_SUPERVISE_SECONDS):
            intake.supervise()

    supervisor = threading.Thread(target=supervise, name="pull-intake", daemon=True)
    supervisor.start()
    try:
        yield
    finally:
        done.set()
        supervisor.join()
        intake.stop()


class Intake:
    """Everything that receives: this process's listener, the extra listener processes and the ingest
    workers; started at once (after the spool's crash recovery), replaced when they die, stopped in order."""

    def __init__(self, settings: Settings, runtime: Runtime) -> None:
        self.settings = settings
        self.spool = Spool(settings.storage.spool_dir)
        recovered, leftovers = self.spool.recover(at_start=True)
        if recovered:
            logger.info("recovered %d received instances left outside the spool by an earlier crash", recovered)
        if leftovers:
            logger.info("removed %d partially received instances left by an earlier crash", leftovers)
        released = self.spool.release_dead_claims()
        backlog = self.spool.backlog()
        if backlog:
            logger.info("resuming %d received instances from the spool (%d were being ingested)", backlog, released)
        self.listener = listen(settings, runtime, self.spool, reuse_port=settings.dimse.listeners > 1)
        self.port = self.listener.port
        self.processes = _Processes(settings, self.spool, multiprocessing.get_context("spawn"))
        self.processes.start()

    def supervise(self) -> None:
        self.processes.supervise()

    def stop(self) -> None:
        """No new associations; open ones get `dimse.dimse_timeout` to finish; workers then empty the spool."""
        grace = self.settings.dimse.dimse_timeout
        self.listener.stop(grace)
        self.processes.stop(grace)


def listen(settings: Settings, runtime: Runtime, spool: Spool, *, reuse_port: bool) -> Acceptor:
    """A DICOM listener in this process, answering C-ECHO, C-STORE into `spool`, and C-FIND, C-MOVE and
    C-GET from the index and the store."""
    store = StoreService(
        spool=spool,
        ingest=runtime.ingest("serve:dimse"),
        min_free_bytes=settings.dimse.min_free_space_mb * 1024 * 1024,
    )
    audit = audit_with(runtime.database, "serve:dimse")
    query_retrieve = QueryRetrieveScp(
        QueryRetrieveService(settings=settings, database=runtime.database, store=runtime.store),
        timeouts=settings.dimse,
        audit=audit,
    )
    return Acceptor(settings, Services(store=store, query_retrieve=query_retrieve), audit, reuse_port=reuse_port)


def run_listener(settings: Settings, stop: Any, supervisor: int) -> None:
    """Body of an extra listener process: listen on the shared port until the supervisor says stop (or is
    gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_level)
    with Runtime.open(settings) as runtime:
        listener = listen(settings, runtime, Spool(settings.storage.spool_dir), reuse_port=True)
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

    def _start(self, target: Any, args: tuple[Any, ...], name: str) -> BaseProcess:
        process = self.context.Process(target=target, args=args, name=name, daemon=True)
        with interrupt_ignored():
            process.start()
        return process  # type: ignore[no-any-return]

    def _worker(self) -> BaseProcess:
        open_services = functools.partial(Runtime.open, self.settings)
        args = (open_services, "serve:ingest", self.spool.root, self.drain, self.stop_workers)
        return self._start(run_spool_worker, (*args, self.settings.log_level, os.getpid()), "pacs-bridge-ingest")

    def _listener(self) -> BaseProcess:
        args = (self.settings, self.stop_listeners, os.getpid())
        return self._start(run_listener, args, "pacs-bridge-listener")

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
