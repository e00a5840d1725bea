"""DICOM SEG write-back: an approved annotation from `pacs-bridge serve` to Orthanc, and the SEG build beside
a bare highdicom build.

Generates with ``tests/factory.py`` one identified CT series (``--slices`` 300 of ``--size`` 512x512 uint16) and
loads it into Orthanc (Debian package, DICOMweb plugin, SQLite index, through the test harness
``tests/pull/orthanc.py``, ``TCP_NODELAY=1``) as the hospital's originals. A real ``python -m bridge serve``
(SQLite, embedded defaults, the shipped ``[deliveries]`` settings unless ``--poll-seconds`` says otherwise) is
started; ``pacs-bridge pull`` (DICOMweb) brings the series in, de-identified. A sparse ``--segments``-label
mask (10: each label a few slices of an ellipse, most slices empty) is drawn on the de-identified series' grid,
saved as NIfTI and imported with ``pacs-bridge annotations import``; two reviewers approve it through the
stages annotate -> review -> final with ``pacs-bridge annotations review``. The project's SEG destinations are
the Orthanc remote (re-identified, C-STORE; queued first) and the research store. None of that is timed. Then:

(a) write-back latency: from the final approval command returning to the SEG being stored in Orthanc (its
    ``/statistics`` instance count polled every 20 ms); it includes the outbox's poll wait (up to
    ``poll_seconds``), the SEG build from the store, re-identification through the vault and the C-STORE.
    Target: under 5 s. The research copy's arrival is printed too (no target).
(b) SEG build, in this process, ``serve`` stopped, on the same in-memory sources (the de-identified headers of
    the store, in index order) and the same masks: the bridge's ``bridge.seg.build.build_seg`` (checks, then
    highdicom, then the trial attributes) beside a bare ``highdicom.seg.Segmentation`` with the same options
    (BINARY, empty frames omitted, Explicit VR Little Endian, same segment descriptions), given the masks as
    the bridge holds them (a boolean stack) and as a label map (the NIfTI's array). One untimed warm-up build
    of each, then ``--repeat`` builds of each, in rotating order; medians. Target: the bridge within 1.5x of
    the bare build. The whole ``build_version_seg`` (headers and mask file read from the store, then the
    build) is printed beside.

Exits 1 if a step fails or the SEG that reaches Orthanc is not the re-identified one (printed verbatim).

    .venv/bin/python bench/seg.py [--slices 300] [--size 512] [--segments 10] [--repeat 3]
                                  [--poll-seconds S] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from common import REPO, clean_env, clean_up, config_head, load_factory, load_repo_module
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from bridge.settings import DeliverySettings

PROJECT = "bench"
REMOTE = "hospital"
BRIDGE_AE = "BRIDGE"
STAGES = ["annotate", "review", "final"]
TARGET_LATENCY_S = 5.0
TARGET_BUILD_RATIO = 1.5
ARRIVAL_DEADLINE_S = 300.0
SLICES_PER_SEGMENT = 6


def fail(message: str, details: str = "") -> NoReturn:
    """Print ``message`` and ``details`` verbatim, then exit 1."""
    print(f"\nFAILED: {message}", file=sys.stderr)
    if details:
        print(details, file=sys.stderr)
    raise SystemExit(1)


# --------------------------------------------------------------------------
# The hospital and the bridge (not timed)
# --------------------------------------------------------------------------


@dataclass
class Bridge:
    """A bridge configuration in ``folder`` and its ``serve`` process (tests/serve_process.py's BridgeProcess)."""

    folder: Path
    config: Path
    database: Path
    process: Any

    def cli(self, *args: str, timeout: float = 1800) -> str:
        """``python -m bridge ARGS --config ...``; its stdout (exit 1 with its output if it fails)."""
        command = [sys.executable, "-m", "bridge", *args, "--config", str(self.config)]
        done = subprocess.run(command, cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            fail(f"pacs-bridge {' '.join(args[:2])} exited with {done.returncode}", f"{done.stdout}\n{done.stderr}")
        return done.stdout

    def rows(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10) as db:
            found = db.execute(query, parameters).fetchall()
        db.close()
        return found

    def outbox(self) -> dict[str, tuple[str, int, str | None]]:
        """destination -> (state, attempts, last_error)."""
        rows = self.rows("SELECT destination, state, attempts, last_error FROM delivery")
        return {str(d): (str(s), int(a), e) for d, s, a, e in rows}

    def log_tail(self) -> str:
        return "\n".join(self.process.log.read_text(errors="replace").splitlines()[-40:])


def write_config(folder: Path, orthanc: Any, dicom_port: int, http_port: int, poll_seconds: float | None) -> Path:
    """SQLite, one project with three review stages, the Orthanc remote (DICOMweb to pull, its DICOM port to
    C-STORE the SEG to) re-identified first, then the research store."""
    poll = f"poll_seconds = {poll_seconds}" if poll_seconds is not None else ""
    config = folder / "bridge.toml"
    config.write_text(
        f"""{config_head(folder)}[http]
host = "127.0.0.1"
port = {http_port}
metrics_dir = {json.dumps(str(folder / "metrics"))}
[dimse]
host = "127.0.0.1"
port = {dicom_port}
ae_title = "{BRIDGE_AE}"
workers = 2
min_free_space_mb = 0
[deliveries]
{poll}
[projects.{PROJECT}]
subject_prefix = "BENCH"
[projects.{PROJECT}.review]
stages = {json.dumps(STAGES)}
[[projects.{PROJECT}.seg_destinations]]
remote = "{REMOTE}"
mode = "reidentified"
protocol = "c-store"
[[projects.{PROJECT}.seg_destinations]]
remote = "research"
[[remotes]]
name = "{REMOTE}"
dicomweb_url = "{orthanc.dicomweb_url}"
ae_title = "{orthanc.aet}"
host = "127.0.0.1"
port = {orthanc.dicom_port}
timeout = 60
""",
        encoding="utf-8",
    )
    return config


def originals(folder: Path, slices: int, size: int) -> tuple[list[Path], Dataset]:
    """The identified series as files (and its first slice, whose identifiers the SEG must carry back)."""
    factory = load_factory()
    datasets = factory.make_series(
        factory.make_patient(7),
        "CT",
        slices,
        rows=size,
        columns=size,
        study_date="20230601",
        accession_number="BENCHSEG0001",
        series_description="CT CHEST",
    )
    return factory.write_files(datasets, folder), datasets[0]


@dataclass(frozen=True)
class Research:
    series_uid: str
    sources: list[Dataset]  # the de-identified headers, in the grid's index order
    labels: np.ndarray  # (slice, row, column), 0 = background, i = segment i
    nifti: Path


def draw(bridge: Bridge, segments: int) -> Research:
    """The de-identified series (`cohort`), its headers from the store, and a sparse label mask on its grid."""
    from bridge.annotations.geometry import series_geometry

    answer = json.loads(bridge.cli("cohort", "--project", PROJECT, "--level", "series", "--format", "json"))
    (row,) = [row for row in answer["rows"] if row["modality"] == "CT"]
    paths = bridge.rows(
        "SELECT i.path FROM instance i JOIN series s ON i.series_id = s.id WHERE s.series_uid = ?",
        row["series_instance_uid"],
    )
    headers = [pydicom.dcmread(bridge.folder / "store" / p, stop_before_pixels=True) for (p,) in paths]
    geometry = series_geometry(headers)
    by_uid: dict[str, Dataset] = {str(ds.SOPInstanceUID): ds for ds in headers}
    sources = [by_uid[uid] for uid in geometry.instance_uids]
    columns, rows, slices = geometry.grid.size
    labels = np.zeros((slices, rows, columns), dtype=np.uint8)
    yy, xx = np.mgrid[0:rows, 0:columns]
    rng = np.random.default_rng(10)
    for number in range(1, segments + 1):
        first = (number - 1) * slices // segments
        centre_y, centre_x = rng.uniform(0.25, 0.75) * rows, rng.uniform(0.25, 0.75) * columns
        for offset in range(min(SLICES_PER_SEGMENT, slices - first)):
            radius_y, radius_x = (0.04 + 0.01 * offset) * rows, (0.05 + 0.008 * offset) * columns
            inside = ((yy - centre_y) / radius_y) ** 2 + ((xx - centre_x) / radius_x) ** 2 <= 1
            labels[first + offset][inside & (labels[first + offset] == 0)] = number
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(geometry.grid.spacing)
    image.SetOrigin(geometry.grid.origin)
    image.SetDirection(geometry.grid.direction)
    nifti = bridge.folder / "mask.nii.gz"
    sitk.WriteImage(image, str(nifti))
    return Research(row["series_instance_uid"], sources, labels, nifti)


# --------------------------------------------------------------------------
# (a) approval to Orthanc
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Latency:
    command_s: float  # the final approval command, start-up included
    to_orthanc_s: float  # from its return to the SEG counted by Orthanc
    to_research_s: float  # from its return to the research delivery marked delivered


def approve_and_wait(bridge: Bridge, orthanc: Any, annotation: int, expected: int) -> Latency:
    """The final approval, then Orthanc's instance count polled until the SEG is in; then the research copy."""
    review = ["annotations", "review", str(annotation), "--approve", "--json"]
    moved = json.loads(bridge.cli(*review, "--reviewer", "rita"))
    if moved["stage"] != "final":
        fail("the first approval did not move the annotation to the final stage", json.dumps(moved, indent=2))
    start = time.perf_counter()
    final = json.loads(bridge.cli(*review, "--reviewer", "rob"))
    returned = time.perf_counter()
    if final["state"] != "approved":
        fail("the final approval did not approve", json.dumps(final, indent=2))
    deadline = returned + ARRIVAL_DEADLINE_S
    while orthanc.count_instances() < expected:
        if time.perf_counter() > deadline:
            details = f"{bridge.outbox()}\n{bridge.log_tail()}"
            fail(f"no SEG in Orthanc {ARRIVAL_DEADLINE_S:.0f} s after the approval", details)
        time.sleep(0.02)
    arrived = time.perf_counter()
    while bridge.outbox().get("research", ("",))[0] != "delivered":
        if time.perf_counter() > deadline:
            fail("the research copy was not delivered", f"{bridge.outbox()}\n{bridge.log_tail()}")
        time.sleep(0.02)
    return Latency(returned - start, arrived - returned, time.perf_counter() - returned)


def check_arrival(bridge: Bridge, orthanc: Any, original: Dataset, frames: int, folder: Path) -> None:
    """The SEG Orthanc holds is the re-identified one: original patient and study, one instance, every frame."""
    segs = [s for s in orthanc.rest("/series?expand") if s["MainDicomTags"].get("Modality") == "SEG"]
    if len(segs) != 1 or len(segs[0]["Instances"]) != 1:
        fail(f"Orthanc holds {len(segs)} SEG series", json.dumps(segs, indent=2)[:4000])
    answer = orthanc.request("GET", f"/instances/{segs[0]['Instances'][0]}/file")
    path = folder / "seg-from-orthanc.dcm"
    path.write_bytes(answer.body)
    seg = pydicom.dcmread(path, stop_before_pixels=True)
    got = (seg.PatientID, seg.StudyInstanceUID, seg.AccessionNumber, int(seg.NumberOfFrames))
    wanted = (original.PatientID, original.StudyInstanceUID, original.AccessionNumber, frames)
    if got != wanted:
        fail("the SEG in Orthanc is not the re-identified one", f"got {got}\nwanted {wanted}")
    states = {name: state for name, (state, _, _) in bridge.outbox().items()}
    if states != {REMOTE: "delivered", "research": "delivered"}:
        fail("the deliveries did not all succeed", str(bridge.outbox()))


# --------------------------------------------------------------------------
# (b) the SEG build
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Builds:
    bridge: list[float]
    bare_stack: list[float]
    bare_labelmap: list[float]
    version: list[float]
    frames: int


def time_builds(config: Path, annotation: int, research: Research, repeat: int) -> Builds:
    """Each build ``repeat`` times (garbage collected first), the order rotating each round."""
    from bridge.annotations.segments import code_of
    from bridge.delivery.segs import build_version_seg
    from bridge.dicom.implementation import IMPLEMENTATION_VERSION
    from bridge.seg.build import MANUFACTURER, SegmentSpec, SegMeta, build_seg
    from bridge.settings import load_settings
    from bridge.wiring import Runtime

    runtime = Runtime.open(load_settings(config))
    service = runtime.annotations()
    key = runtime.projects[PROJECT].key
    with runtime.database.reading() as session:
        masks, segments = service.masks_of(session, annotation, 1)
    if not np.array_equal(masks.argmax(axis=0) + masks.any(axis=0), research.labels):
        fail("the stored mask is not the mask drawn")
    specs = [
        SegmentSpec(s.label, masks[i], code_of(s.category), code_of(s.type), s.colour) for i, s in enumerate(segments)
    ]
    meta = SegMeta(
        series_instance_uid=hd.UID(),
        sop_instance_uid=hd.UID(),
        series_number=9001,
        series_description="bench",
        annotator="alice",
        content_label="BENCH",
        timepoint_label=None,
        software_version=IMPLEMENTATION_VERSION,
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec.label,
            segmented_property_category=spec.category,
            segmented_property_type=spec.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            display_color=hd.color.CIELabColor.from_rgb(*spec.colour),
        )
        for number, spec in enumerate(specs, start=1)
    ]
    stack = np.ascontiguousarray(masks.transpose(1, 2, 3, 0))  # (slice, row, column, segment), not timed

    def bare(pixels: np.ndarray) -> Callable[[], Dataset]:
        return lambda: hd.seg.Segmentation(
            source_images=research.sources,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=9001,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MANUFACTURER,
            software_versions=IMPLEMENTATION_VERSION,
            device_serial_number="0",
            transfer_syntax_uid=ExplicitVRLittleEndian,
            omit_empty_frames=True,
        )

    kinds: dict[str, Callable[[], Dataset]] = {
        "bridge": lambda: build_seg(research.sources, specs, meta),
        "bare_stack": bare(stack),
        "bare_labelmap": bare(research.labels),
        "version": lambda: build_version_seg(service, key=key, annotation_id=annotation, version=1).dataset,
    }
    seconds: dict[str, list[float]] = {name: [] for name in kinds}
    frames: dict[str, int] = {}
    names = list(kinds)
    try:
        with warnings.catch_warnings():  # the de-identified patient's name is one component, on purpose
            warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
            for name in names:  # warm-up, not timed: first calls load code tables, caches, lazy imports
                frames[name] = int(kinds[name]().NumberOfFrames)
            for round_number in range(repeat):
                shift = round_number % len(names)
                for name in names[shift:] + names[:shift]:
                    gc.collect()
                    start = time.perf_counter()
                    seg = kinds[name]()
                    seconds[name].append(time.perf_counter() - start)
                    del seg
    finally:
        runtime.close()
    if len(set(frames.values())) != 1:
        fail(f"the builds made different numbers of frames: {frames}")
    return Builds(
        seconds["bridge"], seconds["bare_stack"], seconds["bare_labelmap"], seconds["version"], frames["bridge"]
    )


# --------------------------------------------------------------------------
# Report and run
# --------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "meets" if ok else "MISSES"


def report(args: argparse.Namespace, frames: int, latency: Latency, builds: Builds, poll: float) -> None:
    print(
        f"\n{args.slices} slices of {args.size}x{args.size}, {args.segments} segments of {SLICES_PER_SEGMENT} slices "
        f"each: {frames} frames of {args.slices * args.segments} in the SEG (empty frames omitted)"
    )
    print(f"\n(a) write-back latency, deliveries.poll_seconds = {poll:g} (the outbox's wait is part of it)")
    print(f"  final approval command (CLI start-up included)    {latency.command_s:7.2f} s")
    print(
        f"  approval returned -> SEG stored in Orthanc         {latency.to_orthanc_s:7.2f} s   "
        f"target < {TARGET_LATENCY_S:g} s: {verdict(latency.to_orthanc_s < TARGET_LATENCY_S)}"
    )
    print(f"  approval returned -> research copy delivered       {latency.to_research_s:7.2f} s   (after Orthanc's)")
    bridge, stack, labelmap = (statistics.median(s) for s in (builds.bridge, builds.bare_stack, builds.bare_labelmap))
    print(f"\n(b) SEG build in this process, same sources and masks, median of {args.repeat} (min in brackets)")
    print(f"  {'build':56} {'seconds':>16} {'bridge/this':>12}")
    rows = [
        ("bridge.seg.build.build_seg", builds.bridge, None),
        ("bare highdicom Segmentation, boolean stack (as held)", builds.bare_stack, bridge / stack),
        ("bare highdicom Segmentation, label map (the NIfTI's)", builds.bare_labelmap, bridge / labelmap),
        ("build_version_seg (store headers + mask file + build)", builds.version, None),
    ]
    for label, samples, ratio in rows:
        shown = f"{ratio:11.2f}x" if ratio is not None else ""
        print(f"  {label:56} {statistics.median(samples):7.3f} ({min(samples):6.3f}) {shown:>12}")
    worst = bridge / min(stack, labelmap)
    print(
        f"  bridge / fastest bare build {worst:.2f}x; target <= {TARGET_BUILD_RATIO:g}x: "
        f"{verdict(worst <= TARGET_BUILD_RATIO)} the target"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=300, help="CT slices of the series (default 300)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns of a slice (default 512)")
    parser.add_argument("--segments", type=int, default=10, help="labels of the mask (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="builds of each kind in (b) (default 3)")
    parser.add_argument(
        "--poll-seconds", type=float, default=None, help="deliveries.poll_seconds (default: the shipped default)"
    )
    parser.add_argument("--workdir", type=Path, default=None, help="parent of the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.slices < 2 or args.size < 16 or not 1 <= args.segments <= 255 or args.repeat < 1:
        parser.error("--slices >= 2, --size >= 16, 1 <= --segments <= 255, --repeat >= 1")
    if args.segments > args.slices:
        parser.error("--segments <= --slices (each segment has slices of its own)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness = load_repo_module("tests/pull/orthanc.py", "pacs_bridge_test_orthanc")
    serve_process = load_repo_module("tests/serve_process.py", "pacs_bridge_test_serve_process")
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="pacs-bridge-seg-", dir=args.workdir)).resolve()
    poll = args.poll_seconds if args.poll_seconds is not None else DeliverySettings().poll_seconds
    try:
        print(f"working in {workdir}; {os.cpu_count()} cores", flush=True)
        start = time.perf_counter()
        files, original = originals(workdir / "originals", args.slices, args.size)
        print(f"generated {len(files)} CT slices in {time.perf_counter() - start:.1f} s (not measured)", flush=True)
        folder = workdir / "bridge"
        folder.mkdir()
        dicom_port, http_port = serve_process.free_port(), serve_process.free_port()
        orthanc = harness.OrthancServer(folder=workdir / "orthanc", name="BENCH-SEG", aet="ORTHANC")
        orthanc.add_modality("bridge", BRIDGE_AE, dicom_port)
        orthanc.start()  # its ports are picked here
        config = write_config(folder, orthanc, dicom_port, http_port, args.poll_seconds)
        process = serve_process.BridgeProcess(config=config, port=dicom_port, log=folder / "serve.log")
        bridge = Bridge(folder, config, folder / "bridge.db", process)
        try:
            start = time.perf_counter()
            orthanc.upload(files)
            print(f"Orthanc holds the originals ({time.perf_counter() - start:.1f} s, not measured)", flush=True)
            bridge.cli("users", "create", "alice", "--role", "annotator", "--project", PROJECT)
            for reviewer in ("rita", "rob"):
                bridge.cli("users", "create", reviewer, "--role", "reviewer", "--project", PROJECT)
            try:
                process.start(timeout=120)
            except (RuntimeError, TimeoutError) as error:
                fail("pacs-bridge serve did not start", str(error))
            start = time.perf_counter()
            pulled = json.loads(
                bridge.cli("pull", REMOTE, "--project", PROJECT, "--patient-id", original.PatientID, "--json")
            )
            if pulled["fetched"] != args.slices or pulled["failed"]:
                fail("the pull did not bring the whole series", json.dumps(pulled, indent=2))
            print(f"pulled and de-identified in {time.perf_counter() - start:.1f} s (not measured)", flush=True)
            research = draw(bridge, args.segments)
            labels = ",".join(f"Lesion-{n}" for n in range(1, args.segments + 1))
            start = time.perf_counter()
            imported = bridge.cli(
                "annotations", "import", research.series_uid, str(research.nifti), "--label", labels,
                "--annotator", "alice", "--project", PROJECT, "--json",
            )  # fmt: skip
            annotation = int(json.loads(imported)["id"])
            print(f"mask imported in {time.perf_counter() - start:.1f} s (not measured)", flush=True)
            frames = sum(int((research.labels == n).any(axis=(1, 2)).sum()) for n in range(1, args.segments + 1))
            latency = approve_and_wait(bridge, orthanc, annotation, args.slices + 1)
            check_arrival(bridge, orthanc, original, frames, workdir)
        finally:
            if process.process is not None and process.process.poll() is None:
                try:
                    process.stop(timeout=120)
                except subprocess.TimeoutExpired:
                    process.kill()
            orthanc.stop()
        builds = time_builds(config, annotation, research, args.repeat)
        if builds.frames != frames:
            fail(f"the builds made {builds.frames} frames, the mask has {frames} non-empty (segment, slice) pairs")
        report(args, frames, latency, builds, poll)
    finally:
        clean_up(workdir, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
