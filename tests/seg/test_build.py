"""build_seg: what a receiver's validators and readers make of the bridge's SEGs (dciodvfy, highdicom, dcmqi)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bridge.seg.build import MANUFACTURER, SegmentSpec, SegMeta, build_seg
from bridge.seg.read import read_seg
from tests.factory import make_patient, make_seg, make_series
from tests.seg.validators import dciodvfy_errors, dciodvfy_report, dcmqi_volume

Mask = npt.NDArray[np.bool_]

SLICES = 7
TRIAL = {
    "ClinicalTrialSponsorName": "Onco Group",
    "ClinicalTrialProtocolID": "LUNG-1",
    "ClinicalTrialProtocolName": "Lung response study",
    "ClinicalTrialSiteID": "S01",
    "ClinicalTrialSiteName": "Site One",
    "ClinicalTrialSubjectID": "LUNG-0003",
    "ClinicalTrialTimePointID": "BASELINE",
    "ClinicalTrialCoordinatingCenterName": "Central Imaging Lab",
    "ClinicalTrialSeriesID": "CT-1",
    "PatientIdentityRemoved": "YES",
    "DeidentificationMethod": "pacs-bridge PS3.15 E.1-1",
}


def series(modality: str = "CT", count: int = SLICES, **kw: Any) -> list[Dataset]:
    """A de-identified research-side series, as the bridge's store holds it."""
    return make_series(make_patient(3), modality, count, **{**TRIAL, **kw})


def masks(sources: list[Dataset]) -> tuple[Mask, Mask]:
    """A tumour over slices 1-3 and a node on slice 5 alone; slices 0, 4 and 6 empty."""
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    yy, xx = np.mgrid[0:rows, 0:columns]
    tumour = np.zeros((len(sources), rows, columns), dtype=bool)
    for i, radius in ((1, 5), (2, 8), (3, 4)):
        tumour[i] = np.hypot(yy - rows * 0.4, xx - columns * 0.55) < radius
    node = np.zeros_like(tumour)
    node[5, rows - 12 : rows - 6, 4:9] = True  # off-centre, so a row/column swap shows
    return tumour, node


def specs(tumour: Mask, node: Mask) -> list[SegmentSpec]:
    return [
        SegmentSpec(
            "Tumour",
            tumour,
            codes.SCT.MorphologicallyAbnormalStructure,
            codes.SCT.Neoplasm,
            (230, 40, 40),
            codes.SCT.Lung,
        ),
        SegmentSpec("Node", node, codes.SCT.MorphologicallyAbnormalStructure, codes.SCT.Neoplasm, (40, 200, 90)),
    ]


def meta(**changes: Any) -> SegMeta:
    base = SegMeta(
        series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(),
        series_number=301,
        series_description="Tumour segmentation",
        annotator="DOE^JANE",
        content_label="TUMOUR",
        timepoint_label="FOLLOWUP1",
        software_version="0.1.0",
    )
    return replace(base, **changes)


def save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def uids(sources: list[Dataset]) -> list[str]:
    return [str(ds.SOPInstanceUID) for ds in sources]


@pytest.fixture
def ct() -> list[Dataset]:
    return series()


# --------------------------------------------------------------------------
# Validators and readers
# --------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("modality", ["CT", "MR", "PT"])
def test_dciodvfy_reports_no_errors(modality: str, tmp_path: Path) -> None:
    sources = series(modality)
    path = save(build_seg(sources, specs(*masks(sources)), meta()), tmp_path / "seg.dcm")
    report = dciodvfy_report(path)
    assert dciodvfy_errors(path) == [], "\n".join(report)


def test_highdicom_and_read_seg_read_it_back_voxel_identical(ct: list[Dataset], tmp_path: Path) -> None:
    tumour, node = masks(ct)
    path = save(build_seg(ct, specs(tumour, node), meta()), tmp_path / "seg.dcm")
    ds = pydicom.dcmread(path)

    read = read_seg(ds).masks(uids(ct))
    assert set(read) == {1, 2}
    np.testing.assert_array_equal(read[1], tumour)
    np.testing.assert_array_equal(read[2], node)

    direct = hd.seg.segread(path).get_pixels_by_source_instance(uids(ct), assert_missing_frames_are_empty=True)
    assert direct.shape == (SLICES, *tumour.shape[1:], 2)
    np.testing.assert_array_equal(direct[..., 0].astype(bool), tumour)
    np.testing.assert_array_equal(direct[..., 1].astype(bool), node)


def test_empty_frames_are_omitted_unless_asked_to_keep_them(ct: list[Dataset]) -> None:
    tumour, node = masks(ct)
    seg = build_seg(ct, specs(tumour, node), meta())
    non_empty = sum(int(mask[i].any()) for mask in (tumour, node) for i in range(SLICES))
    assert non_empty == 4
    assert int(seg.NumberOfFrames) == non_empty

    kept = build_seg(ct, specs(tumour, node), meta(), omit_empty_frames=False)
    assert int(kept.NumberOfFrames) == 2 * SLICES
    read = read_seg(kept).masks(uids(ct))
    np.testing.assert_array_equal(read[1], tumour)
    np.testing.assert_array_equal(read[2], node)


def test_each_frame_references_its_own_source_slice(ct: list[Dataset]) -> None:
    tumour, node = masks(ct)
    seg = build_seg(ct, specs(tumour, node), meta())
    pairs = {
        (
            int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
        )
        for item in seg.PerFrameFunctionalGroupsSequence
    }
    expected = {
        (number, str(ct[i].SOPInstanceUID))
        for number, mask in ((1, tumour), (2, node))
        for i in range(SLICES)
        if mask[i].any()
    }
    assert pairs == expected


@pytest.mark.integration
def test_dcmqi_converts_each_segment_to_the_mask_on_the_source_grid(ct: list[Dataset], tmp_path: Path) -> None:
    tumour, node = masks(ct)
    path = save(build_seg(ct, specs(tumour, node), meta()), tmp_path / "seg.dcm")
    volumes = dict(dcmqi_volume(path, tmp_path / "dcmqi"))
    assert set(volumes) == {"Tumour", "Node"}
    np.testing.assert_array_equal(on_source_grid(volumes["Tumour"], ct), tumour)
    np.testing.assert_array_equal(on_source_grid(volumes["Node"], ct), node)


@pytest.mark.integration
def test_an_oblique_non_square_series_round_trips_through_dcmqi(tmp_path: Path) -> None:
    sources = oblique(series(count=SLICES, rows=40, columns=56))
    tumour, node = masks(sources)
    path = save(build_seg(sources, specs(tumour, node), meta()), tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == [], "\n".join(dciodvfy_report(path))
    np.testing.assert_array_equal(read_seg(pydicom.dcmread(path)).masks(uids(sources))[2], node)
    volumes = dict(dcmqi_volume(path, tmp_path / "dcmqi"))
    np.testing.assert_array_equal(on_source_grid(volumes["Tumour"], sources), tumour)
    np.testing.assert_array_equal(on_source_grid(volumes["Node"], sources), node)


def test_sources_in_any_order_are_matched_slice_by_slice(ct: list[Dataset]) -> None:
    tumour, node = masks(ct)
    backwards = ct[::-1]
    seg = build_seg(backwards, specs(tumour[::-1].copy(), node[::-1].copy()), meta())
    read = read_seg(seg).masks(uids(ct))
    np.testing.assert_array_equal(read[1], tumour)
    np.testing.assert_array_equal(read[2], node)


# --------------------------------------------------------------------------
# What the SEG says
# --------------------------------------------------------------------------


def test_segments_are_numbered_coded_coloured_and_manual(ct: list[Dataset]) -> None:
    seg = build_seg(ct, specs(*masks(ct)), meta())
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert seg.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert seg.SegmentationType == "BINARY"
    items = seg.SegmentSequence
    assert [int(item.SegmentNumber) for item in items] == [1, 2]
    assert [item.SegmentLabel for item in items] == ["Tumour", "Node"]
    assert {item.SegmentAlgorithmType for item in items} == {"MANUAL"}
    assert items[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == codes.SCT.Neoplasm.value
    assert items[0].AnatomicRegionSequence[0].CodeValue == codes.SCT.Lung.value
    assert "AnatomicRegionSequence" not in items[1]
    assert "SegmentAlgorithmName" not in items[0]  # forbidden for MANUAL
    infos = read_seg(seg).segments
    assert [info.colour for info in infos] == [(230, 40, 40), (40, 200, 90)]
    assert infos[0].region == codes.SCT.Lung


def test_annotator_software_and_labels_are_recorded(ct: list[Dataset]) -> None:
    seg = build_seg(ct, specs(*masks(ct)), meta(annotator="DOE^JANE^Q"))
    assert str(seg.ContentCreatorName) == "DOE^JANE^Q"
    assert [str(item.ContentCreatorName) for item in seg.SegmentSequence] == ["DOE^JANE^Q"] * 2
    assert seg.Manufacturer == MANUFACTURER
    assert seg.SoftwareVersions == "0.1.0"
    assert seg.ContentLabel == "TUMOUR"
    assert seg.SeriesDescription == "Tumour segmentation"
    assert int(seg.SeriesNumber) == 301 and int(seg.InstanceNumber) == 1


def test_trial_and_deidentification_attributes_are_copied_and_timepoint_set(ct: list[Dataset]) -> None:
    seg = build_seg(ct, specs(*masks(ct)), meta(timepoint_label="FOLLOWUP1"))
    for keyword, value in TRIAL.items():
        expected = "FOLLOWUP1" if keyword == "ClinicalTrialTimePointID" else value
        assert seg.get(keyword) == expected, keyword
    assert seg.PatientID == ct[0].PatientID and seg.StudyInstanceUID == ct[0].StudyInstanceUID

    unchanged = build_seg(ct, specs(*masks(ct)), meta(timepoint_label=None))
    assert unchanged.ClinicalTrialTimePointID == "BASELINE"


def test_the_sources_are_left_as_they_were(ct: list[Dataset]) -> None:
    """highdicom hands the source's own elements to the SEG; changing the SEG must not change the sources."""
    before = [ds.to_json_dict() for ds in ct]
    seg = build_seg(ct, specs(*masks(ct)), meta(timepoint_label="FOLLOWUP1"))
    seg.PatientName = "REIDENTIFIED^NAME"
    seg.OtherPatientIDsSequence[0].PatientID = "CHANGED"
    assert [ds.to_json_dict() for ds in ct] == before


@pytest.mark.integration
def test_a_timepoint_label_on_sources_without_trial_attributes(tmp_path: Path) -> None:
    sources = make_series(make_patient(5), "CT", SLICES)
    path = save(build_seg(sources, specs(*masks(sources)), meta(timepoint_label="BASELINE")), tmp_path / "seg.dcm")
    assert pydicom.dcmread(path).ClinicalTrialTimePointID == "BASELINE"
    assert "ClinicalTrialSponsorName" not in pydicom.dcmread(path)
    assert dciodvfy_errors(path) == [], "\n".join(dciodvfy_report(path))


def test_referenced_series_sequence_names_exactly_the_source_series(ct: list[Dataset]) -> None:
    seg = build_seg(ct, specs(*masks(ct)), meta())
    (item,) = seg.ReferencedSeriesSequence
    assert item.SeriesInstanceUID == ct[0].SeriesInstanceUID
    assert sorted(str(ref.ReferencedSOPInstanceUID) for ref in item.ReferencedInstanceSequence) == sorted(uids(ct))
    assert seg.SeriesInstanceUID != ct[0].SeriesInstanceUID


@pytest.mark.integration
def test_an_empty_segment_is_kept_without_frames(ct: list[Dataset], tmp_path: Path) -> None:
    tumour, _ = masks(ct)
    given = specs(tumour, np.zeros_like(tumour))
    path = save(build_seg(ct, given, meta()), tmp_path / "seg.dcm")
    assert dciodvfy_errors(path) == [], "\n".join(dciodvfy_report(path))
    ds = pydicom.dcmread(path)
    assert [item.SegmentLabel for item in ds.SegmentSequence] == ["Tumour", "Node"]
    assert int(ds.NumberOfFrames) == 3
    read = read_seg(ds).masks(uids(ct))
    np.testing.assert_array_equal(read[1], tumour)
    assert not read[2].any()


def test_a_single_segment_is_written_without_a_copy_and_reads_back(ct: list[Dataset]) -> None:
    tumour, _ = masks(ct)
    seg = build_seg(ct, specs(tumour, tumour)[:1], meta())
    np.testing.assert_array_equal(read_seg(seg).masks(uids(ct))[1], tumour)


# --------------------------------------------------------------------------
# Refused inputs
# --------------------------------------------------------------------------

Case = Callable[[list[Dataset], list[SegmentSpec], SegMeta], tuple[list[Dataset], list[SegmentSpec], SegMeta]]


def _set(index: int, **attributes: Any) -> Callable[[list[Dataset]], list[Dataset]]:
    def change(sources: list[Dataset]) -> list[Dataset]:
        for keyword, value in attributes.items():
            setattr(sources[index], keyword, value)
        return sources

    return change


def _mask(changed: Callable[[Mask], Any]) -> Case:
    return lambda s, g, m: (s, [replace(g[0], mask=changed(g[0].mask)), g[1]], m)


REFUSED: list[tuple[str, Case, str]] = [
    ("no sources", lambda s, g, m: ([], g, m), "At least one source image is required"),
    ("no segments", lambda s, g, m: (s, [], m), "At least one segment is required"),
    (
        "mask too few slices",
        _mask(lambda a: a[1:]),
        r"shape \(6, 64, 64\) but the sources need \(slices, rows, columns\) = \(7, 64, 64\)",
    ),
    ("mask rows/columns swapped", _mask(lambda a: a[:, :, :32]), r"shape \(7, 64, 32\)"),
    ("mask not boolean", _mask(lambda a: a.astype(np.uint8)), "dtype uint8, not bool"),
    ("mask a list", _mask(lambda a: a.tolist()), "not a numpy array"),
    ("two series", lambda s, g, m: (s[:3] + series(count=4), g, m), "sources span 2 series"),
    (
        "a SEG as source",
        lambda s, g, m: ([make_seg(s)], g, m),
        "Segmentation Storage; a SEG is built over single-frame",
    ),
    (
        "different sizes",
        lambda s, g, m: (_set(2, Rows=32)(s), g, m),
        r"sources\[2\] is 32x64 but sources\[0\] is 64x64",
    ),
    (
        "different orientation",
        lambda s, g, m: (_set(4, ImageOrientationPatient=[0, 1, 0, 0, 0, -1])(s), g, m),
        r"sources\[4\] has another Image Orientation",
    ),
    ("same instance twice", lambda s, g, m: (s[:6] + s[:1], g, m), "same SOP instance more than once"),
    ("lower-case content label", lambda s, g, m: (s, g, replace(m, content_label="tumour")), "not a DICOM CS value"),
    ("long content label", lambda s, g, m: (s, g, replace(m, content_label="T" * 17)), "not a DICOM CS value"),
    ("annotator PN delimiters", lambda s, g, m: (s, g, replace(m, annotator="A^B^C^D^E^F")), "more than 5 '\\^'"),
    ("annotator empty", lambda s, g, m: (s, g, replace(m, annotator=" ")), "SegMeta.annotator is empty"),
    (
        "annotator not Latin-1",
        lambda s, g, m: (s, g, replace(m, annotator="Łukasiewicz^Jan")),
        "character set \\(latin_1\\) cannot encode",
    ),
    ("bad UID", lambda s, g, m: (s, g, replace(m, sop_instance_uid="1.2.abc")), "not a valid UID"),
    (
        "SEG in the source series",
        lambda s, g, m: (s, g, replace(m, series_instance_uid=str(s[0].SeriesInstanceUID))),
        "a series of its own",
    ),
    ("colour out of range", lambda s, g, m: (s, [replace(g[0], colour=(256, 0, 0)), g[1]], m), "sRGB tuple"),
    ("duplicate labels", lambda s, g, m: (s, [g[0], replace(g[1], label="Tumour")], m), "labels must be unique"),
    ("long timepoint", lambda s, g, m: (s, g, replace(m, timepoint_label="X" * 65)), "timepoint_label is 65"),
]


@pytest.mark.parametrize(("case", "message"), [(c, msg) for _, c, msg in REFUSED], ids=[n for n, _, _ in REFUSED])
def test_unusable_inputs_are_refused_with_a_precise_message(case: Case, message: str, ct: list[Dataset]) -> None:
    sources, given, what = case(ct, specs(*masks(ct)), meta())
    with pytest.raises(ValueError, match=message):
        build_seg(sources, given, what)


# --------------------------------------------------------------------------
# Geometry helpers
# --------------------------------------------------------------------------


def oblique(sources: list[Dataset], tilt_deg: float = 35.0, turn_deg: float = 20.0) -> list[Dataset]:
    """Rotate the series' planes (turned about z, tilted about the row) and restack the slices along the new
    normal, spaced as before; pixel spacing made anisotropic so that a row/column mix-up shows."""
    a, b = math.radians(turn_deg), math.radians(tilt_deg)
    row = np.array([math.cos(a), math.sin(a), 0.0])
    column = np.array([-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b)])
    normal = np.cross(row, column)
    origin = np.array([-20.0, -15.0, -100.0])
    spacing = float(sources[0].SliceThickness)
    for k, ds in enumerate(sources):
        position = origin + k * spacing * normal
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row, *column)]
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.SliceLocation = round(float(position @ normal), 4)
        ds.PixelSpacing = [0.8, 0.6]
    return sources


def on_source_grid(image: sitk.Image, sources: list[Dataset]) -> Mask:
    """dcmqi's volume laid on the source series' slices, after checking it has the series' geometry:
    direction cosines, in-plane size and spacing, slice spacing, and every slice on a source's position."""
    first = sources[0]
    orientation = np.array(first.ImageOrientationPatient, dtype=float)
    row, column = orientation[:3], orientation[3:]
    direction = np.array(image.GetDirection()).reshape(3, 3)
    np.testing.assert_allclose(direction[:, 0], row, atol=1e-4)
    np.testing.assert_allclose(direction[:, 1], column, atol=1e-4)
    assert abs(float(direction[:, 2] @ np.cross(row, column))) == pytest.approx(1.0, abs=1e-4)

    positions = np.array([ds.ImagePositionPatient for ds in sources], dtype=float)
    slice_spacing = float(np.linalg.norm(positions[1] - positions[0]))
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    assert image.GetSpacing() == pytest.approx((column_spacing, row_spacing, slice_spacing), abs=1e-3)
    assert image.GetSize()[:2] == (int(first.Columns), int(first.Rows))

    array = sitk.GetArrayFromImage(image).astype(bool)  # (slices, rows, columns)
    out = np.zeros((len(sources), int(first.Rows), int(first.Columns)), dtype=bool)
    for k in range(image.GetSize()[2]):
        point = np.array(image.TransformIndexToPhysicalPoint((0, 0, k)))
        distance = np.abs(positions - point).max(axis=1)
        index = int(np.argmin(distance))
        assert distance[index] < 0.01, f"dcmqi slice {k} at {point} lies on no source slice"
        out[index] = array[k]
    return out
