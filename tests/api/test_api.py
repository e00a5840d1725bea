"""The HTTP API of a real `serve` process, fed over C-STORE by DCMTK: tokens and roles, the cohort example,
saved cohorts and snapshots, health, metrics, limits, and no identifier in any response."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests import factory
from tests.cohorts import population
from tests.serve_process import REPOSITORY, BridgeProcess, StartBridge
from tests.test_serve import storescu

pytestmark = pytest.mark.integration

MARKER = "ZQXJVWK"  # a nonsense token put into names and institution: it must never come back
VISITS = "".join(
    f'[[projects.open.visits]]\nlabel = "{v["label"]}"\nfrom_day = {v["from_day"]}\nto_day = {v["to_day"]}\n'
    for v in population.VISITS
)
EXAMPLE = {"modality": "CT", "body_part": "CHEST", "slice_thickness_max": 2.5, "min_followups": 2}


@dataclass
class Api:
    """An HTTP client of the bridge that keeps every body it received, for the PHI check."""

    base: str
    config: Path
    bodies: list[str] = field(default_factory=list)
    tokens: dict[str, str] = field(default_factory=dict)

    def call(self, method: str, path: str, user: str | None = None, **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[user]}"} if user else {}
        response = httpx.request(method, self.base + path, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]
        self.bodies.append(response.text)
        return response

    def user(self, name: str, *args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "users", "create", name, *args, "--json", "--config", str(self.config)],
            cwd=REPOSITORY,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        assert created["name"] == name and created["token"].startswith("pb_")
        self.tokens[name] = created["token"]


def identifiers(trial: dict[int, list[population.Scan]]) -> list[str]:
    """What of the patients must never leave the bridge: names, IDs, birth dates, the marker."""
    found = [MARKER]
    for number in trial:
        patient = factory.make_patient(number)
        found += [patient.patient_id, patient.birth_date]
    return found


@pytest.fixture
def api(start_bridge: StartBridge, tmp_path: Path, database_url: str) -> Iterator[tuple[Api, BridgeProcess]]:
    bridge = start_bridge(database_url, extra=VISITS)
    port = tomllib.loads(bridge.config.read_text())["http"]["port"]
    files = factory.write_files(population.datasets(marker=MARKER), tmp_path / "in")
    sent = storescu(bridge.port, "BRIDGE", files)
    assert sent.returncode == 0, sent.stderr
    bridge.wait_for("open", len(files))
    client = Api(f"http://127.0.0.1:{port}", bridge.config)
    client.user("viewer", "--role", "viewer", "--project", "open")
    client.user("manager", "--role", "data-manager", "--project", "open")
    client.user("outsider", "--role", "viewer", "--project", "lung")
    client.user("root", "--role", "admin")
    yield client, bridge
    leaked = [(token, body[:200]) for body in client.bodies for token in identifiers(population.TRIAL) if token in body]
    assert not leaked


def test_tokens_and_roles_decide_401_403_200(api: tuple[Api, BridgeProcess]) -> None:
    client, _ = api
    assert client.call("GET", "/api/v1/projects").status_code == 401
    client.tokens["forged"] = "pb_" + "x" * 43
    assert client.call("GET", "/api/v1/projects", "forged").status_code == 401
    assert client.call("GET", "/api/v1/projects/open/cohort", "outsider").status_code == 403
    assert [p["name"] for p in client.call("GET", "/api/v1/projects", "outsider").json()] == ["lung"]
    assert (
        client.call("POST", "/api/v1/projects/open/cohorts", "viewer", json={"name": "x", "filters": {}}).status_code
        == 403
    )
    assert client.call("GET", "/api/v1/audit", "manager").status_code == 403

    assert client.call("GET", "/api/v1/projects/open", "viewer").status_code == 200
    revoked = subprocess.run(
        [sys.executable, "-m", "bridge", "users", "revoke", "viewer", "--config", str(client.config)],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert revoked.returncode == 0, revoked.stderr
    assert client.call("GET", "/api/v1/projects/open", "viewer").status_code == 401  # at once

    denied = client.call("GET", "/api/v1/audit?action=api.denied", "root").json()
    assert len(denied) == 6 and {e["actor"] for e in denied} == {
        "api:anonymous",
        "api:outsider",
        "api:viewer",
        "api:manager",
    }
    assert all(e["object"].startswith(("GET /api/v1/", "POST /api/v1/")) for e in denied)


def test_the_example_cohort_saved_frozen_and_labelled_over_http(api: tuple[Api, BridgeProcess]) -> None:
    client, _ = api
    answer = client.call("GET", "/api/v1/projects/open/cohort", "viewer", params={**EXAMPLE, "level": "subject"})
    assert answer.status_code == 200, answer.text
    timepoints = client.call("GET", "/api/v1/projects/open/cohort", "viewer", params={**EXAMPLE, "level": "timepoint"})
    found = population.timelines(timepoints.json()["rows"])
    assert set(found.values()) == population.EXAMPLE_TIMELINES
    assert {r["subject"] for r in answer.json()["rows"]} == set(found)
    late = population.subject_with_day(timepoints.json()["rows"], 200)
    series = client.call("GET", "/api/v1/projects/open/cohort", "viewer", params=EXAMPLE).json()
    assert series["total"] == 6 and series["rows"][0]["timepoint_label"] == "baseline"

    saved = client.call("POST", "/api/v1/projects/open/cohorts", "manager", json={"name": "thin", "filters": EXAMPLE})
    assert saved.status_code == 201, saved.text
    snap = client.call("POST", "/api/v1/projects/open/cohorts/thin/snapshots", "manager")
    assert snap.status_code == 201 and snap.json()["name"] == "thin@1" and snap.json()["series"] == 6
    frozen = client.call("GET", "/api/v1/projects/open/snapshots/thin@1", "viewer").json()
    assert len(frozen["rows"]) == 6 and frozen["gone"] == {"series": [], "instances": []}
    manifest = client.call("GET", "/api/v1/projects/open/snapshots/thin@1/manifest", "viewer").json()
    assert len(manifest) == 12 and manifest[0]["path"].startswith(f"{min(found)}/baseline_0/")
    rows = client.call("GET", "/api/v1/projects/open/cohorts/thin/rows", "viewer", params={"level": "subject"}).json()
    assert rows["total"] == 2

    subject = client.call("GET", f"/api/v1/projects/open/subjects/{late}", "viewer").json()
    assert [t["timepoint_label"] for t in subject["timepoints"]] == ["baseline", "week8", "unscheduled"]
    label = client.call(
        "PUT", f"/api/v1/projects/open/subjects/{late}/timepoints/200/label", "manager", json={"label": "week28"}
    )
    assert label.status_code == 200 and label.json()["timepoint_label"] == "week28"
    assert (
        client.call(
            "PUT", f"/api/v1/projects/open/subjects/{late}/timepoints/200/label", "viewer", json={"label": "x"}
        ).status_code
        == 403
    )
    one = subject["timepoints"][0]
    series_uid = client.call(
        "GET", "/api/v1/projects/open/series", "viewer", params={"subject": late, "timepoint_index": 0}
    ).json()["rows"][0]["series_instance_uid"]
    instances = client.call("GET", f"/api/v1/projects/open/series/{series_uid}/instances", "viewer").json()
    assert len(instances) == 2 and all(len(i["sha256"]) == 64 for i in instances) and one["instances"] == 2
    assert client.call("GET", "/api/v1/projects/open/quarantine", "viewer").json() == []


def test_health_metrics_limits_and_headers(api: tuple[Api, BridgeProcess]) -> None:
    client, bridge = api
    health = client.call("GET", "/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = client.call("GET", "/metrics").text
    received = re.search(r'^pacs_bridge_instances_received_total\{intake="c-store"\} (\S+)$', metrics, re.M)
    stored = re.search(r'^pacs_bridge_instances_ingested_total\{outcome="stored"\} (\S+)$', metrics, re.M)
    latency = re.search(r"^pacs_bridge_ingest_latency_seconds_count (\S+)$", metrics, re.M)
    assert received and stored and latency, metrics
    assert float(received.group(1)) == float(stored.group(1)) == float(latency.group(1)) == 32
    assert re.search(r"^pacs_bridge_spool_depth 0\.0$", metrics, re.M)

    response = client.call("GET", "/api/v1/projects/open/cohort", "viewer", params={"patient_name": "DOE^JANE"})
    assert response.status_code == 422 and "DOE" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["cache-control"] == "no-store"
    big = client.call("POST", "/api/v1/projects/open/cohorts", "manager", content=b"{" + b" " * 2_000_000 + b"}")
    assert big.status_code == 413
    assert client.call("GET", "/api/v1/projects/open/cohort", "viewer", params={"sort": "nope"}).status_code == 400
    assert client.call("GET", "/openapi.json").json()["info"]["title"] == "pacs-bridge"

    assert bridge.stop() == 0  # SIGTERM stops the API with everything else
    with pytest.raises(httpx.ConnectError):
        httpx.get(client.base + "/healthz", timeout=5)
