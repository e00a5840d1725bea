"""Throughput of `pacs-bridge serve` over DICOM against DCMTK's storescp and Orthanc, sent the same corpus.

Generates two synthetic CT corpora with ``tests/factory.py`` (not timed): ``--count`` slices of 512x512
uint16 (~0.5 MB each) and as many of 64x64 (~10 kB each), over several patients and series. Then, in the same
run, for each receiver, each corpus and each of one association / four parallel associations, it sends the
corpus with DCMTK's ``storescu -R`` (the parallel case splits the file list into four chunks, one ``storescu``
each, started together) to a fresh receiver process with fresh folders on a free port of 127.0.0.1:

- ``storescp``: DCMTK's storage SCP writing every received instance to a folder (no index);
- ``orthanc``: Orthanc from the Debian package with its default SQLite index, no plugins; it stores and indexes
  an instance before it answers, so its acknowledged rate is already "stored and indexed";
- ``bridge``: ``pacs-bridge serve`` (de-identification defaults, SQLite, 2 workers); it answers once an instance
  is spooled and de-identifies + indexes it afterwards, so it also gets an "indexed" rate: from the start of
  the send until ``SELECT count(*) FROM instance`` (polled every 0.02 s) reaches the number sent.

The acknowledged rate is measured from the start of the ``storescu`` processes until all of them have exited.
Start-up is not timed: before each send the receiver (with its worker processes) is left to go idle and dirty
pages are synced; ``--repeat N`` runs N whole rounds and reports the median times. Every ``storescu`` (and
Orthanc, and storescp) runs with ``TCP_NODELAY=1``: Debian's DCMTK leaves Nagle's algorithm on otherwise and
every C-STORE stalls 40-90 ms. It prints instances/s, the ratios bridge / Orthanc and bridge / storescp, and
the targets for the four-association 0.5 MB run: acknowledged >= 1.0x Orthanc, indexed >= 0.7x Orthanc (goal
1.0x). Exits 1 if a ``storescu`` fails or a receiver does not hold every instance sent.

    .venv/bin/python bench/ingest.py [--count 400] [--repeat 1] [--only {storescp,orthanc,bridge}]
                                     [--storescp-fork] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from common import clean_env, clean_up, cli_path, config_head, load_factory
from pydicom.uid import generate_uid

RECEIVERS = ("storescp", "orthanc", "bridge")
ASSOCIATIONS = (1, 4)
CALLING_AE = "BENCHSCU"
PROJECT = "bench"
PATIENTS = 4
SERIES_PER_PATIENT = 2
POLL_SECONDS = 0.02  # the indexed time is known to within this; a count costs ~0.3 ms
TARGET_ACK = 1.0  # acknowledged rate, x Orthanc, four associations, 0.5 MB corpus
TARGET_INDEXED = 0.7  # de-identified and indexed rate, x Orthanc (goal GOAL_INDEXED)
GOAL_INDEXED = 1.0
LOG_PROBLEM = re.compile(r"\b(ERROR|CRITICAL)\b|Traceback")


@dataclass(frozen=True)
class Corpus:
    """One generated corpus: its files (in sending order) and their total size."""

    name: str
    files: list[Path]
    size_bytes: int
    description: str


@dataclass(frozen=True)
class Measurement:
    """One send of a corpus to a receiver: acknowledged time and, for the bridge, de-identified+indexed time."""

    receiver: str
    corpus: Corpus
    associations: int
    ack_seconds: float
    indexed_seconds: float | None
    idle_wait: float  # seconds waited after start-up until the receiver was idle (not timed)

    @property
    def ack_rate(self) -> float:
        """Acknowledged instances per second."""
        return len(self.corpus.files) / self.ack_seconds

    @property
    def indexed_rate(self) -> float | None:
        """De-identified and indexed instances per second (bridge only)."""
        return None if self.indexed_seconds is None else len(self.corpus.files) / self.indexed_seconds

    @property
    def mb_per_s(self) -> float:
        """Acknowledged input megabytes (10^6 bytes) per second."""
        return self.corpus.size_bytes / 1e6 / self.ack_seconds


def fail(message: str, details: str = "") -> NoReturn:
    """Print ``message`` and ``details`` verbatim, then exit 1."""
    print(f"\nFAILED: {message}", file=sys.stderr)
    if details:
        print(details, file=sys.stderr)
    raise SystemExit(1)


# --------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------


def generate_corpus(factory: ModuleType, root: Path, name: str, count: int, size: int, first_patient: int) -> Corpus:
    """``count`` CT slices of ``size`` x ``size`` uint16 over PATIENTS patients x SERIES_PER_PATIENT series.

    Written one series at a time (memory stays at one series), in patient/series/instance order.
    """
    n_series = min(PATIENTS * SERIES_PER_PATIENT, count)
    files: list[Path] = []
    study_uid = ""
    for index in range(n_series):
        slices = count // n_series + (1 if index < count % n_series else 0)
        number = index % SERIES_PER_PATIENT + 1
        if number == 1:
            study_uid = generate_uid()
        patient = factory.make_patient(first_patient + index // SERIES_PER_PATIENT)
        datasets = factory.make_series(
            patient,
            "CT",
            slices,
            study_uid=study_uid,
            study_date="20240105",
            accession_number=f"ACC{first_patient + index // SERIES_PER_PATIENT:05d}",
            series_number=number,
            rows=size,
            columns=size,
        )
        files.extend(factory.write_files(datasets, root))
    size_bytes = sum(path.stat().st_size for path in files)
    patients = (n_series + SERIES_PER_PATIENT - 1) // SERIES_PER_PATIENT
    description = (
        f"{name}: {len(files)} CT slices of {size}x{size} uint16 in {n_series} series of {patients} patients, "
        f"{size_bytes / 1e6:.1f} MB ({size_bytes / len(files) / 1e3:.1f} kB each)"
    )
    return Corpus(name=name, files=files, size_bytes=size_bytes, description=description)


# --------------------------------------------------------------------------
# Processes and the sender
# --------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def dcmtk_env() -> dict[str, str]:
    """The environment with ``TCP_NODELAY=1`` (Debian's DCMTK and Orthanc leave Nagle's algorithm on otherwise)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def require_tools() -> None:
    """Exit early if DCMTK or Orthanc is missing."""
    for tool in ("storescu", "storescp", "echoscu"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: install DCMTK (apt-get install dcmtk)")
    if orthanc_path() is None:
        raise SystemExit("Orthanc not found: install it (apt-get install orthanc)")


def orthanc_path() -> str | None:
    """The Orthanc executable (Debian installs it in /usr/sbin, often not on PATH)."""
    found = shutil.which("Orthanc")
    if found is not None:
        return found
    return "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None


def first_line(command: list[str]) -> str:
    """The first line of a ``--version`` output, for the report."""
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = (proc.stdout or proc.stderr).strip().splitlines()
    return lines[0] if lines else "?"


def stop_process(process: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM the process we started (by its PID) and wait; SIGKILL it if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(30)


def chunks(files: Sequence[Path], parts: int) -> list[list[Path]]:
    """``files`` split into ``parts`` contiguous chunks (a chunk holds whole series when they divide evenly)."""
    n = len(files)
    split = [list(files[i * n // parts : (i + 1) * n // parts]) for i in range(parts)]
    return [chunk for chunk in split if chunk]


def send(files: Sequence[Path], port: int, called: str, associations: int, logs: Path) -> tuple[float, float]:
    """Send ``files`` with ``associations`` ``storescu`` processes at once; (start, end) ``perf_counter`` times.

    The end is when the last ``storescu`` has exited; any non-zero exit fails the benchmark with its output.
    """
    logs.mkdir(parents=True, exist_ok=True)
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    start = time.perf_counter()
    for index, chunk in enumerate(chunks(files, associations)):
        log = logs / f"storescu-{index}.log"
        with log.open("wb") as out:
            command = ["storescu", "-R", "-aet", CALLING_AE, "-aec", called, "127.0.0.1", str(port), *map(str, chunk)]
            running.append((subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=dcmtk_env()), log))
    failures: list[str] = []
    for process, log in running:
        try:
            code = process.wait(timeout=900)
        except subprocess.TimeoutExpired:
            stop_process(process)
            code = -1
        if code != 0:
            failures.append(f"--- {log.name}: exit status {code}\n{log.read_text(errors='replace')}")
    end = time.perf_counter()
    if failures:
        fail(f"storescu to {called} on port {port} failed", "\n".join(failures))
    return start, end


def wait_for(
    what: str, ready: Callable[[], bool], process: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    """Poll ``ready()`` until true; fail with the log if the process exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            fail(f"{what} exited with status {process.returncode} at start-up", log.read_text(errors="replace"))
        if ready():
            return
        time.sleep(0.1)
    stop_process(process)
    fail(f"{what} did not start within {timeout:g} s", log.read_text(errors="replace"))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and all its descendants (Linux ``/proc``), in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


def wait_idle(process: subprocess.Popen[bytes], timeout: float = 60) -> float:
    """Wait until ``process`` and its children (e.g. worker processes still importing) use under 5% of a core.

    Keeps the receivers' start-up out of the timed send. Returns the seconds waited.
    """
    start = time.monotonic()
    before = cpu_seconds(process.pid)
    while time.monotonic() - start < timeout:
        time.sleep(0.5)
        after = cpu_seconds(process.pid)
        if after - before < 0.025:
            break
        before = after
    return time.monotonic() - start


# --------------------------------------------------------------------------
# Receivers: a fresh process with fresh folders per measurement
# --------------------------------------------------------------------------


class Receiver:
    """A receiving process started for one measurement, in its own run folder."""

    name = ""
    ae_title = ""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.log = run_dir / f"{self.name}.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self, command: list[str], env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start ``command`` with its output in ``self.log``."""
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        return self.process

    def start(self) -> None:
        """Start the receiver and wait until it accepts associations."""
        raise NotImplementedError

    def settle(self) -> float:
        """Wait until the started receiver is idle (start-up finished); the seconds waited."""
        assert self.process is not None
        return wait_idle(self.process)

    def check(self, expected: int, send_start: float, ack_end: float) -> float | None:
        """Fail unless the receiver holds ``expected`` instances; the indexed seconds where that is separate."""
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM the receiver and wait for it."""
        if self.process is not None:
            stop_process(self.process)


class StoreScp(Receiver):
    """DCMTK's ``storescp`` writing every received instance into a folder."""

    name = "storescp"
    ae_title = "STORESCP"
    fork = False

    def start(self) -> None:
        self.out = self.run_dir / "received"
        self.out.mkdir(parents=True)
        mode = "--fork" if self.fork else "--single-process"
        command = ["storescp", mode, "-aet", self.ae_title, "-od", str(self.out), "+xa", "-dhl", str(self.port)]
        process = self.launch(command, dcmtk_env())
        wait_for("storescp", self.echo, process, self.log)

    def echo(self) -> bool:
        """A C-ECHO answered: the listener is up."""
        command = ["echoscu", "-aet", CALLING_AE, "-aec", self.ae_title, "127.0.0.1", str(self.port)]
        return subprocess.run(command, capture_output=True, env=dcmtk_env()).returncode == 0

    def check(self, expected: int, send_start: float, ack_end: float) -> float | None:
        written = sum(1 for path in self.out.iterdir() if path.is_file())
        if written != expected:
            fail(f"storescp wrote {written} files, expected {expected}", self.log.read_text(errors="replace"))
        return None


class Orthanc(Receiver):
    """Orthanc from the Debian package: default SQLite index, no plugins, HTTP on 127.0.0.1 only."""

    name = "orthanc"
    ae_title = "ORTHANC"

    def start(self) -> None:
        self.http_port = free_port()
        storage = self.run_dir / "storage"
        config = {
            "Name": "bench",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "Plugins": [],
            "LuaScripts": [],
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "WebDavEnabled": False,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomCheckCalledAet": False,
            "DicomPort": self.port,
            "DicomModalities": {},
            "OrthancPeers": {},
            "HttpProxy": "",
            "SaveJobs": False,
        }
        path = self.run_dir / "orthanc.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        executable = orthanc_path()
        assert executable is not None
        process = self.launch([executable, str(path)], dcmtk_env(), cwd=self.run_dir)
        wait_for("Orthanc", self.answers, process, self.log)

    def rest(self, route: str) -> Any:
        """GET ``route`` of the REST API as JSON (never through a proxy)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://127.0.0.1:{self.http_port}{route}", timeout=10) as response:
            return json.loads(response.read())

    def answers(self) -> bool:
        """``/system`` answers: the server is up (Orthanc opens DICOM before HTTP)."""
        try:
            self.rest("/system")
        except (OSError, urllib.error.URLError, ValueError):
            return False
        return True

    def check(self, expected: int, send_start: float, ack_end: float) -> float | None:
        stored = int(self.rest("/statistics")["CountInstances"])
        if stored != expected:
            fail(f"Orthanc indexed {stored} instances, expected {expected}", self.log.read_text(errors="replace"))
        return None


class Bridge(Receiver):
    """``pacs-bridge serve`` with one project (de-identification defaults), SQLite and folders in the run folder."""

    name = "bridge"
    ae_title = "BRIDGE"

    def start(self) -> None:
        self.database = self.run_dir / "bridge.db"
        self.config = self.run_dir / "bridge.toml"
        self.config.write_text(
            f"""{config_head(self.run_dir)}[dimse]
host = "127.0.0.1"
port = {self.port}
ae_title = "{self.ae_title}"
default_project = "{PROJECT}"
workers = 2
min_free_space_mb = 0
[projects.{PROJECT}]
subject_prefix = "BENCH"
[projects.{PROJECT}.dimse]
allowed_callers = [{{ae_title = "{CALLING_AE}", addresses = ["127.0.0.1"]}}]
""",
            encoding="utf-8",
        )
        command = [cli_path(), "serve", "--config", str(self.config)]
        process = self.launch(command, clean_env(), cwd=self.run_dir)
        wait_for("pacs-bridge serve", lambda: "listening on" in self.log.read_text(errors="replace"), process, self.log)

    def counts(self) -> tuple[int, int]:
        """(indexed instances, quarantined items), read from the SQLite database directly."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=5) as db:
            instances = int(db.execute("SELECT count(*) FROM instance").fetchone()[0])
            quarantined = int(db.execute("SELECT count(*) FROM quarantineitem").fetchone()[0])
        db.close()
        return instances, quarantined

    def check(self, expected: int, send_start: float, ack_end: float) -> float | None:
        deadline = time.monotonic() + max(120.0, expected * 0.5)
        instances, quarantined = self.counts()
        while instances + quarantined < expected:
            if time.monotonic() > deadline:
                fail(f"pacs-bridge indexed {instances} of {expected} instances in time", self.problems())
            time.sleep(POLL_SECONDS)
            instances, quarantined = self.counts()
        done = max(time.perf_counter(), ack_end)
        if instances != expected or quarantined:
            fail(f"pacs-bridge indexed {instances}, quarantined {quarantined} of {expected}", self.problems())
        return done - send_start

    def problems(self) -> str:
        """The log lines that report errors (with the traceback lines after them), else the last 40 lines."""
        lines = self.log.read_text(errors="replace").splitlines()
        picked = [i for i, line in enumerate(lines) if LOG_PROBLEM.search(line)]
        if not picked:
            return "\n".join(lines[-40:])
        keep: list[str] = []
        for i in picked[:5]:
            keep.extend(lines[i : i + 25])
            keep.append("...")
        return "\n".join(keep)

    def stop(self) -> None:
        if self.process is None:
            return
        code = stop_process(self.process)
        if code != 0 or any(LOG_PROBLEM.search(line) for line in self.log.read_text(errors="replace").splitlines()):
            fail(f"pacs-bridge serve stopped with status {code} or logged errors ({self.log})", self.problems())


RECEIVER_CLASSES: dict[str, type[Receiver]] = {"storescp": StoreScp, "orthanc": Orthanc, "bridge": Bridge}


def measure(kind: type[Receiver], corpus: Corpus, associations: int, run_dir: Path) -> Measurement:
    """One fresh receiver, one send of ``corpus`` over ``associations`` associations, checked and stopped."""
    run_dir.mkdir(parents=True)
    receiver = kind(run_dir)
    try:
        receiver.start()
        idle_wait = receiver.settle()
        os.sync()  # earlier runs' dirty pages are written back now, not during this send
        start, end = send(corpus.files, receiver.port, receiver.ae_title, associations, run_dir / "storescu")
        indexed = receiver.check(len(corpus.files), start, end)
    finally:
        receiver.stop()
    return Measurement(kind.name, corpus, associations, end - start, indexed, idle_wait)


def medians(samples: Sequence[Measurement]) -> list[Measurement]:
    """One measurement per (receiver, corpus, associations): the median times of its repeated samples."""
    groups: dict[tuple[str, str, int], list[Measurement]] = {}
    for m in samples:
        groups.setdefault((m.receiver, m.corpus.name, m.associations), []).append(m)
    combined = []
    for group in groups.values():
        indexed = [m.indexed_seconds for m in group if m.indexed_seconds is not None]
        combined.append(
            Measurement(
                group[0].receiver,
                group[0].corpus,
                group[0].associations,
                statistics.median(m.ack_seconds for m in group),
                statistics.median(indexed) if indexed else None,
                statistics.median(m.idle_wait for m in group),
            )
        )
    return combined


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> str:
    """``n/d`` as ``1.23x``, or ``-`` when either is missing."""
    if numerator is None or denominator is None:
        return "-"
    return f"{numerator / denominator:.2f}x"


def report(corpora: Sequence[Corpus], results: Sequence[Measurement], repeat: int) -> None:
    """Print the rates table, the ratio table and the verdict against the targets."""
    print()
    for corpus in corpora:
        print(f"corpus {corpus.description}")
    if repeat > 1:
        print(f"each figure: the median time of {repeat} rounds")
    print(
        "acknowledged: from the start of the storescu processes until all have exited (every C-STORE answered)\n"
        "indexed: pacs-bridge only, from the start of the send until SELECT count(*) FROM instance reaches\n"
        f"         the number sent (polled every {POLL_SECONDS:g} s);"
        " Orthanc indexes before it answers, storescp only writes files:\n"
        "         the ratios use their acknowledged rate\n"
    )
    print(
        f"{'receiver':<9} {'corpus':<7} {'assoc':>5} {'ack s':>7} {'ack inst/s':>11} {'ack MB/s':>9} "
        f"{'indexed s':>10} {'indexed inst/s':>15}"
    )
    for m in results:
        indexed_cell = "-" if m.indexed_seconds is None else f"{m.indexed_seconds:.2f}"
        rate_cell = "-" if m.indexed_rate is None else f"{m.indexed_rate:.1f}"
        print(
            f"{m.receiver:<9} {m.corpus.name:<7} {m.associations:>5} {m.ack_seconds:>7.2f} {m.ack_rate:>11.1f} "
            f"{m.mb_per_s:>9.1f} {indexed_cell:>10} {rate_cell:>15}"
        )

    by_key = {(m.receiver, m.corpus.name, m.associations): m for m in results}
    print(
        f"\n{'corpus':<7} {'assoc':>5} {'ack bridge/Orthanc':>19} {'ack bridge/storescp':>20} "
        f"{'indexed bridge/Orthanc':>23} {'indexed bridge/storescp':>24}"
    )
    for corpus in corpora:
        for associations in ASSOCIATIONS:
            bridge = by_key.get(("bridge", corpus.name, associations))
            orthanc = by_key.get(("orthanc", corpus.name, associations))
            storescp = by_key.get(("storescp", corpus.name, associations))
            ack = bridge.ack_rate if bridge else None
            indexed = bridge.indexed_rate if bridge else None
            o_rate = orthanc.ack_rate if orthanc else None
            s_rate = storescp.ack_rate if storescp else None
            print(
                f"{corpus.name:<7} {associations:>5} {ratio(ack, o_rate):>19} {ratio(ack, s_rate):>20} "
                f"{ratio(indexed, o_rate):>23} {ratio(indexed, s_rate):>24}"
            )

    big = corpora[0].name
    bridge = by_key.get(("bridge", big, 4))
    orthanc = by_key.get(("orthanc", big, 4))
    print(f"\ntargets, {big} corpus, 4 associations:")
    if bridge is None or orthanc is None or bridge.indexed_rate is None:
        print("  not evaluated (needs both the bridge and Orthanc runs)")
        return
    ack_ratio = bridge.ack_rate / orthanc.ack_rate
    indexed_ratio = bridge.indexed_rate / orthanc.ack_rate
    verdict = "meets" if ack_ratio >= TARGET_ACK else "MISSES"
    print(
        f"  acknowledged {bridge.ack_rate:.1f} inst/s = {ack_ratio:.2f}x Orthanc ({orthanc.ack_rate:.1f}/s); "
        f"target >= {TARGET_ACK:g}x: {verdict} the target"
    )
    verdict = "meets" if indexed_ratio >= TARGET_INDEXED else "MISSES"
    goal = "meets" if indexed_ratio >= GOAL_INDEXED else "misses"
    print(
        f"  indexed      {bridge.indexed_rate:.1f} inst/s = {indexed_ratio:.2f}x Orthanc; "
        f"target >= {TARGET_INDEXED:g}x: {verdict} the target; goal {GOAL_INDEXED:g}x: {goal} the goal"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--count", type=int, default=400, help="instances per corpus (default 400)")
    parser.add_argument("--only", choices=RECEIVERS, default=None, help="measure one receiver only (debugging)")
    parser.add_argument(
        "--storescp-fork",
        action="store_true",
        help="run storescp with --fork (one child per association) instead of --single-process, which serves "
        "parallel associations one after the other",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every measurement; reports the median (default 1)"
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent of the temporary directory (default: the system temp dir, e.g. /tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        parser.error("--count and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate, measure every receiver x corpus x associations, report; remove the temp dir unless --keep."""
    args = parse_args(argv)
    require_tools()
    StoreScp.fork = args.storescp_fork
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bridge-ingest-", dir=args.workdir)).resolve()
    try:
        print(f"working in {workdir}", flush=True)
        print(
            f"{os.cpu_count()} cores; {first_line(['storescu', '--version'])}; "
            f"{first_line([orthanc_path() or 'Orthanc', '--version'])}; "
            f"storescp {'--fork' if args.storescp_fork else '--single-process'}",
            flush=True,
        )
        start = time.perf_counter()
        factory = load_factory()
        corpora = [
            generate_corpus(factory, workdir / "corpus-0.5MB", "0.5MB", args.count, 512, first_patient=1),
            generate_corpus(factory, workdir / "corpus-64x64", "64x64", args.count, 64, first_patient=101),
        ]
        print(f"generated 2 x {args.count} files in {time.perf_counter() - start:.1f} s (not measured)", flush=True)

        samples: list[Measurement] = []
        for round_ in range(1, args.repeat + 1):  # whole rounds, so slow spells of the machine hit every receiver
            for name in RECEIVERS if args.only is None else (args.only,):
                for corpus in corpora:
                    for associations in ASSOCIATIONS:
                        run_dir = workdir / "runs" / f"{name}-{corpus.name}-{associations}-{round_}"
                        m = measure(RECEIVER_CLASSES[name], corpus, associations, run_dir)
                        indexed = "" if m.indexed_rate is None else f", indexed {m.indexed_rate:.1f} inst/s"
                        print(
                            f"[{round_}/{args.repeat}] {name} {corpus.name} x{associations}: acknowledged "
                            f"{m.ack_rate:.1f} inst/s{indexed} (idle {m.idle_wait:.1f} s after start-up)",
                            flush=True,
                        )
                        samples.append(m)
                        if not args.keep:
                            shutil.rmtree(run_dir, ignore_errors=True)
        report(corpora, medians(samples), args.repeat)
    finally:
        clean_up(workdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
