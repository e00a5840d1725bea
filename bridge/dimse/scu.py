"""Requests over a pynetdicom association, made safe to issue back to back.

pynetdicom 3.0 pauses an association's reactor thread for each request and resumes it afterwards. If the
reactor has not run since it was resumed (a busy machine, many threads), the next request sees the stale
"paused" flag, goes ahead, and the reactor then takes the response off the queue as an "unexpected" message:
the request waits for its dimse timeout and gets no status. Waiting until the reactor has run closes that.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset


def await_reactor(assoc: Any, timeout: float = 10.0) -> None:
    """Return once the association's reactor has resumed after the last request (or the association ended)."""
    deadline = time.monotonic() + timeout
    while assoc._is_paused and assoc.is_alive() and time.monotonic() < deadline:
        time.sleep(0.0005)


def c_store(assoc: Any, dataset: Any) -> Dataset:
    """C-STORE a dataset (or a file path): the response status dataset (empty when none came)."""
    try:
        return assoc.send_c_store(dataset)  # type: ignore[no-any-return]
    finally:
        await_reactor(assoc)


def responses(requests: Iterator[tuple[Dataset, Dataset | None]], assoc: Any) -> Iterator[tuple[Dataset, Any]]:
    """Pass through the responses of a C-FIND/C-MOVE/C-GET generator, then wait for the reactor."""
    try:
        yield from requests
    finally:
        await_reactor(assoc)
