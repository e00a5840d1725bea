"""From configuration to a remote adapter, and the AE title a C-MOVE sends to.

C-MOVE delivers to the bridge's own DICOM listener under the project's AE title (so the listener routes
the instances to the project). Each kind of remote is imported when used: pynetdicom alone takes ~0.3 s to
import, which a DICOMweb pull does not need.
"""

from __future__ import annotations

from typing import Literal

from bridge.errors import ConfigError
from bridge.remotes.base import Remote
from bridge.settings import RemoteSettings, Settings

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
