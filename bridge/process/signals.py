"""Ctrl-C belongs to the process that started the others: children start with SIGINT ignored.

A terminal sends SIGINT to its whole foreground process group. A spawned child that is still importing
when it arrives dies with a traceback; an ignored signal is inherited across exec, so children started
inside `interrupt_ignored()` never see it, and their parent stops them in order.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


@contextmanager
def interrupt_ignored() -> Iterator[None]:
    """SIGINT ignored while processes are started (only the main thread may change signal handling)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def interrupt_requests_stop(stop: threading.Event, announce: Callable[[], None]) -> Iterator[None]:
    """The first Ctrl-C sets `stop` (the work ends at its next safe point); a second one interrupts at once.

    A handler that only sets an event cannot be lost: a KeyboardInterrupt raised while a finalizer runs is
    printed and swallowed by the interpreter, and the command would carry on as if never interrupted.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        announce()

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
