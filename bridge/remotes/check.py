"""`remotes check`: try each way the remote is configured to be reached, and say what happened."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import RemoteError
from bridge.remotes.dicomweb import DicomwebRemote
from bridge.remotes.dimse import DimseRemote
from bridge.settings import RemoteSettings


@dataclass(frozen=True)
class CheckResult:
    what: str
    ok: bool
    detail: str


def _attempt(what: str, probe: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(what, True, probe())
    except RemoteError as error:
        return CheckResult(what, False, str(error))


def check_remote(remote: RemoteSettings, *, calling_ae: str) -> list[CheckResult]:
    once = remote.model_copy(update={"retries": 0})  # a check says what happens now, it does not insist
    results = []
    if remote.ae_title is not None:
        what = f"C-ECHO to {remote.ae_title}@{remote.host}:{remote.port}{' (TLS)' if remote.tls else ''}"
        results.append(_attempt(what, DimseRemote(once, calling_ae=calling_ae).probe))
    if remote.dicomweb_url is not None:
        results.append(_attempt(f"QIDO-RS at {remote.dicomweb_url}", DicomwebRemote(once).probe))
    return results
