"""Read DICOM SEGs that arrive from outside (OHIF, 3D Slicer, another bridge) into one mask per segment.

What a SEG references, what its segments mean, and its masks laid on the caller's own list of source
instances, so that the caller can check "this mask belongs to these images" before anything is stored.
highdicom does the decoding (`Segmentation.from_dataset`, `get_pixels_by_source_instance`); this module
refuses what cannot be placed, with a message that says why.

Decisions:
- FRACTIONAL SEGs are read as masks thresholded at half the Maximum Fractional Value (a voxel at or above
  0.5 of the maximum is in); a 0/1 FRACTIONAL SEG thus reads exactly. `ReadSeg.segmentation_type` tells.
- A frame whose source reference says Spatial Locations Preserved NO (or REORIENTED_ONLY) does not lie on
  its source's pixel grid: the SEG is refused. A reference without that attribute (dcmjs/OHIF writes none) is
  taken as aligned.
- A frame without a source reference is placed by its plane position: on the instance that another frame
  at the same position references, or else on the given `source_positions`. A frame with neither a
  reference nor a position is refused.
- Frames on instances the caller did not ask for are left out; `masks` refuses a list that shares no
  instance with the SEG (the "mask matched to the wrong images" case).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import UID, SegmentationStorage

__all__ = ["SegError", "SegmentInfo", "ReadSeg", "read_seg"]

LABEL_MAP_SEGMENTATION_STORAGE = UID("1.2.840.10008.5.1.4.1.1.66.7")
_SEG_CLASSES = frozenset({SegmentationStorage, LABEL_MAP_SEGMENTATION_STORAGE})
_ALIGNED = (None, "YES")
_POSITION_TOLERANCE = 0.01  # mm, per coordinate: DS values of one position written by different tools
_FRACTIONAL_THRESHOLD = 0.5


class SegError(ValueError):
    """The dataset is not a SEG the bridge can use; the message says what is wrong."""


@dataclass(frozen=True)
class SegmentInfo:
    """One segment as the SEG describes it."""

    number: int
    label: str
    category: Code
    type: Code
    region: Code | None  # the first Anatomic Region Sequence item, where given
    colour: tuple[int, int, int] | None  # sRGB from RecommendedDisplayCIELabValue, where given
    algorithm_type: str  # MANUAL, SEMIAUTOMATIC or AUTOMATIC


@dataclass(frozen=True)
class _LooseFrame:
    """A frame highdicom cannot place by source reference: placed by instance (via a sibling) or position."""

    number: int  # 1-based frame number
    segment: int | None  # None in a LABELMAP SEG (a frame holds every segment)
    position: tuple[float, float, float]
    instance_uid: str | None  # the instance another frame at this position references, if any


@dataclass(frozen=True)
class ReadSeg:
    """A parsed SEG: its references, its segments, and its masks on demand."""

    referenced_series_uids: frozenset[str]
    referenced_instance_uids: frozenset[str]
    frame_of_reference_uid: str | None
    segments: tuple[SegmentInfo, ...]
    segmentation_type: str  # BINARY, FRACTIONAL or LABELMAP
    _seg: hd.seg.Segmentation = field(repr=False, compare=False)
    _has_frame_references: bool = field(default=True, repr=False, compare=False)
    _loose_frames: tuple[_LooseFrame, ...] = field(default=(), repr=False, compare=False)

    def masks(
        self,
        source_instance_uids: Sequence[str],
        *,
        source_positions: Sequence[Sequence[float]] | None = None,
    ) -> dict[int, npt.NDArray[np.bool_]]:
        """Segment number -> bool (len(sources), rows, columns), in the order given; absent frames are empty.

        `source_positions` (Image Position (Patient) of each source, same order) is needed only for a SEG
        with frames that carry a plane position but no source reference.
        """
        uids = [str(uid) for uid in source_instance_uids]
        if isinstance(source_instance_uids, str) or not uids:
            raise SegError("masks() needs a non-empty sequence of SOP Instance UIDs")
        if len(set(uids)) != len(uids):
            raise SegError("masks() was given the same SOP Instance UID more than once")
        if source_positions is not None and len(source_positions) != len(uids):
            raise SegError(f"masks() got {len(source_positions)} source positions for {len(uids)} instances")
        if set(uids).isdisjoint(self.referenced_instance_uids) and not self._loose_frames:
            raise SegError(
                f"this SEG references none of the {len(uids)} given instances; it belongs to other images "
                "(another series, or the series before de-identification)"
            )
        numbers = [info.number for info in self.segments]
        rows, columns = int(self._seg.Rows), int(self._seg.Columns)
        out = {number: np.zeros((len(uids), rows, columns), dtype=np.bool_) for number in numbers}
        if self._has_frame_references:
            try:
                pixels = self._seg.get_pixels_by_source_instance(
                    uids,
                    segment_numbers=numbers,
                    ignore_spatial_locations=True,  # checked in read_seg: absent is taken as YES
                    assert_missing_frames_are_empty=True,
                    skip_overlap_checks=True,
                )
            except (RuntimeError, ValueError, KeyError) as error:
                raise SegError(f"highdicom cannot lay this SEG on the given instances: {error}") from error
            for index, number in enumerate(numbers):
                out[number] = self._binary(pixels[..., index], rescaled=True)
        self._place_loose_frames(out, uids, source_positions)
        return out

    def _place_loose_frames(
        self,
        out: dict[int, npt.NDArray[np.bool_]],
        uids: list[str],
        source_positions: Sequence[Sequence[float]] | None,
    ) -> None:
        if not self._loose_frames:
            return
        index_of = {uid: index for index, uid in enumerate(uids)}
        unplaced = [frame for frame in self._loose_frames if frame.instance_uid is None]
        if unplaced and source_positions is None:
            raise SegError(
                f"{len(unplaced)} frame(s) of this SEG (first: frame {unplaced[0].number}) carry a plane position "
                "but no source image reference; pass source_positions (Image Position (Patient) of each source)"
            )
        positions = np.asarray(source_positions, dtype=np.float64) if source_positions is not None else None
        for frame in self._loose_frames:
            if frame.instance_uid is not None:
                index = index_of.get(frame.instance_uid)
            else:
                assert positions is not None
                index = _nearest(positions, frame.position)
            if index is None:
                continue  # lies on an instance the caller did not ask for
            stored = self._seg.get_stored_frame(frame.number)
            if frame.segment is not None:
                out[frame.segment][index] |= self._binary(stored, rescaled=False)
            else:
                for number in out:
                    out[number][index] |= stored == number

    def _binary(self, values: npt.NDArray[Any], *, rescaled: bool) -> npt.NDArray[np.bool_]:
        """Stored or highdicom-rescaled values -> bool, thresholding FRACTIONAL at half its maximum."""
        if self.segmentation_type != "FRACTIONAL":
            return np.asarray(values != 0, dtype=np.bool_)
        threshold = (
            _FRACTIONAL_THRESHOLD if rescaled else _FRACTIONAL_THRESHOLD * float(self._seg.MaximumFractionalValue)
        )
        return np.asarray(values >= threshold, dtype=np.bool_)


def read_seg(ds: Dataset) -> ReadSeg:
    """Parse a SEG from outside; raises SegError if it is not one or could not be placed on its images."""
    if not isinstance(ds, Dataset):
        raise SegError(f"expected a pydicom Dataset, got {type(ds).__name__}")
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    if sop_class not in _SEG_CLASSES:
        name = sop_class.name if sop_class else "missing"
        raise SegError(f"not a DICOM Segmentation: its SOP Class is {name}")
    if not ds.get("SegmentSequence"):
        raise SegError("the SEG describes no segments (Segment Sequence empty or missing)")
    if ds.get("SegmentationType") not in ("BINARY", "FRACTIONAL", "LABELMAP"):
        raise SegError(
            f"the SEG has Segmentation Type {ds.get('SegmentationType')!r}, not BINARY, FRACTIONAL or LABELMAP"
        )
    for keyword in ("PixelData", "PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
        if keyword not in ds:
            raise SegError(f"the SEG has no {keyword}")
    # Our own checks first, on the dataset as it came, so that a broken SEG gets our message, not a KeyError.
    segmentation_type = str(ds.get("SegmentationType", ""))
    segments = tuple(_segment_info(item) for item in ds.SegmentSequence if int(item.get("SegmentNumber", 0)) != 0)
    if not segments:
        raise SegError("the SEG describes no segments other than the background")
    frames = list(_frames(ds, {info.number for info in segments}, labelmap=segmentation_type == "LABELMAP"))
    instances, series = _root_references(ds)
    try:
        seg = hd.seg.Segmentation.from_dataset(ds, copy=True)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError) as error:
        raise SegError(f"highdicom cannot read this SEG: {error!r}") from error
    for frame in frames:
        instances.update(uid for uid, _ in frame.references)
        series.update(frame.series)
    return ReadSeg(
        referenced_series_uids=frozenset(series),
        referenced_instance_uids=frozenset(instances),
        frame_of_reference_uid=str(seg.FrameOfReferenceUID) if seg.get("FrameOfReferenceUID") else None,
        segments=segments,
        segmentation_type=segmentation_type,
        _seg=seg,
        _has_frame_references=any(frame.references for frame in frames),
        _loose_frames=_loose_frames(frames),
    )


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Frame:
    number: int
    segment: int | None
    position: tuple[float, float, float] | None
    references: tuple[tuple[str, str | None], ...]  # (SOP Instance UID, Spatial Locations Preserved)
    series: frozenset[str]  # Series Instance UIDs some writers add to the source items (not in the standard)


def _segment_info(item: Dataset) -> SegmentInfo:
    number = int(item.SegmentNumber)
    where = f"segment {number}"
    for keyword in ("SegmentedPropertyCategoryCodeSequence", "SegmentedPropertyTypeCodeSequence"):
        if not item.get(keyword):
            raise SegError(f"{where} has no {keyword}")
    regions = item.get("AnatomicRegionSequence") or []
    lab = item.get("RecommendedDisplayCIELabValue")
    return SegmentInfo(
        number=number,
        label=str(item.get("SegmentLabel", "")),
        category=_code(item.SegmentedPropertyCategoryCodeSequence[0], where),
        type=_code(item.SegmentedPropertyTypeCodeSequence[0], where),
        region=_code(regions[0], where) if regions else None,
        colour=_srgb(lab, where) if lab is not None else None,
        algorithm_type=str(item.get("SegmentAlgorithmType", "")),
    )


def _code(item: Dataset, where: str) -> Code:
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    if not value or not item.get("CodingSchemeDesignator"):
        raise SegError(f"{where} has a code without a value or coding scheme")
    version = item.get("CodingSchemeVersion")
    return Code(str(value), str(item.CodingSchemeDesignator), str(item.get("CodeMeaning", "")), version or None)


def _srgb(lab: Sequence[int], where: str) -> tuple[int, int, int]:
    try:
        r, g, b = hd.color.CIELabColor.from_dicom_value([int(v) for v in lab]).to_rgb()
    except (ValueError, TypeError) as error:
        raise SegError(f"{where} has an unusable RecommendedDisplayCIELabValue: {error}") from error
    return int(r), int(g), int(b)


def _frames(seg: Dataset, described: set[int], *, labelmap: bool) -> Iterator[_Frame]:
    """Each frame's segment, position and source references; refuses what could never be placed."""
    per_frame = seg.PerFrameFunctionalGroupsSequence
    if len(per_frame) != int(seg.get("NumberOfFrames") or 1):
        raise SegError(f"the SEG has {seg.get('NumberOfFrames')} frames but {len(per_frame)} per-frame items")
    shared = seg.SharedFunctionalGroupsSequence[0]
    shared_position = _position(shared)
    shared_segment = _segment_number(shared)
    for number, item in enumerate(per_frame, start=1):
        segment = None if labelmap else (_segment_number(item) or shared_segment)
        if not labelmap and segment not in described:
            raise SegError(f"frame {number} belongs to segment {segment}, which the Segment Sequence does not describe")
        references = tuple(_source_references(item))
        for _, preserved in references:
            if preserved not in _ALIGNED:
                raise SegError(
                    f"frame {number} says Spatial Locations Preserved {preserved}: its pixels do not lie on its "
                    "source image's grid, so it cannot be read as a mask of that image"
                )
        position = _position(item) or shared_position
        if not references and position is None:
            raise SegError(
                f"frame {number} has neither a source image reference nor a plane position: it cannot be placed"
            )
        series = frozenset(
            str(source.SeriesInstanceUID)
            for derivation in item.get("DerivationImageSequence") or []
            for source in derivation.get("SourceImageSequence") or []
            if source.get("SeriesInstanceUID")
        )
        yield _Frame(number, segment, position, references, series)


def _source_references(item: Dataset) -> Iterator[tuple[str, str | None]]:
    for derivation in item.get("DerivationImageSequence") or []:
        for source in derivation.get("SourceImageSequence") or []:
            uid = source.get("ReferencedSOPInstanceUID")
            if uid:
                preserved = source.get("SpatialLocationsPreserved")
                yield str(uid), str(preserved) if preserved else None


def _position(item: Dataset) -> tuple[float, float, float] | None:
    plane = item.get("PlanePositionSequence")
    if not plane or not plane[0].get("ImagePositionPatient"):
        return None
    x, y, z = (float(v) for v in plane[0].ImagePositionPatient)
    return x, y, z


def _segment_number(item: Dataset) -> int | None:
    identification = item.get("SegmentIdentificationSequence")
    if not identification or identification[0].get("ReferencedSegmentNumber") is None:
        return None
    return int(identification[0].ReferencedSegmentNumber)


def _root_references(seg: Dataset) -> tuple[set[str], set[str]]:
    """Instances and series named by the Referenced Series Sequence, this study's and other studies'."""
    instances: set[str] = set()
    series: set[str] = set()
    series_items = list(seg.get("ReferencedSeriesSequence") or [])
    for study in seg.get("StudiesContainingOtherReferencedInstancesSequence") or []:
        series_items.extend(study.get("ReferencedSeriesSequence") or [])
    for item in series_items:
        if item.get("SeriesInstanceUID"):
            series.add(str(item.SeriesInstanceUID))
        for instance in item.get("ReferencedInstanceSequence") or []:
            if instance.get("ReferencedSOPInstanceUID"):
                instances.add(str(instance.ReferencedSOPInstanceUID))
    return instances, series


def _loose_frames(frames: list[_Frame]) -> tuple[_LooseFrame, ...]:
    """Frames without a source reference, each tied to the instance a sibling at its position references."""
    loose = [frame for frame in frames if not frame.references]
    if not loose:
        return ()
    by_position: dict[tuple[float, float, float], set[str]] = {}
    for frame in frames:
        if frame.references and frame.position is not None:
            by_position.setdefault(_key(frame.position), set()).update(uid for uid, _ in frame.references)
    out = []
    for frame in loose:
        assert frame.position is not None  # refused in _frames otherwise
        candidates = by_position.get(_key(frame.position), set())
        instance = next(iter(candidates)) if len(candidates) == 1 else None
        out.append(_LooseFrame(frame.number, frame.segment, frame.position, instance))
    return tuple(out)


def _key(position: tuple[float, float, float]) -> tuple[float, float, float]:
    x, y, z = (round(v, 2) for v in position)
    return x, y, z


def _nearest(positions: npt.NDArray[np.float64], position: tuple[float, float, float]) -> int | None:
    distance = np.abs(positions - np.asarray(position)).max(axis=1)
    index = int(np.argmin(distance))
    return index if distance[index] <= _POSITION_TOLERANCE else None
