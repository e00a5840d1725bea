"""From configuration to a remote adapter, and, for C-MOVE, a listener to receive what it sends.

C-MOVE delivers to the bridge's own DICOM listener under the project's AE title (so the listener routes
the instances to the project). When `serve` is running it is that listener; otherwise a pull runs one in
its own process for as long as it needs it. Each kind of remote is imported when used: pynetdicom alone
takes ~0.3 s to import, which a DICOMweb pull does not need.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from bridge.remotes.base import Remote, RemoteError
from bridge.settings import ConfigError, RemoteSettings, Settings

Retrieval = Literal["dicomweb", "c-move", "c-get"]


def remote_settings(settings: Settings, name: str, retrieve: Retrieval | None = None) -> RemoteSettings:
    """The named remote, with `retrieve` overridden (and checked) when asked."""
    remote = settings.remote(name)
    if retrieve is None:
        return remote
    try:
        return RemoteSettings.model_validate({**remote.model_dump(), "retrieve": retrieve})
    except ValueError as error:
        raise ConfigError(f"remote {name!r}: {error}") from None


def move_destination(settings: Settings, remote: RemoteSettings, project: str) -> str:
    """The AE title C-MOVE sends to: the remote's `move_destination`, else the project's own AE title."""
    if remote.move_destination:
        return remote.move_destination
    own = settings.project(project).dimse.ae_title
    if own:
        return own
    if settings.dimse.default_project == project:
        return settings.dimse.ae_title
    raise ConfigError(
        f"C-MOVE for project {project!r} needs an AE title the remote sends to: set projects.{project}.dimse.ae_title"
        f" (and make it known to remote {remote.name!r} with this host and port {settings.dimse.port})"
    )


def open_remote(settings: Settings, remote: RemoteSettings, project: str) -> Remote:
    if remote.retrieval == "dicomweb":
        from bridge.remotes.dicomweb import DicomwebRemote

        return DicomwebRemote(remote)
    from bridge.remotes.dimse import DimseRemote

    destination = move_destination(settings, remote, project) if remote.retrieval == "c-move" else None
    return DimseRemote(remote, calling_ae=settings.dimse.ae_title, move_destination=destination)


def _local_host(host: str) -> str:
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)


def listener_answers(settings: Settings, called: str) -> bool:
    """Whether a DICOM listener answers on the configured port (accepting or rejecting us: both say so)."""
    host = _local_host(settings.dimse.host)
    if settings.dimse.tls.enabled:  # it may ask for a client certificate we lack: a taken port has to do
        try:
            socket.create_connection((host, settings.dimse.port), timeout=5).close()
        except OSError:
            return False
        return True
    from pynetdicom import AE

    from bridge.remotes.dimse import VERIFICATION

    ae = AE(ae_title=settings.dimse.ae_title)
    ae.add_requested_context(VERIFICATION)
    ae.acse_timeout = ae.network_timeout = ae.connection_timeout = 5
    assoc = ae.associate(host, settings.dimse.port, ae_title=called)
    answered = bool(assoc.is_established or assoc.is_rejected)
    if assoc.is_established:
        assoc.release()
    return answered


@contextmanager
def receiving(settings: Settings, called: str, timeout: float = 60) -> Iterator[None]:
    """While inside: a listener receives C-MOVE sub-operations for `called`. A running `serve` does; else one
    runs here (with its ingest workers), and on leaving it stops after its spool is ingested."""
    if listener_answers(settings, called):
        yield
        return
    from bridge.serve import serve  # the whole service, for as long as the pull needs it

    stop = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            serve(settings, stop=stop)
        except BaseException as error:  # reported to the pulling thread
            failure.append(error)

    thread = threading.Thread(target=run, name="pull-listener", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not listener_answers(settings, called):
        if failure or not thread.is_alive() or time.monotonic() > deadline:
            stop.set()
            detail = str(failure[0]) if failure else "it did not start"
            raise RemoteError(f"cannot receive C-MOVE on port {settings.dimse.port}: {detail}")
        time.sleep(0.2)
    try:
        yield
    finally:
        stop.set()
        thread.join()
