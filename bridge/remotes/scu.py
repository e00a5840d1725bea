"""Requests over a pynetdicom association (the bridge as SCU), made safe to issue back to back.

pynetdicom 3.0 pauses an association's reactor thread for each request and resumes it afterwards. If the
reactor has not run since it was resumed (a busy machine, many threads), the next request sees the stale
"paused" flag, goes ahead, and the reactor then takes the response off the queue as an "unexpected" message:
the request waits for its dimse timeout and gets no status. Waiting until the reactor has run closes that.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset


def await_reactor(assoc: Any, timeout: float = 10.0) -> None:
    """Return once the association's reactor has resumed after the last request (or the association ended)."""
    deadline = time.monotonic() + timeout
    # private: pynetdicom has no public way to tell that its reactor has resumed
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


def association_answers(host: str, port: int, *, calling_ae: str, called_ae: str, tls: bool) -> bool:
    """Whether a DICOM node answers an A-ASSOCIATE-RQ on `host:port` (accepting or rejecting us: both say so).
    Over TLS it may ask for a client certificate we lack, so a connection to the port has to do."""
    if tls:
        try:
            socket.create_connection((host, port), timeout=5).close()
        except OSError:
            return False
        return True
    from pynetdicom import AE  # imported when used: ~0.3 s

    from bridge.dicom.sop_classes import Verification

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    assoc = ae.associate(host, port, ae_title=called_ae)
    answered = bool(assoc.is_established or assoc.is_rejected)
    if assoc.is_established:
        assoc.release()
    return answered
