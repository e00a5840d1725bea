"""A real Orthanc (Debian package, DICOMweb plugin) playing the hospital PACS in pull tests.

Orthanc answers QIDO-RS/WADO-RS under ``/dicom-web`` and C-FIND/C-MOVE/C-GET on its DICOM
port; the REST API (``/instances``, ``/studies``...) seeds and inspects it.  Everything binds
to 127.0.0.1 on ports picked free at the first start and kept across ``restart()``.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import requests

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
HOST = "127.0.0.1"
#: A modality Orthanc knows: ``(AET, host, port)`` or Orthanc's object form (``{"AET": ..., "AllowMove": ...}``).
Modality = tuple[str, str, int] | dict[str, Any]

__all__ = ["DICOMWEB_PLUGIN", "ORTHANC", "HttpAnswer", "OrthancServer", "free_port", "running_orthanc"]


def free_port(avoid: Iterable[int] = ()) -> int:
    """A TCP port of 127.0.0.1 nobody listens on now (and not one of ``avoid``)."""
    while True:
        with socket.socket() as probe:
            probe.bind((HOST, 0))
            port = int(probe.getsockname()[1])
        if port not in set(avoid):
            return port


class HttpAnswer(NamedTuple):
    """Status, headers and (undecoded) body of one HTTP answer."""

    status: int
    headers: Message
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class OrthancServer:
    """One Orthanc process whose configuration, database, storage and log live in ``folder``."""

    folder: Path
    name: str = "PULL-TEST-PACS"
    aet: str = "ORTHANC"
    #: Ports; 0 means "pick a free one at the first start" (then kept for restarts).
    http_port: int = 0
    dicom_port: int = 0
    #: name -> modality; the destinations Orthanc may C-MOVE to (and callers it knows).
    modalities: dict[str, Modality] = field(default_factory=dict)
    #: Basic-auth users (name -> password); non-empty turns "AuthenticationEnabled" on.
    users: dict[str, str] = field(default_factory=dict)
    #: "DicomAlwaysAllowFind/Get/Move": unknown calling AETs may query and retrieve.
    allow_unknown_callers: bool = True
    #: "LimitFindResults" (patient/study/series C-FIND and REST find) and "LimitFindInstances"; 0 = no cap.
    limit_find_results: int = 0
    limit_find_instances: int = 0
    #: "HttpCompressionEnabled": gzip/deflate the answers of clients that accept them (Orthanc's default).
    http_compression: bool = True
    #: Options merged into the "DicomWeb" section, then top-level options merged last (override anything).
    dicomweb: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    verbose: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ paths and URLs

    @property
    def config_path(self) -> Path:
        return self.folder / "orthanc.json"

    @property
    def storage(self) -> Path:
        return self.folder / "storage"

    @property
    def log(self) -> Path:
        return self.folder / "orthanc.log"

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.http_url}/dicom-web"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # ------------------------------------------------------------------ process

    def config(self) -> dict[str, Any]:
        """The JSON configuration Orthanc is started with."""
        dicomweb: dict[str, Any] = {
            "Enable": True,
            "Root": "/dicom-web/",
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "QidoCaseSensitive": True,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        }
        dicomweb.update(self.dicomweb)
        config: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self.storage),
            "IndexDirectory": str(self.storage),
            "StorageCompression": False,
            "Plugins": [str(DICOMWEB_PLUGIN)],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "HttpCompressionEnabled": self.http_compression,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": bool(self.users),
            "RegisteredUsers": dict(self.users),
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.aet,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomModalities": dict(self.modalities),
            "DicomModalitiesInDatabase": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": self.allow_unknown_callers,
            "DicomAlwaysAllowGet": self.allow_unknown_callers,
            "DicomAlwaysAllowMove": self.allow_unknown_callers,
            "DicomScuTimeout": 10,
            "LimitFindResults": self.limit_find_results,
            "LimitFindInstances": self.limit_find_instances,
            "OrthancPeers": {},
            "HttpProxy": "",
            "SaveJobs": False,
            "DicomWeb": dicomweb,
        }
        config.update(self.extra)
        return config

    def start(self, timeout: float = 30) -> OrthancServer:
        """Write the configuration, start Orthanc and wait until ``GET /system`` answers."""
        if self.running:
            raise RuntimeError(f"Orthanc already runs as PID {self.process.pid}")  # type: ignore[union-attr]
        if not (ORTHANC.exists() and DICOMWEB_PLUGIN.exists()):
            raise RuntimeError(f"{ORTHANC} or {DICOMWEB_PLUGIN} missing: install orthanc and orthanc-dicomweb")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.http_port:
            self.http_port = free_port(avoid=[self.dicom_port])
        if not self.dicom_port:
            self.dicom_port = free_port(avoid=[self.http_port])
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")
        command = [str(ORTHANC), *(["--verbose"] if self.verbose else []), str(self.config_path)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.folder,
                env={**os.environ, "TCP_NODELAY": "1"},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}:\n{self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.kill()
        raise TimeoutError(f"Orthanc did not answer on {self.http_url} within {timeout} s:\n{self.log_tail()}")

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM to Orthanc's PID and wait (SIGKILL after ``timeout`` s); its exit status.

        Takes ~2-3.5 s, and answers being streamed are finished first (so is a WADO-RS download).
        """
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL Orthanc: it dies mid-work; a WADO-RS stream just ends (clean EOF, no closing boundary)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def restart(self, down_for: float = 0, timeout: float = 30) -> OrthancServer:
        """Stop, stay down ``down_for`` s, start again on the same ports and storage (data persists)."""
        self.stop()
        time.sleep(down_for)
        return self.start(timeout)

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> OrthancServer:
        return self if self.running else self.start()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    def auth_header(self) -> dict[str, str]:
        """``Authorization`` for the first registered user (none without users)."""
        if not self.users:
            return {}
        user, password = next(iter(self.users.items()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}

    def request(
        self,
        method: str,
        route: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30,
        auth: bool = True,
    ) -> HttpAnswer:
        """One HTTP request to ``route`` (e.g. ``/system``), never through a proxy; errors are answers too."""
        all_headers = {**(self.auth_header() if auth else {}), **(headers or {})}
        request = urllib.request.Request(self.http_url + route, data=body, headers=all_headers, method=method)
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=timeout) as response:
                return HttpAnswer(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            with error:
                return HttpAnswer(error.code, error.headers, error.read())

    def rest(self, route: str, method: str = "GET", body: bytes | None = None) -> Any:
        """The JSON answer of a REST call; raises on an HTTP error."""
        answer = self.request(method, route, body)
        if answer.status >= 400:
            raise RuntimeError(f"{method} {route}: HTTP {answer.status} {answer.body[:500]!r}")
        return answer.json() if answer.body else None

    def _answers(self) -> bool:
        try:
            return self.request("GET", "/system", timeout=2).status == 200
        except OSError:
            return False

    def http_session(self) -> requests.Session:
        """A ``requests`` session for ``DICOMwebClient(url=..., session=...)``: no proxies, basic auth if any."""
        session = requests.Session()
        session.trust_env = False
        if self.users:
            session.auth = next(iter(self.users.items()))
        return session

    # ------------------------------------------------------------------ content

    def upload(self, paths: Iterable[Path]) -> list[str]:
        """POST each DICOM file to ``/instances``; Orthanc's instance IDs, in order."""
        ids: list[str] = []
        for path in paths:
            answer = self.rest("/instances", "POST", Path(path).read_bytes())
            if answer.get("Status") not in ("Success", "AlreadyStored"):
                raise RuntimeError(f"{path}: Orthanc answered {answer}")
            ids.append(str(answer["ID"]))
        return ids

    def count_instances(self) -> int:
        return int(self.rest("/statistics")["CountInstances"])

    def study_instance_uids(self) -> list[str]:
        """Sorted StudyInstanceUIDs of the studies Orthanc holds."""
        return sorted(str(study["MainDicomTags"]["StudyInstanceUID"]) for study in self.rest("/studies?expand"))

    def delete_all(self) -> None:
        """Delete every patient (so every study, series and instance)."""
        for patient in self.rest("/patients"):
            self.rest(f"/patients/{patient}", "DELETE")

    def add_modality(self, name: str, aet: str, port: int, host: str = HOST) -> None:
        """Declare a modality (e.g. the bridge's AE as C-MOVE destination) now and for later restarts."""
        self.modalities[name] = (aet, host, port)
        if self.running:
            self.rest(f"/modalities/{name}", "PUT", json.dumps({"AET": aet, "Host": host, "Port": port}).encode())


@contextmanager
def running_orthanc(folder: Path, **options: Any) -> Iterator[OrthancServer]:
    """``OrthancServer(folder, **options)`` started for the ``with`` block, stopped after it."""
    server = OrthancServer(folder=folder, **options)
    server.start()
    try:
        yield server
    finally:
        server.stop()
