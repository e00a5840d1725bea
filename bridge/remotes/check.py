"""`remotes check`: try each way the remote is configured to be reached, and say what happened."""

from __future__ import annotations

from dataclasses import dataclass

from pynetdicom import AE

from bridge.remotes.dicomweb import DicomwebRemote, RemoteError
from bridge.settings import RemoteSettings

VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True)
class CheckResult:
    what: str
    ok: bool
    detail: str


def echo(remote: RemoteSettings, calling_ae: str) -> CheckResult:
    assert remote.ae_title is not None and remote.host is not None and remote.port is not None
    what = f"C-ECHO to {remote.ae_title}@{remote.host}:{remote.port}"
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = remote.timeout
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate(remote.host, remote.port, ae_title=remote.ae_title)
    if not assoc.is_established:
        reason = "association rejected" if assoc.is_rejected else "no association (refused, timed out or aborted)"
        return CheckResult(what, False, reason)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = getattr(status, "Status", None)
    return CheckResult(what, code == 0, "success" if code == 0 else f"status {code!r}")


def check_remote(remote: RemoteSettings, *, calling_ae: str) -> list[CheckResult]:
    results = []
    if remote.ae_title is not None:
        results.append(echo(remote, calling_ae))
    if remote.dicomweb_url is not None:
        what = f"QIDO-RS at {remote.dicomweb_url}"
        try:
            results.append(CheckResult(what, True, DicomwebRemote(remote.model_copy(update={"retries": 0})).probe()))
        except RemoteError as error:
            results.append(CheckResult(what, False, str(error)))
    return results
