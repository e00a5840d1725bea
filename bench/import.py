"""Throughput of `pacs-bridge import` against a plain pydicom read + write of the same files.

Generates a synthetic CT corpus with ``tests/factory.py`` (not timed), then measures in the same run:

- the reference: ``pydicom.dcmread`` + ``Dataset.save_as(enforce_file_format=True)`` of every file into
  another folder, once with an ``os.fsync`` of each written file (the pipeline fsyncs too) and once without;
- the pipeline: ``pacs-bridge import CORPUS --project demo --json`` as a subprocess on a private copy of
  ``config/bridge.toml`` (SQLite and folders in the temporary directory), wall time including start-up;
- the start-up cost alone: one ``pacs-bridge status`` run against the same configuration.

It prints instances/s and MB/s of each and the ratio pipeline time / reference time (with fsync); the
target is a ratio of at most 3. Exits 1 if the import does not store every generated file.

    .venv/bin/python bench/import.py [--subjects 20] [--timepoints 2] [--slices 50] [--size 512]
                                     [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NoReturn

import pydicom
from common import REPO, Timing, clean_env, clean_up, cli_path, load_factory
from pydicom.uid import generate_uid

TARGET_RATIO = 3.0
PROJECT = "demo"
FIRST_DATE = date(2024, 1, 5)
INTERVAL_DAYS = 90


@dataclass(frozen=True)
class Corpus:
    """The generated input: its files, their total size and how it was built."""

    root: Path
    files: list[Path]
    size_bytes: int
    description: str


def generate_corpus(root: Path, subjects: int, timepoints: int, slices: int, size: int) -> Corpus:
    """Write ``subjects`` x ``timepoints`` studies (distinct dates), one CT series of ``slices`` each.

    Generated and written one series at a time, so memory stays at one series.
    """
    factory = load_factory()
    files: list[Path] = []
    for s in range(1, subjects + 1):
        patient = factory.make_patient(s)
        for t in range(timepoints):
            day = FIRST_DATE + timedelta(days=INTERVAL_DAYS * t + s)
            datasets = factory.make_series(
                patient,
                "CT",
                slices,
                study_uid=generate_uid(),
                study_date=day.strftime("%Y%m%d"),
                accession_number=f"ACC{s:04d}{t:03d}",
                series_number=1,
                rows=size,
                columns=size,
            )
            files.extend(factory.write_files(datasets, root))
    size_bytes = sum(path.stat().st_size for path in files)
    description = (
        f"{subjects} subjects x {timepoints} timepoints x {slices} CT slices of {size}x{size} uint16 = "
        f"{len(files)} instances, {size_bytes / 1e6:.1f} MB ({size_bytes / len(files) / 1e6:.2f} MB each)"
    )
    return Corpus(root=root, files=files, size_bytes=size_bytes, description=description)


def reference_run(corpus: Corpus, out_root: Path, *, fsync: bool) -> Timing:
    """Plain pydicom read + write of every file into ``out_root`` (same relative paths), timed."""
    made: set[Path] = set()
    start = time.perf_counter()
    for path in corpus.files:
        target = out_root / path.relative_to(corpus.root)
        if target.parent not in made:
            target.parent.mkdir(parents=True, exist_ok=True)
            made.add(target.parent)
        ds = pydicom.dcmread(path)
        ds.save_as(target, enforce_file_format=True)
        if fsync:
            fd = os.open(target, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    seconds = time.perf_counter() - start
    label = "pydicom read+write, fsync" if fsync else "pydicom read+write, no fsync"
    return Timing(label, seconds, len(corpus.files), corpus.size_bytes)


def toml_string(value: str) -> str:
    """A TOML basic string (JSON string escaping is valid TOML)."""
    return json.dumps(value)


def write_config(workdir: Path) -> Path:
    """Copy ``config/bridge.toml`` with the database and every path pointing into ``workdir`` (absolute)."""
    var = workdir / "var"
    overrides: dict[tuple[str, str], str] = {
        ("database", "url"): f"sqlite:///{var / 'pacs-bridge.db'}",
        ("storage", "store_dir"): str(var / "store"),
        ("storage", "quarantine_dir"): str(var / "quarantine"),
        ("storage", "spool_dir"): str(var / "spool"),
        ("security", "secret_file"): str(var / "secret.key"),
    }
    section = ""
    replaced: set[tuple[str, str]] = set()
    lines = []
    for line in (REPO / "config" / "bridge.toml").read_text(encoding="utf-8").splitlines():
        header = re.match(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$", line)
        if header:
            section = header.group(1).strip()
        assignment = re.match(r'^(\s*([A-Za-z0-9_-]+)\s*=\s*)("(?:[^"\\]|\\.)*"|[^\s#]+)(.*)$', line)
        if assignment and (section, assignment.group(2)) in overrides:
            key = (section, assignment.group(2))
            line = assignment.group(1) + toml_string(overrides[key]) + assignment.group(4)  # keeps the comment
            replaced.add(key)
        lines.append(line)
    missing = set(overrides) - replaced
    if missing:
        raise SystemExit(f"config/bridge.toml has no {sorted('.'.join(k) for k in missing)}: update the benchmark")
    text = "\n".join(lines) + "\n"
    parsed = tomllib.loads(text)
    for (sec, name), value in overrides.items():
        assert parsed[sec][name] == value, (sec, name)
    if PROJECT not in parsed.get("projects", {}):
        raise SystemExit(f"config/bridge.toml has no [projects.{PROJECT}]: update the benchmark")
    path = workdir / "bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def run_cli(args: list[str], cwd: Path) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Run ``pacs-bridge ARGS`` in ``cwd``; wall time including process start-up."""
    start = time.perf_counter()
    proc = subprocess.run([cli_path(), *args], cwd=cwd, env=clean_env(), capture_output=True, text=True)
    return time.perf_counter() - start, proc


def fail(message: str, proc: subprocess.CompletedProcess[str] | None = None) -> NoReturn:
    """Print ``message`` and the subprocess output verbatim, then exit 1."""
    print(f"\nFAILED: {message}", file=sys.stderr)
    if proc is not None:
        print(f"--- exit status {proc.returncode}; stdout:\n{proc.stdout}", file=sys.stderr)
        print(f"--- stderr:\n{proc.stderr}", file=sys.stderr)
    raise SystemExit(1)


def pipeline_run(corpus: Corpus, workdir: Path, config: Path) -> tuple[Timing, dict[str, Any]]:
    """``pacs-bridge import CORPUS --project demo --json``, timed; fails unless every file was stored."""
    seconds, proc = run_cli(
        ["import", str(corpus.root), "--project", PROJECT, "--config", str(config), "--json"], workdir
    )
    try:
        summary: dict[str, Any] = json.loads(proc.stdout)
    except json.JSONDecodeError:
        fail("pacs-bridge import did not print a JSON summary", proc)
    if proc.returncode != 0 or summary.get("stored") != len(corpus.files):
        fail(f"pacs-bridge import stored {summary.get('stored')} of {len(corpus.files)} files", proc)
    return Timing("pacs-bridge import", seconds, len(corpus.files), corpus.size_bytes), summary


def startup_run(workdir: Path, config: Path, expected: int) -> float:
    """Wall time of one ``pacs-bridge status`` (start-up, config, database open); checks the index count."""
    seconds, proc = run_cli(["status", "--config", str(config), "--json"], workdir)
    if proc.returncode != 0:
        fail("pacs-bridge status failed", proc)
    counts = {p["name"]: p for p in json.loads(proc.stdout)["projects"]}
    instances = counts.get(PROJECT, {}).get("instances")
    if instances != expected:
        fail(f"pacs-bridge status reports {instances} instances in {PROJECT!r}, expected {expected}", proc)
    return seconds


def report(corpus: Corpus, ref_fsync: Timing, ref_plain: Timing, pipeline: Timing, startup: float) -> None:
    """Print the results table and the verdict against the target ratio."""
    print(f"\ncorpus: {corpus.description}")
    print(
        "reference: in-process pydicom.dcmread + save_as(enforce_file_format=True); "
        "'fsync' = os.fsync of each written file"
    )
    print("pipeline:  pacs-bridge import subprocess, wall time including process start-up\n")
    print(f"{'run':<34} {'seconds':>9} {'instances/s':>12} {'MB/s':>9}")
    for timing in (ref_fsync, ref_plain, pipeline):
        print(f"{timing.label:<34} {timing.seconds:>9.2f} {timing.rate:>12.1f} {timing.mb_per_s:>9.1f}")
    net = max(pipeline.seconds - startup, 1e-9)
    print(f"{'  of which start-up (status run)':<34} {startup:>9.2f}")
    print(
        f"{'  pipeline minus start-up':<34} {net:>9.2f} {pipeline.instances / net:>12.1f} "
        f"{pipeline.size_bytes / 1e6 / net:>9.1f}"
    )
    ratio = pipeline.seconds / ref_fsync.seconds
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"\nratio {ratio:.1f}x of plain read+write with fsync (target <= {TARGET_RATIO:g}x): {verdict} the target")
    print(f"ratio {pipeline.seconds / ref_plain.seconds:.1f}x of plain read+write without fsync")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=20, help="subjects (default 20)")
    parser.add_argument("--timepoints", type=int, default=2, help="studies per subject, distinct dates (default 2)")
    parser.add_argument("--slices", type=int, default=50, help="CT slices per series (default 50)")
    parser.add_argument("--size", type=int, default=512, help="rows = columns of each slice (default 512)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="parent of the temporary directory (default: the system temp dir, e.g. /tmp)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    for name in ("subjects", "timepoints", "slices", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate, measure reference and pipeline, report; remove the temporary directory unless --keep."""
    args = parse_args(argv)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bridge-bench-", dir=args.workdir)).resolve()
    try:
        print(f"working in {workdir}", flush=True)
        start = time.perf_counter()
        corpus = generate_corpus(workdir / "corpus", args.subjects, args.timepoints, args.slices, args.size)
        print(f"generated {len(corpus.files)} files in {time.perf_counter() - start:.1f} s (not measured)", flush=True)
        config = write_config(workdir)

        ref_plain = reference_run(corpus, workdir / "reference-nofsync", fsync=False)
        shutil.rmtree(workdir / "reference-nofsync")
        ref_fsync = reference_run(corpus, workdir / "reference-fsync", fsync=True)
        shutil.rmtree(workdir / "reference-fsync")
        print("reference runs done; running pacs-bridge import ...", flush=True)

        pipeline, summary = pipeline_run(corpus, workdir, config)
        startup = startup_run(workdir, config, len(corpus.files))
        if summary.get("duplicates") or summary.get("quarantined"):
            print(f"note: import summary {json.dumps(summary)}")
        report(corpus, ref_fsync, ref_plain, pipeline, startup)
    finally:
        clean_up(workdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
