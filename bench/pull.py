"""Throughput of `pacs-bridge pull` over DICOMweb against a plain dicomweb-client fetch-and-save loop.

Starts Orthanc (Debian package, DICOMweb plugin) on 127.0.0.1 with its own storage folder through the test
harness ``tests/pull/orthanc.py`` (``TCP_NODELAY=1`` in its environment), and loads it with a synthetic CT
corpus from ``tests/factory.py``: ``--instances`` slices (default 2000) of 512x512 uint16 (~0.5 MB each) over
``--patients`` x ``--studies`` studies (distinct dates) of ``--series`` series each, sent with parallel DCMTK
``storescu`` processes (``TCP_NODELAY=1``). None of that is timed. Then, in the same run, against that Orthanc:

- reference, serial: ``dicomweb-client``: QIDO-RS ``search_for_studies()`` (no filter: dicomweb-client sends
  ``*`` as ``%2A``, which Orthanc 1.10 takes literally), then for each study ``retrieve_study(uid)`` (one
  multipart answer, every part parsed into a pydicom Dataset) and ``save_as`` of every dataset into a folder;
- reference, threaded: the same with a ThreadPoolExecutor of 8 threads, one study per task, one client
  (one ``requests`` session) per thread;
- pipeline: ``python -m bridge pull REMOTE --project P --json`` as a subprocess with a fresh embedded SQLite
  configuration in the temporary folder, wall time including start-up, QIDO-RS, WADO-RS, de-identification,
  durable store and indexing. The JSON report and ``status --json`` must show every instance, else exit 1.

The references use dicomweb-client's defaults (Orthanc 1.10 answers WADO-RS uncompressed whether or not
the client accepts gzip, so this equals the bridge's ``Accept-Encoding: identity``); they do not fsync, the
bridge does (its writes are durable). Before each timed run dirty pages are synced. It prints instances/s of
each and the ratios pull rate / reference rate (below 1: the pull is slower than the reference).

    .venv/bin/python bench/pull.py [--instances 2000] [--patients 5] [--studies 4] [--series 2]
                                   [--size 512] [--threads 8] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

from common import REPO, Timing, clean_env, clean_up, config_head, load_factory, load_repo_module
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

PROJECT = "bench"
REMOTE = "orthanc"
CALLING_AE = "BENCHSCU"
UPLOADERS = 4  # parallel storescu processes for loading Orthanc (not timed)
FIRST_DATE = date(2024, 1, 5)
INTERVAL_DAYS = 90


@dataclass(frozen=True)
class Corpus:
    """What Orthanc was loaded with: instance count, size and the study UIDs (originals)."""

    instances: int
    size_bytes: int
    study_uids: frozenset[str]
    description: str


def fail(message: str, details: str = "") -> NoReturn:
    """Print ``message`` and ``details`` verbatim, then exit 1."""
    print(f"\nFAILED: {message}", file=sys.stderr)
    if details:
        print(details, file=sys.stderr)
    raise SystemExit(1)


def load_harness() -> ModuleType:
    """The Orthanc harness of the tests, ``tests/pull/orthanc.py``."""
    return load_repo_module("tests/pull/orthanc.py", "pacs_bridge_test_orthanc")


# --------------------------------------------------------------------------
# Corpus and loading Orthanc (not timed)
# --------------------------------------------------------------------------


def generate_corpus(root: Path, instances: int, patients: int, studies: int, series: int, size: int) -> Corpus:
    """``instances`` CT slices spread evenly over patients x studies x series, written one series at a time.

    Fewer series are made when there are fewer instances than series (every series holds at least one).
    """
    factory = load_factory()
    n_series = min(patients * studies * series, instances)
    study_uids: list[str] = []
    size_bytes = 0
    written = 0
    for index in range(n_series):
        p, rest = divmod(index, studies * series)
        s, number = divmod(rest, series)
        if number == 0:
            study_uids.append(generate_uid())
        slices = instances // n_series + (1 if index < instances % n_series else 0)
        day = FIRST_DATE + timedelta(days=INTERVAL_DAYS * s + p)
        datasets = factory.make_series(
            factory.make_patient(p + 1),
            "CT",
            slices,
            study_uid=study_uids[-1],
            study_date=day.strftime("%Y%m%d"),
            accession_number=f"ACC{p + 1:04d}{s:03d}",
            series_number=number + 1,
            rows=size,
            columns=size,
        )
        paths = factory.write_files(datasets, root)
        size_bytes += sum(path.stat().st_size for path in paths)
        written += len(paths)
    used_patients = (n_series + studies * series - 1) // (studies * series)
    description = (
        f"{written} CT slices of {size}x{size} uint16 in {n_series} series, {len(study_uids)} studies, "
        f"{used_patients} patients; {size_bytes / 1e6:.1f} MB ({size_bytes / written / 1e6:.2f} MB each)"
    )
    return Corpus(written, size_bytes, frozenset(study_uids), description)


def upload(root: Path, orthanc: Any, log_dir: Path) -> float:
    """Send every file under ``root`` to Orthanc's DICOM port with parallel ``storescu -R``; the seconds taken.

    ``TCP_NODELAY=1``: Debian's DCMTK leaves Nagle's algorithm on otherwise and every C-STORE stalls.
    """
    files = sorted(str(path) for path in root.rglob("*.dcm"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TCP_NODELAY": "1"}
    running: list[tuple[subprocess.Popen[bytes], Path]] = []
    start = time.perf_counter()
    n = len(files)
    for index in range(UPLOADERS):
        chunk = files[index * n // UPLOADERS : (index + 1) * n // UPLOADERS]
        if not chunk:
            continue
        log = log_dir / f"storescu-{index}.log"
        command = ["storescu", "-R", "-aet", CALLING_AE, "-aec", orthanc.aet, "127.0.0.1", str(orthanc.dicom_port)]
        with log.open("wb") as out:
            running.append((subprocess.Popen([*command, *chunk], stdout=out, stderr=subprocess.STDOUT, env=env), log))
    failures = []
    for process, log in running:
        if process.wait() != 0:
            failures.append(f"--- {log.name}: exit status {process.returncode}\n{log.read_text(errors='replace')}")
    if failures:
        fail("storescu to Orthanc failed", "\n".join(failures))
    return time.perf_counter() - start


# --------------------------------------------------------------------------
# Reference: dicomweb-client, fetch and save
# --------------------------------------------------------------------------


def make_client(orthanc: Any) -> DICOMwebClient:
    """A dicomweb-client with its defaults on Orthanc's DICOMweb root (the harness's session: no proxy)."""
    return DICOMwebClient(url=orthanc.dicomweb_url, session=orthanc.http_session())


def list_studies(client: DICOMwebClient, corpus: Corpus) -> list[str]:
    """The StudyInstanceUIDs QIDO-RS lists (no wildcard: see the module docstring); must be the corpus's."""
    found = [str(item["0020000D"]["Value"][0]) for item in client.search_for_studies()]
    if set(found) != corpus.study_uids:
        fail(f"QIDO-RS listed {len(found)} studies, the corpus has {len(corpus.study_uids)}")
    return found


def save_study(client: DICOMwebClient, study_uid: str, out_root: Path) -> int:
    """``retrieve_study`` (each part parsed into a Dataset), then ``save_as`` of each; how many were saved."""
    datasets: list[Dataset] = client.retrieve_study(study_uid)
    made: set[Path] = set()
    for ds in datasets:
        folder = out_root / study_uid / str(ds.SeriesInstanceUID)
        if folder not in made:
            folder.mkdir(parents=True, exist_ok=True)
            made.add(folder)
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return len(datasets)


def reference_serial(orthanc: Any, corpus: Corpus, out_root: Path) -> Timing:
    """One client, one study after the other."""
    start = time.perf_counter()
    client = make_client(orthanc)
    saved = sum(save_study(client, uid, out_root) for uid in list_studies(client, corpus))
    return checked(Timing("dicomweb-client, serial", time.perf_counter() - start, saved, corpus.size_bytes), corpus)


def reference_threaded(orthanc: Any, corpus: Corpus, out_root: Path, threads: int) -> Timing:
    """``threads`` workers, one study per task; a client per thread (a requests session is not thread-safe)."""
    local = threading.local()

    def task(uid: str) -> int:
        if not hasattr(local, "client"):
            local.client = make_client(orthanc)
        return save_study(local.client, uid, out_root)

    start = time.perf_counter()
    uids = list_studies(make_client(orthanc), corpus)
    with ThreadPoolExecutor(threads, thread_name_prefix="reference") as pool:
        saved = sum(pool.map(task, uids))
    return checked(
        Timing(f"dicomweb-client, {threads} threads", time.perf_counter() - start, saved, corpus.size_bytes), corpus
    )


def checked(timing: Timing, corpus: Corpus) -> Timing:
    """Fail unless the run saved every instance of the corpus."""
    if timing.instances != corpus.instances:
        fail(f"{timing.label} saved {timing.instances} instances, Orthanc holds {corpus.instances}")
    return timing


# --------------------------------------------------------------------------
# Pipeline: pacs-bridge pull
# --------------------------------------------------------------------------


def write_config(folder: Path, orthanc: Any) -> Path:
    """A fresh embedded configuration: SQLite and folders under ``folder``, one project, Orthanc as remote."""
    config = folder / "bridge.toml"
    config.write_text(
        f"""{config_head(folder)}
[projects.{PROJECT}]
subject_prefix = "BENCH"

[[remotes]]
name = "{REMOTE}"
dicomweb_url = "{orthanc.dicomweb_url}"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
""",
        encoding="utf-8",
    )
    return config


def bridge(args: Sequence[str], config: Path, timeout: float) -> tuple[float, subprocess.CompletedProcess[str]]:
    """``python -m bridge ARGS --config CONFIG`` with this interpreter; wall time including start-up."""
    command = [sys.executable, "-m", "bridge", *args, "--config", str(config)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        fail(f"{' '.join(args[:2])} did not finish within {timeout:g} s", str(error.stderr or "")[-4000:])
    return time.perf_counter() - start, proc


def describe(proc: subprocess.CompletedProcess[str]) -> str:
    """Exit status, stdout and the end of stderr of a subprocess, for a failure message."""
    return f"--- exit status {proc.returncode}; stdout:\n{proc.stdout}\n--- stderr (end):\n{proc.stderr[-4000:]}"


def pipeline_run(config: Path, corpus: Corpus) -> tuple[Timing, dict[str, Any], str]:
    """``pull REMOTE --project P --json``, timed; fails unless the report and the index hold every instance.

    Returns the timing, the JSON report and the pull's stderr (its log).
    """
    timeout = max(600.0, corpus.instances * 1.0)
    seconds, proc = bridge(["pull", REMOTE, "--project", PROJECT, "--json"], config, timeout)
    try:
        report: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        fail("pacs-bridge pull did not print a JSON report", describe(proc))
    complete = (report.get("fetched"), report.get("quarantined"), report.get("missing"), report.get("failed"))
    if proc.returncode != 0 or complete != (corpus.instances, 0, 0, []):
        fail(f"pacs-bridge pull fetched {report.get('fetched')} of {corpus.instances} instances", describe(proc))
    return Timing("pacs-bridge pull", seconds, corpus.instances, corpus.size_bytes), report, proc.stderr


def status_run(config: Path, corpus: Corpus) -> float:
    """One ``status --json`` (start-up, config, database open), timed; fails unless the project holds it all."""
    seconds, proc = bridge(["status", "--json"], config, 120)
    if proc.returncode != 0:
        fail("pacs-bridge status failed", describe(proc))
    projects = {p["name"]: p for p in json.loads(proc.stdout)["projects"]}
    held = projects.get(PROJECT, {})
    if held.get("instances") != corpus.instances or held.get("quarantined"):
        fail(f"pacs-bridge status shows {held} for {PROJECT!r}, expected {corpus.instances} instances", describe(proc))
    return seconds


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


def timed(what: str, run: Callable[[], Timing]) -> Timing:
    """Sync dirty pages (earlier runs' writes are not flushed during this one), run, print one progress line."""
    os.sync()
    print(f"running {what} ...", flush=True)
    timing = run()
    print(f"  {timing.instances} instances in {timing.seconds:.2f} s = {timing.rate:.1f} inst/s", flush=True)
    return timing


def report(corpus: Corpus, pull: Timing, references: Sequence[Timing], startup: float) -> None:
    """Print the rates table and the ratios pull rate / reference rate."""
    print(f"\ncorpus: {corpus.description}")
    print("reference: dicomweb-client search_for_studies + retrieve_study (parsed to Datasets) + save_as, no fsync")
    print("pipeline:  pacs-bridge pull subprocess, wall time including start-up, de-identification and indexing\n")
    print(f"{'method':<28} {'instances':>9} {'seconds':>9} {'instances/s':>12} {'MB/s':>8} {'pull/ref':>9}")
    for timing in (*references, pull):
        ratio = "-" if timing is pull else f"{pull.rate / timing.rate:.2f}x"
        print(
            f"{timing.label:<28} {timing.instances:>9} {timing.seconds:>9.2f} {timing.rate:>12.1f} "
            f"{timing.mb_per_s:>8.1f} {ratio:>9}"
        )
    net = max(pull.seconds - startup, 1e-9)
    print(f"{'  of which start-up (status)':<28} {'':>9} {startup:>9.2f}")
    print(f"{'  pull minus start-up':<28} {pull.instances:>9} {net:>9.2f} {pull.instances / net:>12.1f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=2000, help="instances in Orthanc (default 2000)")
    parser.add_argument("--patients", type=int, default=5, help="patients (default 5)")
    parser.add_argument("--studies", type=int, default=4, help="studies per patient, distinct dates (default 4)")
    parser.add_argument("--series", type=int, default=2, help="CT series per study (default 2)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each slice (default 512)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the threaded reference (default 8)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent of the temporary directory (default: the system temp dir, e.g. /tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    for name in ("instances", "patients", "studies", "series", "size", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Load Orthanc, measure the references and the pull, report; stop Orthanc, remove the temporary directory."""
    args = parse_args(argv)
    if shutil.which("storescu") is None:
        raise SystemExit("storescu not found: install DCMTK (apt-get install dcmtk)")
    harness = load_harness()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bridge-pull-", dir=args.workdir)).resolve()
    try:
        print(f"working in {workdir}", flush=True)
        with harness.running_orthanc(workdir / "orthanc", name="BENCH-PACS") as orthanc:
            system = orthanc.rest("/system")
            plugin = orthanc.rest("/plugins/dicom-web")
            print(
                f"{os.cpu_count()} cores; Orthanc {system.get('Version')} with DICOMweb plugin "
                f"{plugin.get('Version')} (PID {orthanc.process.pid}, {orthanc.dicomweb_url})",
                flush=True,
            )
            start = time.perf_counter()
            sizes = (args.instances, args.patients, args.studies, args.series, args.size)
            corpus = generate_corpus(workdir / "corpus", *sizes)
            generated = time.perf_counter() - start
            sent = upload(workdir / "corpus", orthanc, workdir / "upload-logs")
            shutil.rmtree(workdir / "corpus")
            if orthanc.count_instances() != corpus.instances:
                fail(f"Orthanc holds {orthanc.count_instances()} instances, {corpus.instances} were sent")
            print(
                f"generated {corpus.instances} files in {generated:.1f} s, sent to Orthanc in {sent:.1f} s "
                f"({corpus.instances / sent:.0f} inst/s; not measured)",
                flush=True,
            )

            serial = timed("the serial reference", lambda: reference_serial(orthanc, corpus, workdir / "ref-serial"))
            shutil.rmtree(workdir / "ref-serial")
            threaded = timed(
                f"the {args.threads}-thread reference",
                lambda: reference_threaded(orthanc, corpus, workdir / "ref-threads", args.threads),
            )
            shutil.rmtree(workdir / "ref-threads")

            bridge_dir = workdir / "bridge"
            bridge_dir.mkdir()
            config = write_config(bridge_dir, orthanc)
            pulled: dict[str, Any] = {}

            def pull() -> Timing:
                timing, pulled["report"], pulled["log"] = pipeline_run(config, corpus)
                return timing

            pipeline = timed("pacs-bridge pull", pull)
            startup = status_run(config, corpus)
            problems = [line for line in pulled["log"].splitlines() if "ERROR" in line or "WARNING" in line]
            if problems or pulled["report"].get("present"):
                print(f"note: pull report {json.dumps(pulled['report'])}; {len(problems)} warning/error log lines")
                print("\n".join(problems[:10]))
        report(corpus, pipeline, (serial, threaded), startup)
    finally:
        clean_up(workdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
