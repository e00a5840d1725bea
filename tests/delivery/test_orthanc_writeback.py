"""Write-back to a real PACS: an approved annotation leaves a real `serve` as a DICOM SEG, re-identified through
the vault, and lands in a real Orthanc under the original patient, in the original study, referencing the
original images; and a research copy lands in the bridge's own index, de-identified.

Orthanc (Debian package, DICOMweb plugin) holds the identified originals; the bridge pulls them over DICOMweb
and de-identifies them; everything a user would do runs through `pacs-bridge` commands (users, pull, cohort,
annotations import/review, deliveries), and the outbox is worked by the thread inside `serve`. Then: the
outage-and-crash path (Orthanc down at approval, `serve` SIGKILLed while the delivery waits to be retried:
the SEG still arrives, once), and the fail-closed path (a UID the vault cannot map back: nothing is sent).
"""

from __future__ import annotations

import json
import random
import sqlite3
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset

from bridge.annotations.geometry import series_geometry
from tests import factory
from tests.annotations.drawn import nifti_on_grid
from tests.conftest import dciodvfy_errors
from tests.pull.conftest import bridge, write_config
from tests.pull.orthanc import OrthancServer
from tests.seg.validators import dcmqi_volume
from tests.serve_process import BridgeProcess, free_port

pytestmark = pytest.mark.integration

T = TypeVar("T")
PROJECT = "lung"
REMOTE = "hospital"  # tests/pull/conftest.write_config's name of the Orthanc remote
BRIDGE_AE = "BRIDGE"
STAGES = ["annotate", "review", "final"]
SLICES, ROWS, COLUMNS = 8, 32, 24
STUDY_DATE, ACCESSION = "20230314", "ACC20230314X"
DEADLINE_S = 30.0


@dataclass
class Site:
    """One hospital (Orthanc with the originals) and one bridge (its configuration, database, `serve`)."""

    tmp: Path
    orthanc: OrthancServer
    config: Path
    database: Path
    serve: BridgeProcess
    originals: list[Dataset]  # the identified CT series as Orthanc holds it, in slice (z) order
    restarts: int = 0
    starting: Future[BridgeProcess] | None = None
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(max_workers=1))

    def cli(self, *args: str, status: int = 0) -> str:
        """`pacs-bridge ARGS --config ...`; its stdout, after checking its exit status."""
        done = bridge(*args, config=self.config, timeout=120)
        assert done.returncode == status, f"{args}: exit {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout if status == 0 else done.stderr

    def create_users(self) -> None:
        """An annotator and two reviewers of the project, as an administrator creates them."""
        self.cli("users", "create", "alice", "--role", "annotator", "--project", PROJECT)
        for reviewer in ("rita", "rob"):
            self.cli("users", "create", reviewer, "--role", "reviewer", "--project", PROJECT)

    def start_serve(self, *, wait: bool = True) -> None:
        """`serve` (again), with a fresh log file so that its "listening on" is this run's; without `wait`, it
        starts while the test goes on (`serving()` waits for it)."""
        self.serving()
        self.restarts += 1
        self.serve = BridgeProcess(
            config=self.config, port=self.serve.port, log=self.tmp / f"serve-{self.restarts}.log"
        )
        self.starting = self.pool.submit(self.serve.start)
        if wait:
            self.serving()

    def serving(self) -> None:
        """Wait until the `serve` being started listens (its start-up error, if it failed)."""
        if self.starting is not None:
            starting, self.starting = self.starting, None
            starting.result()

    def rows(self, query: str, *parameters: Any) -> list[tuple[Any, ...]]:
        """A read of the bridge's SQLite database (while `serve` writes to it)."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10) as db:
            found = db.execute(query, parameters).fetchall()
        db.close()
        return found

    def deliveries(self) -> dict[str, dict[str, Any]]:
        """`pacs-bridge deliveries --format json`, by destination."""
        return {row["destination"]: row for row in json.loads(self.cli("deliveries", "--format", "json"))}

    def delivery(self, destination: str) -> tuple[str, int, str | None]:
        """(state, attempts, last_error) of the delivery to `destination`, read from the outbox table."""
        found = self.rows("SELECT state, attempts, last_error FROM delivery WHERE destination = ?", destination)
        assert len(found) == 1, found
        state, attempts, error = found[0]
        return str(state), int(attempts), error

    def segs_in_orthanc(self) -> list[dict[str, Any]]:
        return [s for s in self.orthanc.rest("/series?expand") if s["MainDicomTags"].get("Modality") == "SEG"]

    def assert_logs_hold_no_identified_values(self) -> None:
        """The re-identification path handles the hospital's identifiers: none may reach `serve`'s logs."""
        secrets = {str(ds.SOPInstanceUID) for ds in self.originals}
        first = self.originals[0]
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "PatientID", "PatientName"):
            secrets.add(str(first[keyword].value))
        for log in sorted(self.tmp.glob("serve-*.log")):
            text = log.read_text(errors="replace")
            assert [secret for secret in secrets if secret in text] == [], f"identified values in {log.name}"


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = DEADLINE_S, site: Site | None = None) -> T:
    """`probe()` until it returns something (not None), polling; fails naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            state = ""
            if site is not None:
                outbox = site.rows("SELECT destination, state, attempts, last_error FROM delivery")
                state = f"outbox: {outbox}\nserve's log:\n{site.serve.log.read_text(errors='replace')[-4000:]}"
            pytest.fail(f"no {what} after {timeout:.0f} s\n{state}")
        time.sleep(0.2)


@pytest.fixture
def site(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Site]:
    """Orthanc holding one identified CT series; the bridge configured, the series pulled over DICOMweb and
    de-identified; `serve` configured but not started, no users yet (each test decides when). The SEG goes
back by C-STORE, or by STOW-RS when the test asks (indirect parameter)."""
    protocol = getattr(request, "param", "c-store")
    orthanc = OrthancServer(folder=tmp_path / "orthanc", name="WRITEBACK-PACS")  # TCP_NODELAY=1: the harness's
    patient = factory.make_patient(4)
    originals = factory.make_series(
        patient,
        "CT",
        SLICES,
        rows=ROWS,
        columns=COLUMNS,
        study_date=STUDY_DATE,
        accession_number=ACCESSION,
        series_description="CT CHEST",
    )
    files = factory.write_files(originals, tmp_path / "originals")
    random.Random(4).shuffle(files)  # Orthanc receives the slices out of order
    dimse_port = free_port()
    database = tmp_path / "bridge.db"
    orthanc.add_modality("bridge", BRIDGE_AE, dimse_port)  # the bridge's AE, known to Orthanc as a sender
    orthanc.start()
    serve = BridgeProcess(config=tmp_path / "bridge.toml", port=dimse_port, log=tmp_path / "serve-0.log")
    current: Site | None = None
    try:
        orthanc.upload(files)
        config = write_config(tmp_path, f"sqlite:///{database}", orthanc, extra=bridge_settings(dimse_port, protocol))
        current = Site(tmp_path, orthanc, config, database, serve, sorted(originals, key=z_of))
        pulled = json.loads(
            current.cli("pull", REMOTE, "--project", PROJECT, "--patient-id", patient.patient_id, "--json")
        )
        assert (pulled["fetched"], pulled["failed"]) == (SLICES, []), pulled
        yield current
    finally:
        if current is not None:
            current.pool.shutdown(wait=True)  # a start under way has ended, one way or the other
        running = current.serve if current is not None else serve
        if running.process is not None and running.process.poll() is None:
            try:
                running.stop(timeout=30)
            except Exception:
                running.kill()
        orthanc.kill()  # its storage is thrown away: no need for its 2-3 s clean stop


def bridge_settings(dimse_port: int, protocol: str = "c-store") -> str:
    """What the bridge adds to the pull tests' configuration: its DICOM listener (its AE title is the calling
    AE of the C-STORE to Orthanc), a quick outbox, the project's stages, label, trial and SEG destinations."""
    return f"""
[dimse]
host = "127.0.0.1"
port = {dimse_port}
ae_title = "{BRIDGE_AE}"
workers = 1
listeners = 1
min_free_space_mb = 0

[deliveries]
poll_seconds = 0.2
first_retry_seconds = 0.5
max_retry_seconds = 2
lease_seconds = 10

[projects.{PROJECT}.trial]
sponsor_name = "Onco Group"
protocol_id = "LUNG-1"
protocol_name = "Lung response study"
site_id = "S01"
site_name = "Site One"
coordinating_center = "Central Imaging Lab"

[projects.{PROJECT}.review]
stages = {json.dumps(STAGES)}

[[projects.{PROJECT}.labels]]
label = "Tumor"
colour = [255, 0, 0]

[[projects.{PROJECT}.seg_destinations]]
remote = "research"

[[projects.{PROJECT}.seg_destinations]]
remote = "{REMOTE}"
mode = "reidentified"
protocol = "{protocol}"
"""


def z_of(ds: Dataset) -> float:
    return float(ds.ImagePositionPatient[2])


# --------------------------------------------------------------------------
# The research side: the de-identified series, a mask on its grid, the review
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Research:
    subject: str
    study_uid: str
    series_uid: str
    sources: list[Dataset]  # the de-identified files of the store, in the grid's index order


def research_series(site: Site) -> Research:
    """The de-identified series, found as a data manager finds it (`cohort`), and its files in the store."""
    answer = json.loads(site.cli("cohort", "--project", PROJECT, "--level", "series", "--format", "json"))
    (row,) = [row for row in answer["rows"] if row["modality"] == "CT"]
    assert row["instances"] == SLICES
    paths = site.rows(
        "SELECT i.path FROM instance i JOIN series s ON i.series_id = s.id WHERE s.series_uid = ?",
        row["series_instance_uid"],
    )
    datasets = [pydicom.dcmread(site.tmp / "store" / path) for (path,) in paths]
    by_uid: dict[str, Dataset] = {str(ds.SOPInstanceUID): ds for ds in datasets}
    ordered = [by_uid[uid] for uid in series_geometry(datasets).instance_uids]
    return Research(row["subject"], row["study_instance_uid"], row["series_instance_uid"], ordered)


def drawn_mask() -> np.ndarray:
    """A label volume (slice, row, column) that no flip or transposition maps onto itself: three slices
    labelled, the one between two of them left empty, the others empty."""
    labels = np.zeros((SLICES, ROWS, COLUMNS), dtype=np.uint8)
    labels[2, 4:11, 3:9] = 1
    labels[3, 5:15, 6:16] = 1
    labels[5, 20:29, 2:6] = 1
    return labels


def write_nifti(research: Research, labels: np.ndarray, path: Path) -> Path:
    """The mask as an annotation tool saves it: NIfTI on the series' grid (from the stored files' geometry)."""
    grid = series_geometry(research.sources).grid
    assert grid.size == (COLUMNS, ROWS, SLICES)
    return nifti_on_grid(grid, labels, path)


def import_mask(site: Site, research: Research, labels: np.ndarray) -> int:
    mask = write_nifti(research, labels, site.tmp / "tumor.nii.gz")
    arguments = ["import", research.series_uid, str(mask), "--label", "Tumor", "--annotator", "alice"]
    view = json.loads(site.cli("annotations", *arguments, "--project", PROJECT, "--json"))
    assert (view["state"], view["stage"], view["labels"]) == ("in-review", "review", ["Tumor"])
    return int(view["id"])


def approve(site: Site, annotation: int, reviewer: str) -> dict[str, Any]:
    arguments = ["review", str(annotation), "--approve", "--reviewer", reviewer, "--comment", "ok"]
    return dict(json.loads(site.cli("annotations", *arguments, "--json")))


# --------------------------------------------------------------------------
# What Orthanc received
# --------------------------------------------------------------------------


def orthanc_seg(site: Site) -> tuple[dict[str, Any], Path]:
    """The one SEG series Orthanc holds (waited for) and its one instance, downloaded as Orthanc stores it."""
    (series,) = wait_for("SEG in Orthanc", lambda: site.segs_in_orthanc() or None, site=site)
    assert len(series["Instances"]) == 1, series
    answer = site.orthanc.request("GET", f"/instances/{series['Instances'][0]}/file")
    assert answer.status == 200
    path = site.tmp / "from-orthanc.dcm"
    path.write_bytes(answer.body)
    return series, path


def text_values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """(keyword, value as text) of every element but the bulk data, at every depth, file meta included."""
    meta = getattr(ds, "file_meta", None)
    for element in [*(meta or []), *ds]:
        if element.VR == "SQ":
            for item in element.value:
                yield from text_values(item)
        elif element.VR not in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
            yield element.keyword, str(element.value)


def frame_sources(seg: Dataset) -> dict[str, list[float]]:
    """Source SOP Instance UID (Derivation Image > Source Image) -> position of the frame that names it."""
    return {
        str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID): [
            float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient
        ]
        for frame in seg.PerFrameFunctionalGroupsSequence
    }


def on_mask_grid(image: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """dcmqi's volume (it spans the frames it holds) laid on the mask's grid, after checking that it has the
    grid's directions and spacings and that each of its slices lies on a slice of the grid."""
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-3)
    assert image.GetSize()[:2] == reference.GetSize()[:2]
    array = sitk.GetArrayFromImage(image).astype(bool)
    placed = np.zeros(sitk.GetArrayFromImage(reference).shape, dtype=bool)
    for k in range(image.GetSize()[2]):
        index = reference.TransformPhysicalPointToContinuousIndex(image.TransformIndexToPhysicalPoint((0, 0, k)))
        assert np.allclose(index, np.round(index), atol=0.01) and np.allclose(index[:2], 0, atol=0.01), index
        placed[int(round(index[2]))] = array[k]
    return placed


# --------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------


@pytest.mark.parametrize("site", ["c-store", "stow-rs"], indirect=True)
def test_an_approved_annotation_lands_in_the_original_study_of_the_pacs(site: Site) -> None:
    site.start_serve(wait=False)
    site.create_users()
    research = research_series(site)
    labels = drawn_mask()
    annotation = import_mask(site, research, labels)

    refused = site.cli("annotations", "review", str(annotation), "--approve", "--reviewer", "alice", status=2)
    assert "error: alice (annotator) has no review rights: annotators cannot approve or reject" in refused
    moved = approve(site, annotation, "rita")
    assert (moved["stage"], moved["state"], moved["deliveries"]) == ("final", "in-review", [])
    site.serving()
    final = approve(site, annotation, "rob")
    assert final["state"] == "approved"
    assert [(d["stage"], d["reviewer"]) for d in final["decisions"]] == [("review", "rita"), ("final", "rob")]
    assert {d["destination"]: d["mode"] for d in final["deliveries"]} == {
        "research": "deidentified",
        REMOTE: "reidentified",
    }

    series, path = orthanc_seg(site)
    wait_for(
        "two delivered deliveries",
        lambda: True if {site.delivery(d)[0] for d in ("research", REMOTE)} == {"delivered"} else None,
        site=site,
    )
    listed = site.deliveries()
    assert {name: (row["state"], row["last_error"]) for name, row in listed.items()} == {
        "research": ("delivered", None),
        REMOTE: ("delivered", None),
    }

    # Filed under the original patient, in the original study (Orthanc's own view of what it holds)
    first = site.originals[0]
    study = site.orthanc.rest(f"/studies/{series['ParentStudy']}")
    patient = site.orthanc.rest(f"/patients/{study['ParentPatient']}")
    assert len(site.orthanc.rest("/patients")) == 1 and len(site.orthanc.rest("/studies")) == 1
    assert patient["MainDicomTags"]["PatientID"] == first.PatientID
    assert patient["MainDicomTags"]["PatientName"] == str(first.PatientName)
    assert study["MainDicomTags"]["StudyInstanceUID"] == first.StudyInstanceUID
    assert (study["MainDicomTags"]["AccessionNumber"], study["MainDicomTags"]["StudyDate"]) == (ACCESSION, STUDY_DATE)
    assert site.orthanc.count_instances() == SLICES + 1  # the originals and exactly one SEG

    # The file itself: the hospital's identifiers and UIDs, none of the research side's
    seg = pydicom.dcmread(path)
    assert (seg.PatientID, str(seg.PatientName), seg.PatientBirthDate) == (
        first.PatientID,
        str(first.PatientName),
        first.PatientBirthDate,
    )
    assert research.sources[0].StudyDate != STUDY_DATE  # shifted on the research side: un-shifted on the way back
    assert (seg.StudyInstanceUID, seg.AccessionNumber, seg.StudyDate) == (first.StudyInstanceUID, ACCESSION, STUDY_DATE)
    assert seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    original_uids = [str(ds.SOPInstanceUID) for ds in site.originals]
    (referenced,) = seg.ReferencedSeriesSequence
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {str(item.ReferencedSOPInstanceUID) for item in referenced.ReferencedInstanceSequence} == set(original_uids)
    labelled = {  # one frame per labelled slice, naming the original image that lies where the frame lies
        str(ds.SOPInstanceUID): [float(v) for v in ds.ImagePositionPatient]
        for z, ds in enumerate(site.originals)
        if labels[z].any()
    }
    assert int(seg.NumberOfFrames) == len(labelled) and frame_sources(seg) == labelled
    research_seg_uid = listed["research"]["seg_series_uid"]
    (research_seg,) = site.rows(
        "SELECT s.series_uid, t.study_uid FROM series s JOIN timepoint t ON s.timepoint_id = t.id "
        "WHERE s.modality = 'SEG'"
    )
    assert research_seg == (research_seg_uid, research.study_uid)  # the research copy, in the de-identified study
    (stored,) = site.rows(
        "SELECT i.path FROM instance i JOIN series s ON i.series_id = s.id WHERE s.series_uid = ?", research_seg_uid
    )
    research_copy = pydicom.dcmread(site.tmp / "store" / stored[0])
    assert (research_copy.PatientID, research_copy.ReferencedSeriesSequence[0].SeriesInstanceUID) == (
        research.subject,
        research.series_uid,
    )  # the research side's names: what must not reach the hospital
    pseudonyms = {research.subject, research.study_uid, research.series_uid, research_seg_uid}
    pseudonyms |= {str(ds.SOPInstanceUID) for ds in research.sources} | {str(research.sources[0].FrameOfReferenceUID)}
    values = list(text_values(seg))
    leaked = [(keyword, value) for keyword, value in values if any(p in value for p in pseudonyms)]
    assert leaked == [], "research-side pseudonyms in the re-identified SEG"
    raw = path.read_bytes()
    assert [p for p in pseudonyms if p.encode() in raw] == []
    markers = [k for k, _ in values if k.startswith(("ClinicalTrial", "Deidentification", "PatientIdentityRemoved"))]
    assert markers == [] and "LongitudinalTemporalInformationModified" not in seg

    # Valid, and read back voxel-identical by highdicom and by dcmqi
    assert dciodvfy_errors(path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # highdicom's notes on the original's person name
        read = hd.seg.Segmentation.from_dataset(seg)
    pixels = read.get_pixels_by_source_instance(
        original_uids, segment_numbers=[1], assert_missing_frames_are_empty=True
    )
    np.testing.assert_array_equal(pixels[..., 0].astype(bool), labels.astype(bool))
    reference = sitk.ReadImage(str(site.tmp / "tumor.nii.gz"))
    volumes = dict(dcmqi_volume(path, site.tmp / "dcmqi"))
    assert set(volumes) == {"Tumor"}
    np.testing.assert_array_equal(on_mask_grid(volumes["Tumor"], reference), labels.astype(bool))
    site.assert_logs_hold_no_identified_values()


def test_an_outage_and_a_crash_delay_the_seg_but_it_arrives_once(site: Site) -> None:
    site.start_serve(wait=False)
    site.create_users()
    research = research_series(site)
    annotation = import_mask(site, research, drawn_mask())
    approve(site, annotation, "rita")
    site.orthanc.stop()
    site.serving()
    assert approve(site, annotation, "rob")["state"] == "approved"

    def retrying() -> tuple[int, str] | None:
        state, attempts, error = site.delivery(REMOTE)
        return (attempts, error) if state == "pending" and attempts >= 2 and error else None

    attempts, error = wait_for("retried delivery to the stopped Orthanc", retrying, site=site)
    assert f"remote {REMOTE}" in error and "no association" in error
    listed = site.deliveries()
    assert (listed[REMOTE]["state"], listed["research"]["state"]) in (
        ("pending", "delivered"),
        ("sending", "delivered"),
    )
    assert f"remote {REMOTE}" in (listed[REMOTE]["last_error"] or "")

    site.serve.kill()  # mid-backoff (or mid-attempt: the lease then runs out and another worker takes it)
    site.orthanc.start()  # same ports, same storage
    assert site.segs_in_orthanc() == []
    site.start_serve()

    orthanc_seg(site)
    wait_for("delivered", lambda: True if site.delivery(REMOTE)[0] == "delivered" else None, site=site)
    listed = site.deliveries()
    assert listed[REMOTE]["state"] == "delivered" and listed[REMOTE]["attempts"] >= max(2, attempts)
    assert listed[REMOTE]["last_error"] is None
    (series,) = site.segs_in_orthanc()
    assert len(series["Instances"]) == 1
    assert site.orthanc.count_instances() == SLICES + 1
    site.assert_logs_hold_no_identified_values()


def test_a_uid_missing_from_the_vault_stops_the_delivery_and_nothing_is_sent(site: Site) -> None:
    site.create_users()
    research = research_series(site)
    labels = drawn_mask()
    annotation = import_mask(site, research, labels)
    approve(site, annotation, "rita")
    assert approve(site, annotation, "rob")["state"] == "approved"  # queued; `serve` is not running yet
    # The vault always holds the UIDs of what was de-identified: deleting the row of one source instance (a
    # slice with a frame in the SEG) is how this test causes a fault it could not cause otherwise.
    missing = str(research.sources[3].SOPInstanceUID)
    with sqlite3.connect(site.database, timeout=10) as db:
        deleted = db.execute("DELETE FROM vault_uid WHERE project = ? AND pseudo_uid = ?", (PROJECT, missing)).rowcount
    db.close()
    assert deleted == 1

    site.start_serve()
    wait_for("failed delivery", lambda: True if site.delivery(REMOTE)[0] == "failed" else None, site=site)
    wait_for("research delivery", lambda: True if site.delivery("research")[0] == "delivered" else None, site=site)
    listed = site.deliveries()
    assert listed[REMOTE]["state"] == "failed" and listed[REMOTE]["attempts"] == 1
    assert listed[REMOTE]["last_error"] == (
        f"re-identification stopped: 1 UID(s) of the SEG are not in project '{PROJECT}''s vault (first: {missing}); "
        "nothing was sent"
    )
    (event,) = site.rows("SELECT object, detail FROM auditevent WHERE action = 'delivery.reidentification_failed'")
    assert event == (f"delivery {listed[REMOTE]['id']}", listed[REMOTE]["last_error"])
    assert site.segs_in_orthanc() == [] and site.orthanc.count_instances() == SLICES
    site.assert_logs_hold_no_identified_values()
