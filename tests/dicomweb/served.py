"""One real `serve` for the DICOMweb tests: a small trial sent over C-STORE by DCMTK, API users, and every
answer body kept for the check that no identifier or original UID ever comes back."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian, RLELossless

from tests import factory
from tests.serve_process import DCMTK_ENV, REPOSITORY, BridgeProcess, free_port, write_serve_config
from tests.test_serve import storescu

ORIGIN = "https://viewer.example.org"


@dataclass
class Served:
    bridge: BridgeProcess
    base: str  # http://127.0.0.1:PORT
    tokens: dict[str, str]
    sent: list[Dataset]
    bodies: list[bytes] = field(default_factory=list)

    def call(self, method: str, path: str, user: str | None = "reader", **kw: object) -> httpx.Response:
        headers = dict(kw.pop("headers", {}) or {})  # type: ignore[call-overload]
        if user:
            headers["Authorization"] = f"Bearer {self.tokens[user]}"
        response = httpx.request(method, self.base + path, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]
        self.bodies.append(response.content)
        return response

    def client(self, user: str = "reader", project: str | None = "open") -> DICOMwebClient:
        url = f"{self.base}/dicomweb" + (f"/projects/{project}" if project else "")
        client = DICOMwebClient(url=url, headers={"Authorization": f"Bearer {self.tokens[user]}"})
        client._session.hooks["response"].append(lambda r, *a, **k: self.bodies.append(r.content))  # noqa: SLF001
        return client


def user_token(config: Path, name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "bridge", "users", "create", name, *args, "--json", "--config", str(config)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["token"])


def trial() -> list[Dataset]:
    """Subject 1: a CT baseline (two series, Explicit VR) with a SEG on its first series, an MR follow-up
    stored in Implicit VR; subject 2: a CT in RLE Lossless (compressed)."""
    first, second = factory.make_patient(1), factory.make_patient(2)
    ct = factory.make_study(first, "20240105", ("CT", "CT"), per_series=3)
    seg = factory.make_seg(ct[:3])
    mr = factory.make_study(first, "20240301", ("MR",), per_series=2, transfer_syntax=ImplicitVRLittleEndian)
    rle = factory.make_study(second, "20240110", ("CT",), per_series=2, transfer_syntax=RLELossless)
    return [*ct, seg, *mr, *rle]


def identifiers(sent: list[Dataset]) -> set[str]:
    """What must never come back: names, IDs, birth dates, accession numbers, the original UIDs."""
    found: set[str] = set()
    for n in (1, 2):
        patient = factory.make_patient(n)
        found |= {patient.patient_id, patient.birth_date, patient.name.split("^")[0]}
    for ds in sent:
        found |= {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, str(ds.get("AccessionNumber", ""))}
    return {value for value in found if value}


def serve_trial(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    folder = tmp_path_factory.mktemp(f"dicomweb-{request.param}")
    if request.param == "sqlite":
        url, schemas = f"sqlite:///{folder / 'bridge.db'}", None
    else:
        from tests.conftest import postgres_schema_url

        schemas = postgres_schema_url()
        url = next(schemas)
    port = free_port()
    config = write_serve_config(folder, url, port)
    http = int(next(line for line in config.read_text().splitlines() if line.startswith("port =")).split("=")[1])
    settings = f'cors_origins = ["{ORIGIN}"]\ndicomweb_max_results = 50\npublic_url = "http://127.0.0.1:{http}"\n'
    text = config.read_text().replace("[http]\n", f"[http]\n{settings}", 1)
    config.write_text(text)
    bridge = BridgeProcess(config=config, port=port, log=folder / "serve.log").start()
    try:
        sent = trial()
        files = factory.write_files(sent, folder / "in")
        plain = [f for f, ds in zip(files, sent, strict=True) if ds.file_meta.TransferSyntaxUID != RLELossless]
        done = storescu(port, "BRIDGE", plain)
        assert done.returncode == 0, done.stderr
        # subject codes go by the order in which ingest meets the patients, and its workers may meet the
        # second patient first: subject 1 is indexed before subject 2 is sent, so that it is OPEN-0001
        bridge.wait_for("open", len(plain))
        rle = [str(f) for f in files if str(f) not in map(str, plain)]
        done = subprocess.run(
            ["storescu", "-xr", "-aet", "MODALITY", "-aec", "BRIDGE", "127.0.0.1", str(port), *rle],
            capture_output=True,
            text=True,
            env=DCMTK_ENV,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        bridge.wait_for("open", len(files))
        tokens = {
            "reader": user_token(config, "reader", "--role", "viewer", "--project", "open"),
            "outsider": user_token(config, "outsider", "--role", "viewer", "--project", "lung"),
            "annotator": user_token(config, "annotator", "--role", "annotator", "--project", "open"),
        }
        served = Served(bridge, f"http://127.0.0.1:{http}", tokens, sent)
        yield served
        leaked = {token for body in served.bodies for token in identifiers(sent) if token.encode() in body}
        assert not leaked, f"identifiers in DICOMweb answers: {sorted(leaked)[:5]}"
    finally:
        bridge.stop(timeout=60)
        if schemas is not None:
            schemas.close()


def value(result: dict, keyword: str) -> object:  # type: ignore[type-arg]
    element = result.get(f"{pydicom.datadict.tag_for_keyword(keyword):08X}", {})
    values = element.get("Value", [])
    return values[0] if values else None
