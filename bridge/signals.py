"""Ctrl-C belongs to the process that started the others: children start with SIGINT ignored.

A terminal sends SIGINT to its whole foreground process group. A spawned child that is still importing
when it arrives dies with a traceback; an ignored signal is inherited across exec, so children started
inside `interrupt_ignored()` never see it, and their parent stops them in order.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


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
