"""The fork server that ingest worker processes come from.

It imports the ingest modules once, and each worker is a fork of it (forking the caller itself is not safe:
it may be `serve`, with threads running; spawning would import everything in every worker). A pull starts it
first thing, so that its imports (~0.6 s of CPU) run on the other core while the command imports its own.
"""

from __future__ import annotations

import multiprocessing
from multiprocessing import forkserver
from multiprocessing.context import ForkServerContext

from bridge.process.signals import interrupt_ignored

PRELOAD = ["bridge.ingest.workers", "bridge.wiring"]


def context() -> ForkServerContext:
    """The multiprocessing context whose processes are forks of the fork server."""
    found = multiprocessing.get_context("forkserver")
    found.set_forkserver_preload(PRELOAD)
    return found


def start() -> None:
    """Start the fork server now, if it is not running; returns without waiting for its imports."""
    context()
    with interrupt_ignored():  # Ctrl-C is the caller's to handle
        forkserver.ensure_running()
