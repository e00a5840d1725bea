"""Exports of a cohort or snapshot into a folder: layout, labels in the files, manifest, resumption."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import nibabel
import pydicom
import pytest
from sqlmodel import delete, select

from bridge.cohorts import saved
from bridge.cohorts.filters import CohortFilters
from bridge.export import selection
from bridge.export.folder import export
from bridge.export.formats import Format
from bridge.wiring import Runtime
from storage.models.research import Instance
from tests.cohorts import population

EXAMPLE = CohortFilters(project="lung", modality=["CT"], body_part=["CHEST"], slice_thickness_max=2.5, min_followups=2)


@pytest.fixture
def trial(tmp_path: Path) -> Iterator[Runtime]:
    with population.ingested(tmp_path, f"sqlite:///{tmp_path / 'bridge.db'}") as runtime:
        yield runtime


def chosen(runtime: Runtime):  # type: ignore[no-untyped-def]
    with runtime.database.reading() as session:
        return selection.of_cohort(session, EXAMPLE, runtime.settings.storage.store_dir)


def test_files_are_laid_out_labelled_and_listed(trial: Runtime, tmp_path: Path) -> None:
    target = tmp_path / "out"
    report = export(chosen(trial), target)
    assert report.written == 12 and report.unchanged == 0 and not report.failed

    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*.dcm"))
    assert len(files) == 12
    assert {f.rsplit("/", 1)[0] for f in files} == {
        "LUNG-0001/baseline_0/1_CT",
        "LUNG-0001/week8_56/1_CT",
        "LUNG-0001/week16_112/1_CT",
        "LUNG-0004/baseline_0/1_CT",
        "LUNG-0004/week8_60/1_CT",
        "LUNG-0004/unscheduled_200/1_CT",
    }
    manifest = json.loads((target / "manifest.json").read_text())
    rows = list(csv.DictReader(io.StringIO((target / "manifest.csv").read_text())))
    assert len(manifest["files"]) == len(rows) == 12 and manifest["missing"] == []
    for entry, row in zip(manifest["files"], rows, strict=True):
        written = target / entry["path"]
        assert hashlib.sha256(written.read_bytes()).hexdigest() == entry["sha256"] == row["sha256"]
        ds = pydicom.dcmread(written)
        assert ds.ClinicalTrialTimePointID == entry["timepoint_label"] == written.parts[-3].split("_")[0]
        assert ds.SOPInstanceUID == entry["sop_instance_uid"] and ds.PatientID == entry["subject"]
        with trial.database.reading() as session:
            stored = session.exec(select(Instance).where(Instance.sop_instance_uid == ds.SOPInstanceUID)).one()
        original = pydicom.dcmread(trial.settings.storage.store_dir / stored.path)
        assert stored.sha256 == entry["source_sha256"] and ds.PixelData == original.PixelData
        assert {"subject", "timepoint_label", "days_from_baseline", "series_instance_uid", "path"} <= set(row)


def test_a_second_run_writes_only_what_is_missing_or_differs(trial: Runtime, tmp_path: Path) -> None:
    target = tmp_path / "out"
    export(chosen(trial), target)
    again = export(chosen(trial), target)
    assert (again.written, again.unchanged) == (0, 12)

    files = sorted(target.rglob("*.dcm"))
    files[0].unlink()
    files[1].write_bytes(files[1].read_bytes()[:-10] + b"0123456789")  # changed bytes, same size
    stamp = files[2].stat().st_mtime_ns
    third = export(chosen(trial), target)
    assert (third.written, third.unchanged) == (2, 10)
    assert files[0].is_file() and files[2].stat().st_mtime_ns == stamp
    manifest = {e["path"]: e["sha256"] for e in json.loads((target / "manifest.json").read_text())["files"]}
    assert hashlib.sha256(files[1].read_bytes()).hexdigest() == manifest[files[1].relative_to(target).as_posix()]


def test_a_snapshot_exports_what_it_froze_and_names_what_is_gone(trial: Runtime, tmp_path: Path) -> None:
    with trial.database.session() as session:
        saved.save(session, "thin", EXAMPLE, actor="test")
        snapshot = saved.take_snapshot(session, "thin", actor="test")
    with trial.database.session() as session:
        victim = session.exec(select(Instance).order_by(Instance.id)).first()  # type: ignore[arg-type]
        assert victim is not None
        session.execute(delete(Instance).where(Instance.id == victim.id))  # type: ignore[arg-type]
    with trial.database.reading() as session:
        frozen = selection.of_snapshot(session, snapshot, trial.settings.storage.store_dir)
        gone = saved.gone(session, snapshot)
    report = export(frozen, tmp_path / "out")
    assert report.missing == [victim.sop_instance_uid] == gone.instances
    assert (
        report.written == 11 and json.loads((tmp_path / "out/manifest.json").read_text())["missing"] == report.missing
    )


def test_nifti_gives_one_volume_per_series(trial: Runtime, tmp_path: Path) -> None:
    target = tmp_path / "nifti"
    report = export(chosen(trial), target, Format.NIFTI)
    assert report.written == 6 and not report.failed
    volumes = sorted(target.rglob("*.nii.gz"))
    assert len(volumes) == 6 and volumes[0].name == "1_CT.nii.gz"
    image = nibabel.load(volumes[0])
    assert image.shape[2] == 2  # the series' two slices
    assert (export(chosen(trial), target, Format.NIFTI).unchanged, len(list(target.rglob("*.nii.gz")))) == (6, 6)
