"""read_seg: SEGs from outside (built here with highdicom the way OHIF, Slicer or another node write them)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from bridge.seg.build import build_seg
from bridge.seg.read import ReadSeg, SegError, read_seg
from tests.factory import make_patient, make_series, make_sr
from tests.seg.test_build import masks, meta, series, specs, uids

COLOURS = [(255, 0, 0), (0, 128, 255), (250, 250, 20)]


def descriptions(algorithm_type: str = "AUTOMATIC", count: int = 3) -> list[hd.seg.SegmentDescription]:
    algorithm = hd.AlgorithmIdentificationSequence(
        name="TotalSegmentator", family=codes.cid7162.ArtificialIntelligence, version="2.0"
    )
    types = [codes.SCT.Neoplasm, codes.SCT.Liver, codes.SCT.Spleen]
    return [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=f"Structure {number}",
            segmented_property_category=codes.SCT.Tissue if number > 1 else codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=types[number - 1],
            algorithm_type=algorithm_type,
            algorithm_identification=algorithm if algorithm_type != "MANUAL" else None,
            anatomic_regions=[codes.SCT.Abdomen] if number == 2 else None,
            display_color=hd.color.CIELabColor.from_rgb(*COLOURS[number - 1]),
        )
        for number in range(1, count + 1)
    ]


def stack(sources: list[Dataset]) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """Three segments over (slices, rows, columns): tumour, a big block on slices 2-4, a dot on slice 6."""
    tumour, node = masks(sources)
    block = np.zeros_like(tumour)
    block[2:5, 10:30, 30:60] = True
    return np.stack([tumour, block, node], axis=-1)


def external_seg(sources: list[Dataset], pixels: np.ndarray[Any, Any], **kw: Any) -> hd.seg.Segmentation:
    arguments: dict[str, Any] = {
        "segmentation_type": "BINARY",
        "segment_descriptions": descriptions(),
        "series_instance_uid": generate_uid(),
        "series_number": 1001,
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": "OHIF",
        "manufacturer_model_name": "OHIF Viewer",
        "software_versions": "3.9",
        "device_serial_number": "1",
        "content_label": "SEGMENTATION",
        "content_creator_name": "READER^ONE",
    }
    arguments.update(kw)
    return hd.seg.Segmentation(source_images=sources, pixel_array=pixels, **arguments)


def as_ohif_writes_it(seg: Dataset) -> Dataset:
    """dcmjs (OHIF) writes no Spatial Locations Preserved in its per-frame source references."""
    for item in seg.PerFrameFunctionalGroupsSequence:
        for derivation in item.DerivationImageSequence:
            for source in derivation.SourceImageSequence:
                if "SpatialLocationsPreserved" in source:  # highdicom shares the item between segments
                    del source.SpatialLocationsPreserved
    return seg


def through_file(ds: Dataset, path: Path) -> Dataset:
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path)


@pytest.fixture
def ct() -> list[Dataset]:
    return series()


def test_a_seg_as_ohif_sends_it(ct: list[Dataset], tmp_path: Path) -> None:
    pixels = stack(ct)
    ds = through_file(as_ohif_writes_it(external_seg(ct, pixels)), tmp_path / "ohif.dcm")
    read = read_seg(ds)

    assert read.referenced_series_uids == {str(ct[0].SeriesInstanceUID)}
    assert read.referenced_instance_uids == set(uids(ct))
    assert read.frame_of_reference_uid == str(ct[0].FrameOfReferenceUID)
    assert read.segmentation_type == "BINARY"
    assert [s.number for s in read.segments] == [1, 2, 3]
    assert [s.label for s in read.segments] == ["Structure 1", "Structure 2", "Structure 3"]
    assert [s.colour for s in read.segments] == COLOURS
    assert {s.algorithm_type for s in read.segments} == {"AUTOMATIC"}
    assert read.segments[0].category == codes.SCT.MorphologicallyAbnormalStructure
    assert read.segments[1].type == codes.SCT.Liver
    assert read.segments[1].region == codes.SCT.Abdomen and read.segments[0].region is None

    got = read.masks(uids(ct))
    assert set(got) == {1, 2, 3}
    for index, number in enumerate((1, 2, 3)):
        assert got[number].dtype == np.bool_ and got[number].shape == pixels.shape[:3]
        np.testing.assert_array_equal(got[number], pixels[..., index])


def test_frames_in_another_order_than_the_sources(ct: list[Dataset]) -> None:
    """The SEG was made over the slices in a shuffled order; the masks come back in the caller's order."""
    pixels = stack(ct)
    order = [4, 0, 6, 2, 5, 1, 3]
    seg = external_seg([ct[i] for i in order], pixels[order], segment_descriptions=descriptions("MANUAL"))
    read = read_seg(seg)
    got = read.masks(uids(ct))
    backwards = read.masks(uids(ct)[::-1])
    for index, number in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(got[number], pixels[..., index])
        np.testing.assert_array_equal(backwards[number], pixels[::-1, ..., index])


def test_a_subset_of_the_instances_and_instances_without_frames(ct: list[Dataset]) -> None:
    pixels = stack(ct)
    read = read_seg(external_seg(ct, pixels))
    got = read.masks(uids(ct)[2:4])
    np.testing.assert_array_equal(got[2], pixels[2:4, ..., 1])
    assert not read.masks(uids(ct)[6:])[1].any()  # slice 6 has no frame of segment 1


def test_the_bridges_own_seg_round_trips(ct: list[Dataset]) -> None:
    tumour, node = masks(ct)
    read = read_seg(build_seg(ct, specs(tumour, node), meta()))
    assert [(s.label, s.colour, s.algorithm_type) for s in read.segments] == [
        ("Tumour", (230, 40, 40), "MANUAL"),
        ("Node", (40, 200, 90), "MANUAL"),
    ]
    got = read.masks(uids(ct))
    np.testing.assert_array_equal(got[1], tumour)
    np.testing.assert_array_equal(got[2], node)


def test_a_labelmap_seg(ct: list[Dataset]) -> None:
    """The Label Map Segmentation SOP class (the bridge never writes it, others may): background not a segment."""
    pixels = stack(ct)
    labels = pixels[..., :2].copy()
    labels[..., 1] &= ~labels[..., 0]  # a label map cannot overlap
    seg = external_seg(ct, labels, segmentation_type="LABELMAP", segment_descriptions=descriptions(count=2))
    read = read_seg(seg)
    assert read.segmentation_type == "LABELMAP"
    assert [s.number for s in read.segments] == [1, 2]
    got = read.masks(uids(ct))
    np.testing.assert_array_equal(got[1], labels[..., 0])
    np.testing.assert_array_equal(got[2], labels[..., 1])


def test_fractional_is_thresholded_at_half_the_maximum(ct: list[Dataset]) -> None:
    tumour, node = masks(ct)
    probabilities = np.zeros((*tumour.shape, 2), dtype=np.float32)
    probabilities[..., 0] = np.where(tumour, 0.5, 0.0)  # exactly half: in
    probabilities[1:4, ..., 0][~tumour[1:4]] = 0.3  # a halo around it: out
    probabilities[..., 1] = node * 0.49  # just below half: out
    seg = external_seg(
        ct,
        probabilities,
        segmentation_type="FRACTIONAL",
        segment_descriptions=descriptions(count=2),
        max_fractional_value=200,
    )
    read = read_seg(seg)
    assert read.segmentation_type == "FRACTIONAL"
    got = read.masks(uids(ct))
    np.testing.assert_array_equal(got[1], tumour)
    assert not got[2].any()


def test_frames_without_source_references_are_placed_by_position(ct: list[Dataset]) -> None:
    pixels = stack(ct)
    seg = external_seg(ct, pixels)
    # segment 1 on slice 2 loses its reference: segment 2's frame at that position names the instance
    # segment 3 (slice 5 only, nothing else there) loses its reference: only the caller's positions place it
    for item in seg.PerFrameFunctionalGroupsSequence:
        number = int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        source = str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if (number == 1 and source == ct[2].SOPInstanceUID) or number == 3:
            del item.DerivationImageSequence
    read = read_seg(seg)
    with pytest.raises(SegError, match="carry a plane position but no source image reference"):
        read.masks(uids(ct))
    got = read.masks(uids(ct), source_positions=[ds.ImagePositionPatient for ds in ct])
    for index, number in enumerate((1, 2, 3)):
        np.testing.assert_array_equal(got[number], pixels[..., index])


# --------------------------------------------------------------------------
# Refused
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dataset",
    [
        lambda ct: ct[0],
        lambda ct: make_sr(make_patient(3), ct[:2]),
        lambda ct: Dataset(),
    ],
    ids=["CT image", "SR", "empty dataset"],
)
def test_a_dataset_that_is_not_a_seg(dataset: Any, ct: list[Dataset]) -> None:
    with pytest.raises(SegError, match="not a DICOM Segmentation"):
        read_seg(dataset(ct))


def test_a_seg_without_segments(ct: list[Dataset]) -> None:
    seg = external_seg(ct, stack(ct))
    seg.SegmentSequence = []
    with pytest.raises(SegError, match="describes no segments"):
        read_seg(seg)


def test_a_frame_that_cannot_be_placed(ct: list[Dataset]) -> None:
    seg = external_seg(ct, stack(ct))
    frame = seg.PerFrameFunctionalGroupsSequence[1]
    del frame.DerivationImageSequence
    del frame.PlanePositionSequence
    with pytest.raises(SegError, match="frame 2 has neither a source image reference nor a plane position"):
        read_seg(seg)


def test_a_frame_off_its_source_grid(ct: list[Dataset]) -> None:
    seg = external_seg(ct, stack(ct))
    seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[
        0
    ].SpatialLocationsPreserved = "NO"
    with pytest.raises(SegError, match="frame 1 says Spatial Locations Preserved NO"):
        read_seg(seg)


def test_a_frame_of_an_undescribed_segment(ct: list[Dataset]) -> None:
    seg = external_seg(ct, stack(ct))
    seg.PerFrameFunctionalGroupsSequence[0].SegmentIdentificationSequence[0].ReferencedSegmentNumber = 9
    with pytest.raises(SegError, match="segment 9, which the Segment Sequence does not describe"):
        read_seg(seg)


def test_masks_for_images_the_seg_does_not_reference(ct: list[Dataset]) -> None:
    read = read_seg(external_seg(ct, stack(ct)))
    other = make_series(make_patient(4), "CT", 3)
    with pytest.raises(SegError, match="references none of the 3 given instances"):
        read.masks(uids(other))
    with pytest.raises(SegError, match="non-empty sequence"):
        read.masks([])


def test_the_callers_dataset_is_not_changed(ct: list[Dataset]) -> None:
    seg = external_seg(ct, stack(ct))
    plain = Dataset()
    plain.update(seg)
    plain.file_meta = copy.deepcopy(seg.file_meta)
    before = plain.to_json_dict()
    read: ReadSeg = read_seg(plain)
    read.masks(uids(ct))
    assert type(plain) is Dataset and plain.to_json_dict() == before
