"""The synthetic DICOM factory must produce standard-conformant objects,
otherwise every other test would be checking behaviour on invalid input."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    RLELossless,
)

try:  # works both with and without a tests/__init__.py
    from tests import factory as f
except ImportError:  # pragma: no cover - depends on how pytest sets sys.path
    import factory as f

DCIODVFY = shutil.which("dciodvfy")


def _ct_series() -> list[Dataset]:
    series: list[Dataset] = f.make_series(f.make_patient(1), "CT", count=3)
    return series


KINDS: dict[str, Callable[[], Dataset]] = {
    "ct": lambda: f.make_ct(f.make_patient(1)),
    "ct_contrast": lambda: f.make_ct(f.make_patient(2), contrast_agent="IOHEXOL 350"),
    "mr": lambda: f.make_mr(f.make_patient(3)),
    "pt": lambda: f.make_pt(f.make_patient(4)),
    "sr": lambda: f.make_sr(f.make_patient(1), _ct_series()),
    "seg": lambda: f.make_seg(_ct_series()),
    "ct_ir87": lambda: f.with_charset(f.make_ct(f.make_patient(5)), "ISO 2022 IR 87"),
    "ct_ir192": lambda: f.with_charset(f.make_ct(f.make_patient(5)), "ISO_IR 192"),
    "ct_private": lambda: f.with_private_tags(f.make_ct(f.make_patient(6))),
    "ct_implicit": lambda: f.make_ct(f.make_patient(1), transfer_syntax=ImplicitVRLittleEndian),
    "ct_big_endian": lambda: f.make_ct(f.make_patient(1), transfer_syntax=ExplicitVRBigEndian),
    "ct_rle": lambda: f.make_ct(f.make_patient(1), transfer_syntax=RLELossless),
}


def _dciodvfy(path: Path) -> list[str]:
    """Run dciodvfy; it reports on stderr, so both streams are inspected."""
    assert DCIODVFY is not None
    proc = subprocess.run(
        [DCIODVFY, "-new", "-filename", str(path)], capture_output=True, text=True, errors="replace", timeout=120
    )
    return (proc.stdout + proc.stderr).splitlines()


def _write(kind: str, folder: Path) -> tuple[Dataset, Path]:
    ds = KINDS[kind]()
    path = folder / f"{kind}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return ds, path


@pytest.mark.parametrize("kind", list(KINDS))
def test_instance_round_trips(kind: str, tmp_path: Path) -> None:
    ds, path = _write(kind, tmp_path)
    back = pydicom.dcmread(path)
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert str(back.PatientName) == str(ds.PatientName)
    if "PixelData" in back:
        assert back.pixel_array.any()


@pytest.mark.integration
@pytest.mark.parametrize("kind", list(KINDS))
def test_instance_passes_dciodvfy(kind: str, tmp_path: Path) -> None:
    if DCIODVFY is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    _, path = _write(kind, tmp_path)
    pydicom.dcmread(path)  # must at least be readable before blaming the validator
    report = _dciodvfy(path)
    errors = [line for line in report if line.startswith("Error")]
    assert not errors, "\n".join(report)


def test_transfer_syntaxes_keep_pixels(tmp_path: Path) -> None:
    """Deflated is checked here only: this dicom3tools build cannot inflate."""
    p = f.make_patient(1)
    reference = f.make_ct(p).pixel_array
    for ts in (ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian, RLELossless):
        path = tmp_path / f"{ts}.dcm"
        f.make_ct(p, transfer_syntax=ts).save_as(path, enforce_file_format=True)
        back = pydicom.dcmread(path)
        assert back.file_meta.TransferSyntaxUID == ts
        np.testing.assert_array_equal(back.pixel_array, reference)


def test_charset_names_round_trip(tmp_path: Path) -> None:
    for charset, name in (("ISO 2022 IR 87", f.JAPANESE_NAME), ("ISO_IR 192", f.UTF8_NAME)):
        path = tmp_path / "x.dcm"
        f.with_charset(f.make_ct(f.make_patient(1)), charset).save_as(path, enforce_file_format=True)
        assert str(pydicom.dcmread(path).PatientName) == name


def test_private_tags_and_overlay() -> None:
    ds = f.with_private_tags(f.make_ct(f.make_patient(1)))
    block = ds.private_block(0x0009, f.PRIVATE_CREATOR)
    assert "O'BRIEN" in block[0x01].value
    assert ds.overlay_array(0x6000).shape == (ds.Rows, ds.Columns)


def test_patients_are_deterministic_and_distinct() -> None:
    assert f.make_patient(3) == f.make_patient(3)
    patients = [f.make_patient(n) for n in range(50)]
    assert len({p.patient_id for p in patients}) == 50
    assert len({p.name for p in patients}) == 50


def test_series_shares_uids_and_moves_position() -> None:
    series = f.make_series(f.make_patient(1), "MR", count=4)
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "AccessionNumber"):
        assert len({str(ds[key].value) for ds in series}) == 1
    assert [ds.InstanceNumber for ds in series] == [1, 2, 3, 4]
    z = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert np.allclose(np.diff(z), float(series[0].SliceThickness))
    assert len({ds.SOPInstanceUID for ds in series}) == 4


def test_corpus_and_write_files(tmp_path: Path) -> None:
    corpus = f.make_corpus(n_patients=2, studies_per_patient=2, per_series=2, modalities=("CT", "PT"))
    assert len(corpus) == 2 * 2 * 2 * 2
    studies = {ds.StudyInstanceUID: ds for ds in corpus}
    assert len(studies) == 4
    assert len({ds.AccessionNumber for ds in studies.values()}) == 4
    for pid in ("PID000001", "PID000002"):
        dates = sorted(datetime.strptime(ds.StudyDate, "%Y%m%d") for ds in studies.values() if ds.PatientID == pid)
        assert (dates[1] - dates[0]).days == 90

    paths = f.write_files(corpus, tmp_path)
    assert len(set(paths)) == len(corpus)
    for path, ds in zip(paths, corpus, strict=True):
        rel = path.relative_to(tmp_path).parts
        assert rel == (ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, f"{ds.InstanceNumber:03d}.dcm")
        assert pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID == ds.SOPInstanceUID


def test_sr_mentions_patient_and_references_images() -> None:
    patient = f.make_patient(2)
    images = f.make_series(patient, "CT", count=2)
    sr = f.make_sr(patient, images)
    assert patient.name in sr.ContentSequence[0].TextValue
    refs = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {ds.SOPInstanceUID for ds in images}
    assert sr.StudyInstanceUID == images[0].StudyInstanceUID
