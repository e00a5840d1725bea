"""The HTTP API's process in the `serve` tree: uvicorn on a socket `serve` bound (so a taken port stops
start-up at once), its own database engines, stopped with everything else.

The process runs its own `Database`: engines are per process, and the API's reads never share a
connection pool with the listener's writes.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import threading
import time
from multiprocessing.process import BaseProcess
from typing import Any

from bridge.errors import ConfigError
from bridge.process.logs import configure_logging
from bridge.process.signals import interrupt_ignored
from bridge.settings import Settings

logger = logging.getLogger(__name__)
_WATCH_SECONDS = 0.5


def bind(settings: Settings) -> socket.socket:
    """The listening socket of the API; ConfigError naming the address when it cannot be had."""
    http = settings.http
    family = socket.AF_INET6 if ":" in http.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # accepted connections inherit it: without, a response written in two parts waits ~40 ms for the
    # client's delayed ACK (Nagle), on every request
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((http.host, http.port))
    except OSError as error:
        sock.close()
        raise ConfigError(f"http: cannot listen on {http.host}:{http.port} ({error.strerror})") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_http(settings: Settings, sock: socket.socket, stop: Any, supervisor: int) -> None:
    """Body of the API process: serve until the supervisor says stop (or is gone)."""
    import uvicorn

    from bridge.api.app import create_app
    from bridge.wiring import database_for, quiet_pydicom

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings.log_level)
    quiet_pydicom()
    database = database_for(settings)  # `serve` migrated it before starting this process
    app = create_app(settings, database)
    # what start-up made (modules, routes, models) lives as long as the process: out of the collector's
    # sight, a full collection no longer walks it while a request builds thousands of small objects
    gc.freeze()
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,  # query strings are the caller's text: they stay out of the log
        server_header=False,
        lifespan="off",
        timeout_graceful_shutdown=10,
        # "auto" takes httptools and uvloop (dependencies): cheaper parsing and writes than h11 and asyncio
        http="auto",
        loop="auto",
    )
    server = uvicorn.Server(config)

    def watch() -> None:
        while not stop.wait(_WATCH_SECONDS):
            if os.getppid() != supervisor:
                logger.error("the serving process is gone: the HTTP API stops")
                break
        server.should_exit = True

    threading.Thread(target=watch, name="http-stop", daemon=True).start()
    try:
        server.run(sockets=[sock])
    finally:
        database.dispose()


class HttpProcess:
    """The API's process: started on the bound socket, replaced when it dies, stopped on request."""

    def __init__(self, settings: Settings, context: Any) -> None:
        self.settings = settings
        self.context = context
        self.socket = bind(settings)
        self.port = int(self.socket.getsockname()[1])
        self.stopping = context.Event()
        self.process = self._start()

    def _start(self) -> BaseProcess:
        args = (self.settings, self.socket, self.stopping, os.getpid())
        process = self.context.Process(target=run_http, args=args, name="pacs-bridge-http", daemon=True)
        with interrupt_ignored():
            process.start()
        return process  # type: ignore[no-any-return]

    def supervise(self) -> None:
        if not self.process.is_alive() and not self.stopping.is_set():
            logger.error("%s exited with %s; starting another", self.process.name, self.process.exitcode)
            self.process = self._start()

    def stop(self) -> None:
        self.stopping.set()
        self.process.join(15)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        self.socket.close()


def wait_until_ready(host: str, port: int, timeout: float = 30) -> bool:
    """True once the API answers /healthz (start-up logs it only then)."""
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection(host, port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status in (200, 503):
                return True
        except OSError:
            time.sleep(0.1)
        finally:
            connection.close()
    return False
