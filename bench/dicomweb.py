"""DICOMweb search and retrieve: `pacs-bridge serve` against Orthanc with its DICOMweb plugin, same store.

Generates, with ``tests/factory.py``, a QIDO population and a WADO corpus (``bench/dicomweb_population.py``;
not timed): at ``--scale 1``, 10,000 studies of one 16x16 instance (2,000 patients x 5 studies, dates over
2015-2024, CT/MR/PT) and 2,000 CT slices of 512x512 uint16 (~0.5 MB each) in 20 series of 100, two series per
study. It starts, on free ports of 127.0.0.1, a real ``python -m bridge serve`` (SQLite, one project, 2
workers; de-identified with ``retain_full_dates`` so the studies keep their dates and a date range matches the
same studies on both) and Orthanc (Debian package, DICOMweb plugin, SQLite index, through the test harness
``tests/pull/orthanc.py``), both with ``TCP_NODELAY=1``, and sends the same files to both with parallel DCMTK
``storescu`` (``TCP_NODELAY=1``); the bridge is then waited for until it has indexed every instance. A viewer
token (``users create --role viewer --all-projects``) reads the bridge at ``/dicomweb``; Orthanc is read at
``/dicom-web``. Each server gets one ``httpx`` client (one keep-alive connection, ``Accept-Encoding:
identity``: Orthanc would gzip its JSON otherwise, the bridge does not). Then, in the same run:

- QIDO-RS ``/studies``: all, by patient (a random population patient per request: each has 5 studies), by
  date range (one year), by modality (``ModalitiesInStudy=PT``), each with ``limit`` (``--limit``, default 100),
  ``offset=0`` and the same ``includefield`` on both, so both answer the same number of rows (checked on every
  request; a difference fails the run); p50/p95 of the time until the whole body is read;
- WADO-RS series retrieve, ``Accept: multipart/related; type="application/dicom"; transfer-syntax=*``,
  the whole multipart body read and its parts counted; instances/s and MB/s over ``--retrieves`` series;
- WADO-RS series metadata (``/studies/{s}/series/{se}/metadata``) p50/p95, the same series.

Every kind starts with warm-up requests, then the bridge and Orthanc are asked in turn (the order alternates)
so that a slow spell of the machine hits both. It prints each figure for both servers, the ratio and the
targets: QIDO-RS p95 at least 5x lower than Orthanc's, WADO-RS retrieve at least 1x Orthanc's throughput.
Exits 1 if a load fails, a server does not hold the whole store, or an answer is wrong (printed verbatim).

    .venv/bin/python bench/dicomweb.py [--scale 1.0] [--repeat 50] [--retrieves 20] [--limit 100]
                                       [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.message import Message
from pathlib import Path
from typing import Any, NoReturn

import httpx
from common import REPO, clean_env, clean_up, config_head, load_factory, load_repo_module
from dicomweb_population import (
    FIRST_DATE,
    SERIES_PER_STUDY,
    SERIES_SIZE,
    STUDIES_PER_PATIENT,
    Store,
    generate,
    send,
)
from ingest import wait_idle

PROJECT = "bench"
CALLING_AE = "BENCHSCU"
BRIDGE_AE = "BRIDGE"
POPULATION_STUDIES = 10_000
WADO_SERIES = 20
WARMUP = 3
TARGET_QIDO = 5.0  # Orthanc p95 / bridge p95, each QIDO-RS query
TARGET_WADO = 1.0  # bridge / Orthanc series retrieve throughput
DISCOVERY_PAGE = 1000  # the bridge's default http.dicomweb_max_results
INCLUDE = "00081030,00080061,00201206,00201208"  # description, modalities, related series, related instances
DATE_RANGE = (f"{FIRST_DATE.year + 4}0101", f"{FIRST_DATE.year + 4}1231")
RETRIEVE_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")
TAG = {"PatientID": "00100020", "StudyUID": "0020000D", "SeriesUID": "0020000E"}
TAG |= {"StudyInstances": "00201208", "SeriesInstances": "00201209"}


def fail(message: str, details: str = "") -> NoReturn:
    """Print ``message`` and ``details`` verbatim, then exit 1."""
    print(f"\nFAILED: {message}", file=sys.stderr)
    if details:
        print(details, file=sys.stderr)
    raise SystemExit(1)


def described(response: httpx.Response) -> str:
    """The exact request and the response (status, headers, start of the body), for a failure report."""
    request = response.request
    headers = "\n".join(f"  {k}: {v}" for k, v in response.headers.items())
    return (
        f"request: {request.method} {request.url}\n  Accept: {request.headers.get('accept')}\n"
        f"response: HTTP {response.status_code}\n{headers}\n  body: {response.content[:2000]!r}"
    )


def value(item: dict[str, Any], tag: str) -> Any:
    """The first value of ``tag`` in a DICOM JSON object, or None."""
    values = item.get(tag, {}).get("Value", [])
    return values[0] if values else None


# --------------------------------------------------------------------------
# The two servers
# --------------------------------------------------------------------------


@dataclass
class Peer:
    """One DICOMweb server as the bench reads it: its root URL and its one keep-alive client."""

    name: str
    root: str
    client: httpx.Client
    population_patients: list[str] = field(default_factory=list)
    series: list[tuple[str, str]] = field(default_factory=list)  # (study, series) UIDs of the WADO corpus

    def get(self, path: str, params: Sequence[tuple[str, str | int]] = (), accept: str | None = None) -> httpx.Response:
        """GET ``root + path``, the whole body read; fails the run on an error status (printed verbatim)."""
        headers = {"Accept": accept} if accept else {}
        response = self.client.get(self.root + path, params=list(params), headers=headers)
        if response.status_code not in (200, 204):
            fail(f"{self.name} answered HTTP {response.status_code}", described(response))
        return response


def http_client(headers: dict[str, str] | None = None) -> httpx.Client:
    """One connection kept alive, never through a proxy, no compression, no timeout worth hitting."""
    return httpx.Client(
        headers={"Accept-Encoding": "identity", **(headers or {})},
        timeout=300,
        trust_env=False,
        limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
    )


class Bridge:
    """``python -m bridge serve`` (tests/serve_process.py's BridgeProcess) with a fresh SQLite configuration."""

    def __init__(self, folder: Path) -> None:
        serve_process = load_repo_module("tests/serve_process.py", "pacs_bridge_test_serve_process")
        self.folder = folder
        self.folder.mkdir(parents=True)
        self.database = folder / "bridge.db"
        self.dicom_port, self.http_port = serve_process.free_port(), serve_process.free_port()
        self.config = self.write_config()
        self.token = self.viewer_token()
        self.process = serve_process.BridgeProcess(config=self.config, port=self.dicom_port, log=folder / "serve.log")

    def write_config(self) -> Path:
        config = self.folder / "bridge.toml"
        config.write_text(
            f"""{config_head(self.folder)}[http]
host = "127.0.0.1"
port = {self.http_port}
metrics_dir = {json.dumps(str(self.folder / "metrics"))}
[dimse]
host = "127.0.0.1"
port = {self.dicom_port}
ae_title = "{BRIDGE_AE}"
default_project = "{PROJECT}"
workers = 2
min_free_space_mb = 0
[projects.{PROJECT}]
subject_prefix = "BENCH"
[projects.{PROJECT}.deid]
retain_modified_dates = false
retain_full_dates = true
[projects.{PROJECT}.dimse]
allowed_callers = [{{ae_title = "{CALLING_AE}", addresses = ["127.0.0.1"]}}]
""",
            encoding="utf-8",
        )
        return config

    def viewer_token(self) -> str:
        command = [sys.executable, "-m", "bridge", "users", "create", "bench-viewer", "--role", "viewer"]
        command += ["--all-projects", "--json", "--config", str(self.config)]
        done = subprocess.run(command, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            fail("users create failed", f"{done.stdout}\n{done.stderr}")
        return str(json.loads(done.stdout)["token"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        try:
            self.process.start(timeout=120)
        except (RuntimeError, TimeoutError) as error:
            fail("pacs-bridge serve did not start", str(error))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        fail("pacs-bridge serve does not answer /healthz", self.problems())

    def counts(self) -> tuple[int, int]:
        """(indexed instances, quarantined items), read from the SQLite database directly."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
            instances = int(db.execute("SELECT count(*) FROM instance").fetchone()[0])
            quarantined = int(db.execute("SELECT count(*) FROM quarantineitem").fetchone()[0])
        db.close()
        return instances, quarantined

    def wait_indexed(self, expected: int) -> float:
        """Poll the index until it holds ``expected`` instances; the seconds waited."""
        start = time.monotonic()
        deadline = start + max(600.0, expected * 0.5)
        instances, quarantined = self.counts()
        while instances + quarantined < expected and time.monotonic() < deadline:
            time.sleep(1)
            instances, quarantined = self.counts()
        if instances != expected or quarantined:
            fail(f"pacs-bridge indexed {instances}, quarantined {quarantined} of {expected}", self.problems())
        return time.monotonic() - start

    def problems(self) -> str:
        """The log lines that report errors (with the lines after them), else the last 40 lines."""
        lines = self.process.log.read_text(errors="replace").splitlines()
        picked = [i for i, line in enumerate(lines) if LOG_PROBLEM.search(line)]
        if not picked:
            return "\n".join(lines[-40:])
        return "\n...\n".join("\n".join(lines[i : i + 25]) for i in picked[:5])

    def stop(self) -> str | None:
        """SIGTERM and wait; a note if it stopped badly or logged errors."""
        if self.process.process is None:
            return None
        try:
            code = self.process.stop(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = -9
        if code != 0 or any(LOG_PROBLEM.search(line) for line in self.process.log.read_text().splitlines()):
            return f"pacs-bridge serve stopped with status {code} or logged errors:\n{self.problems()}"
        return None


# --------------------------------------------------------------------------
# What each server holds (not timed)
# --------------------------------------------------------------------------


def discover(peer: Peer, store: Store) -> None:
    """Page through the peer's studies; fail unless it holds the whole store; note its population patients
    (those with STUDIES_PER_PATIENT one-instance studies) and the series of the WADO corpus."""
    studies: list[dict[str, Any]] = []
    while True:
        params: list[tuple[str, str | int]] = [
            ("limit", DISCOVERY_PAGE),
            ("offset", len(studies)),
            ("includefield", "00201208"),
        ]
        response = peer.get("/studies", params)
        page = response.json() if response.content else []
        studies.extend(page)
        if len(page) < DISCOVERY_PAGE:
            break
    if len({value(s, TAG["StudyUID"]) for s in studies}) != store.studies:
        fail(f"{peer.name} lists {len(studies)} studies by paging /studies, the store has {store.studies}")
    per_patient: dict[str, int] = {}
    big: list[str] = []
    for study in studies:
        instances = int(value(study, TAG["StudyInstances"]) or 0)
        if instances == 1:
            patient = str(value(study, TAG["PatientID"]))
            per_patient[patient] = per_patient.get(patient, 0) + 1
        elif instances >= SERIES_SIZE:
            big.append(str(value(study, TAG["StudyUID"])))
    peer.population_patients = sorted(p for p, n in per_patient.items() if n == STUDIES_PER_PATIENT)
    if len(peer.population_patients) != store.population_patients:
        fail(f"{peer.name}: {len(peer.population_patients)} patients with {STUDIES_PER_PATIENT} studies")
    for study_uid in big:
        for series in peer.get(f"/studies/{study_uid}/series").json():
            if int(value(series, TAG["SeriesInstances"]) or 0) != SERIES_SIZE:
                fail(f"{peer.name}: series {value(series, TAG['SeriesUID'])} does not hold {SERIES_SIZE} instances")
            peer.series.append((study_uid, str(value(series, TAG["SeriesUID"]))))
    if len(peer.series) != store.wado_series:
        fail(f"{peer.name} holds {len(peer.series)} series of {SERIES_SIZE} instances, {store.wado_series} were sent")
    peer.series.sort()


# --------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One timed request: seconds until the whole body was read, items (rows, parts), bytes, truncation."""

    seconds: float
    items: int
    size: int = 0
    truncated: bool = False


Request = Callable[[Peer, int], Sample]


def qido(params_of: Callable[[Peer, int], list[tuple[str, str | int]]]) -> Request:
    """A QIDO-RS /studies search, timed until its body is read; the JSON is parsed after the clock stops."""

    def run(peer: Peer, number: int) -> Sample:
        params = params_of(peer, number)
        start = time.perf_counter()
        response = peer.get("/studies", params)
        seconds = time.perf_counter() - start
        rows = len(response.json()) if response.content else 0
        return Sample(seconds, rows, len(response.content), "additional results" in response.headers.get("warning", ""))

    return run


def retrieve(peer: Peer, number: int) -> Sample:
    """WADO-RS retrieve of one whole series, streamed; its parts counted by their boundaries."""
    study, series = peer.series[number % len(peer.series)]
    url = f"{peer.root}/studies/{study}/series/{series}"
    start = time.perf_counter()
    with peer.client.stream("GET", url, headers={"Accept": RETRIEVE_ACCEPT}) as response:
        if response.status_code != 200:
            response.read()
            fail(f"{peer.name} answered HTTP {response.status_code} to a series retrieve", described(response))
        header = Message()
        header["content-type"] = response.headers.get("content-type", "")
        boundary = header.get_param("boundary")
        if not isinstance(boundary, str):
            response.read()
            fail(f"{peer.name}: a series retrieve without a multipart boundary", described(response))
        delimiter = b"--" + boundary.encode()
        size = delimiters = 0
        tail = b""
        for chunk in response.iter_raw(1024 * 1024):
            size += len(chunk)
            window = tail + chunk
            delimiters += window.count(delimiter)
            tail = window[-(len(delimiter) - 1) :]
    seconds = time.perf_counter() - start
    return Sample(seconds, delimiters - 1, size)  # the closing delimiter also starts with --boundary


def series_metadata(peer: Peer, number: int) -> Sample:
    """WADO-RS metadata of one series, timed until its body is read."""
    study, series = peer.series[number % len(peer.series)]
    start = time.perf_counter()
    response = peer.get(f"/studies/{study}/series/{series}/metadata", accept="application/dicom+json")
    seconds = time.perf_counter() - start
    return Sample(seconds, len(response.json()), len(response.content))


def compare(peers: Sequence[Peer], request: Request, repeat: int) -> dict[str, list[Sample]]:
    """WARMUP requests to each, then ``repeat`` to each in turn (the first alternates); samples by peer."""
    for number in range(WARMUP):
        for peer in peers:
            request(peer, number)
    samples: dict[str, list[Sample]] = {peer.name: [] for peer in peers}
    for number in range(repeat):
        for peer in peers if number % 2 == 0 else reversed(peers):
            samples[peer.name].append(request(peer, number))
    return samples


def percentiles(samples: Sequence[Sample]) -> tuple[float, float]:
    """(p50, p95) in ms."""
    ordered = sorted(s.seconds for s in samples)
    return statistics.median(ordered) * 1000, ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000


def same_counts(label: str, samples: dict[str, list[Sample]], expected: int | None = None) -> str:
    """The items per answer (one number when every answer of both servers had it); fails on a difference."""
    bridge, orthanc = samples["bridge"], samples["Orthanc"]
    for number, (ours, theirs) in enumerate(zip(bridge, orthanc, strict=True)):
        if ours.items != theirs.items or (expected is not None and ours.items != expected):
            fail(f"{label}, request {number}: the bridge answered {ours.items} items, Orthanc {theirs.items}")
    counts = sorted({s.items for s in bridge})
    return str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def verdict(ratio: float, target: float) -> str:
    return "meets" if ratio >= target else "MISSES"


def report_qido(peers: Sequence[Peer], limit: int, repeat: int) -> None:
    """Run and print the four QIDO-RS searches."""
    rng = random.Random(3)
    picks = [rng.randrange(len(peers[0].population_patients)) for _ in range(WARMUP + repeat)]
    common_params: list[tuple[str, str | int]] = [("limit", limit), ("offset", 0), ("includefield", INCLUDE)]
    searches: dict[str, Callable[[Peer, int], list[tuple[str, str | int]]]] = {
        "all studies": lambda peer, n: common_params,
        "by patient (PatientID)": lambda peer, n: [("PatientID", peer.population_patients[picks[n]]), *common_params],
        f"by date range ({DATE_RANGE[0]}-{DATE_RANGE[1]})": lambda peer, n: [
            ("StudyDate", "-".join(DATE_RANGE)),
            *common_params,
        ],
        "by modality (ModalitiesInStudy=PT)": lambda peer, n: [("ModalitiesInStudy", "PT"), *common_params],
    }
    print(
        f"\nQIDO-RS /studies, limit={limit}&offset=0&includefield={INCLUDE} on both (same rows per query, checked "
        f"on every answer);\n{WARMUP} warm-up + {repeat} requests each, bridge and Orthanc in turn; time until the "
        "body is read"
    )
    print(
        f"  {'query':42} {'rows':>4} {'bridge p50/p95 ms':>18} {'Orthanc p50/p95 ms':>19} {'Orthanc/bridge p95':>19}"
        f"  target >= {TARGET_QIDO:g}x lower"
    )
    for label, params_of in searches.items():
        samples = compare(peers, qido(params_of), repeat)
        rows = same_counts(label, samples)
        ours, theirs = percentiles(samples["bridge"]), percentiles(samples["Orthanc"])
        ratio = theirs[1] / ours[1]
        warned = " (bridge: Warning 299)" if all(s.truncated for s in samples["bridge"]) else ""
        print(
            f"  {label:42} {rows:>4} {ours[0]:8.1f} / {ours[1]:7.1f} {theirs[0]:9.1f} / {theirs[1]:7.1f} "
            f"{ratio:18.2f}x  {verdict(ratio, TARGET_QIDO)}{warned}",
            flush=True,
        )


def report_wado(peers: Sequence[Peer], retrieves: int, repeat: int) -> None:
    """Run and print the series retrieve and the series metadata."""
    print(f"\nWADO-RS series retrieve, Accept: {RETRIEVE_ACCEPT}; {WARMUP} warm-up + {retrieves} retrieves each of")
    print(f"{SERIES_SIZE} instances, bridge and Orthanc in turn, the whole multipart body read and its parts counted")
    samples = compare(peers, retrieve, retrieves)
    same_counts("series retrieve", samples, SERIES_SIZE)
    print(f"  {'server':8} {'p50 s/series':>13} {'p95 s/series':>13} {'instances/s':>12} {'MB/s':>8}")
    rates = {}
    for peer in peers:
        own = samples[peer.name]
        seconds = sum(s.seconds for s in own)
        rates[peer.name] = sum(s.items for s in own) / seconds
        p50, p95 = percentiles(own)
        mb_per_s = sum(s.size for s in own) / 1e6 / seconds
        print(f"  {peer.name:8} {p50 / 1000:13.3f} {p95 / 1000:13.3f} {rates[peer.name]:12.1f} {mb_per_s:8.1f}")
    ratio = rates["bridge"] / rates["Orthanc"]
    print(
        f"  bridge/Orthanc throughput {ratio:.2f}x; target >= {TARGET_WADO:g}x: "
        f"{verdict(ratio, TARGET_WADO)} the target"
    )

    print(
        f"\nWADO-RS series metadata (/studies/{{s}}/series/{{se}}/metadata), {WARMUP} warm-up + {repeat} requests each"
    )
    samples = compare(peers, series_metadata, repeat)
    same_counts("series metadata", samples, SERIES_SIZE)
    ours, theirs = percentiles(samples["bridge"]), percentiles(samples["Orthanc"])
    kb = [statistics.median(s.size for s in samples[p.name]) / 1e3 for p in peers]
    print(f"  {'':8} {'p50 ms':>9} {'p95 ms':>9} {'kB':>7}")
    print(f"  {'bridge':8} {ours[0]:9.1f} {ours[1]:9.1f} {kb[0]:7.0f}")
    print(f"  {'Orthanc':8} {theirs[0]:9.1f} {theirs[1]:9.1f} {kb[1]:7.0f}")
    print(f"  Orthanc/bridge p95 {theirs[1] / ours[1]:.2f}x (no target: measured)")


# --------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------


def load(store: Store, bridge: Bridge, orthanc: Any, logs: Path) -> None:
    """Send the store to Orthanc, then to the bridge, and wait until both hold it all (not timed)."""
    seconds = send(store, orthanc.dicom_port, orthanc.aet, CALLING_AE, logs)
    held = orthanc.count_instances()
    if held != store.files:
        fail(f"Orthanc holds {held} instances, {store.files} were sent", orthanc.log_tail())
    print(f"sent {store.files} files to Orthanc in {seconds:.1f} s ({store.files / seconds:.0f} inst/s)", flush=True)
    seconds = send(store, bridge.dicom_port, BRIDGE_AE, CALLING_AE, logs)
    indexed = bridge.wait_indexed(store.files)
    print(
        f"sent {store.files} files to the bridge in {seconds:.1f} s ({store.files / seconds:.0f} inst/s), "
        f"indexed {indexed:.1f} s later (loading is not measured)",
        flush=True,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--scale", type=float, default=1.0, help="x 10,000 population studies and x 20 series of 100 (default 1)"
    )
    parser.add_argument("--repeat", type=int, default=50, help="requests per QIDO-RS query and metadata (default 50)")
    parser.add_argument("--retrieves", type=int, default=20, help="series retrieves per server (default 20)")
    parser.add_argument("--limit", type=int, default=100, help="QIDO-RS limit sent to both (default 100)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent of the temporary directory (default: the system temp dir, e.g. /tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1 or args.retrieves < 1 or not 1 <= args.limit <= DISCOVERY_PAGE:
        parser.error(f"--scale > 0, --repeat and --retrieves >= 1, 1 <= --limit <= {DISCOVERY_PAGE}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate, load both servers, measure, report; stop both, remove the temporary directory."""
    args = parse_args(argv)
    if shutil.which("storescu") is None:
        raise SystemExit("storescu not found: install DCMTK (apt-get install dcmtk)")
    harness = load_repo_module("tests/pull/orthanc.py", "pacs_bridge_test_orthanc")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bridge-dicomweb-", dir=args.workdir)).resolve()
    studies = max(10 * STUDIES_PER_PATIENT, round(POPULATION_STUDIES * args.scale))
    studies -= studies % STUDIES_PER_PATIENT
    wado_series = max(1, round(WADO_SERIES * args.scale))
    note = None
    try:
        print(f"working in {workdir}", flush=True)
        start = time.perf_counter()
        store = generate(load_factory(), workdir / "corpus", studies, wado_series)
        print(f"scale {args.scale:g}\n{store.description}", flush=True)
        print(f"generated {store.files} files in {time.perf_counter() - start:.1f} s (not measured)", flush=True)
        bridge = Bridge(workdir / "bridge")
        orthanc = harness.OrthancServer(folder=workdir / "orthanc", name="BENCH-DICOMWEB", aet="ORTHANC")
        try:
            orthanc.start()
            bridge.start()
            system, plugin = orthanc.rest("/system"), orthanc.rest("/plugins/dicom-web")
            print(
                f"{os.cpu_count()} cores; Orthanc {system.get('Version')} with DICOMweb plugin {plugin.get('Version')} "
                f"(PID {orthanc.process.pid}); pacs-bridge serve (PID {bridge.process.process.pid})",
                flush=True,
            )
            load(store, bridge, orthanc, workdir / "logs")
            shutil.rmtree(workdir / "corpus")
            idle = wait_idle(bridge.process.process, timeout=120) + wait_idle(orthanc.process, timeout=60)
            os.sync()
            print(f"both idle after {idle:.1f} s", flush=True)
            peers = [
                Peer("bridge", f"{bridge.url}/dicomweb", http_client({"Authorization": f"Bearer {bridge.token}"})),
                Peer("Orthanc", orthanc.dicomweb_url, http_client()),
            ]
            try:
                for peer in peers:
                    discover(peer, store)
                print(
                    f"both hold {store.studies} studies, {len(peers[0].population_patients)} population patients of "
                    f"{STUDIES_PER_PATIENT} studies, {store.wado_series} series of {SERIES_SIZE} "
                    f"(up to {SERIES_PER_STUDY} per study)",
                    flush=True,
                )
                report_qido(peers, args.limit, args.repeat)
                report_wado(peers, args.retrieves, args.repeat)
            finally:
                for peer in peers:
                    peer.client.close()
        finally:
            orthanc.stop()
            note = bridge.stop()
        if note:
            print(f"\nnote: {note}")
    finally:
        clean_up(workdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
