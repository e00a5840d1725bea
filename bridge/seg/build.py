"""Build a BINARY DICOM SEG of reviewed masks over one single-frame CT/MR/PT series, with highdicom.

The bridge's own SEGs are always BINARY, Explicit VR Little Endian, empty frames omitted (DESIGN: many receivers
refuse the LABELMAP SOP class). highdicom does the IOD (frames, positions, per-frame source references); this
module checks the inputs with messages a person can act on, and adds what highdicom leaves to the caller: who
drew the segments, and the Clinical Trial Series attributes and the time point label of the research side.

Messages name sources by their index and segments by number and label, never by UID or patient attribute.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.charset import convert_encodings
from pydicom.dataset import Dataset
from pydicom.sr.coding import Code
from pydicom.uid import (
    UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
)

__all__ = ["SegMeta", "SegmentSpec", "build_seg", "MANUFACTURER"]

MANUFACTURER = "pacs-bridge"
_MODEL_NAME = "pacs-bridge"
# Enhanced General Equipment makes the serial number Type 1; software has none, so a fixed token.
_DEVICE_SERIAL_NUMBER = "0"
_SOURCE_CLASSES = frozenset({CTImageStorage, MRImageStorage, PositronEmissionTomographyImageStorage})
_ORIENTATION_TOLERANCE = 1e-4  # direction cosines
_SPACING_TOLERANCE = 1e-4  # mm
_UID_PATTERN = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+")  # PS3.5 9.1; pydicom's UID() only warns

# highdicom copies the Patient and Study IE modules (so Clinical Trial Subject / Study and the de-identification
# attributes) from the first source; these are checked afterwards and copied where it did not.
_SUBJECT_AND_STUDY_KEYWORDS = (
    "PatientIdentityRemoved",
    "DeidentificationMethod",
    "DeidentificationMethodCodeSequence",
    "ClinicalTrialSponsorName",
    "ClinicalTrialProtocolID",
    "IssuerOfClinicalTrialProtocolID",
    "ClinicalTrialProtocolName",
    "OtherClinicalTrialProtocolIDsSequence",
    "ClinicalTrialSiteID",
    "IssuerOfClinicalTrialSiteID",
    "ClinicalTrialSiteName",
    "ClinicalTrialSubjectID",
    "IssuerOfClinicalTrialSubjectID",
    "ClinicalTrialSubjectReadingID",
    "IssuerOfClinicalTrialSubjectReadingID",
    "ClinicalTrialProtocolEthicsCommitteeName",
    "ClinicalTrialProtocolEthicsCommitteeApprovalNumber",
    "ClinicalTrialTimePointID",
    "IssuerOfClinicalTrialTimePointID",
    "ClinicalTrialTimePointDescription",
    "ClinicalTrialTimePointTypeCodeSequence",
    "LongitudinalTemporalOffsetFromEvent",
    "LongitudinalTemporalEventType",
    "ConsentForClinicalTrialUseSequence",
)
# Clinical Trial Series is a Series IE module, which highdicom does not copy (the SEG is a new series).
_TRIAL_SERIES_KEYWORDS = (
    "ClinicalTrialCoordinatingCenterName",
    "ClinicalTrialSeriesID",
    "IssuerOfClinicalTrialSeriesID",
    "ClinicalTrialSeriesDescription",
)
#: What a SEG carries of the research side (pseudonyms, trial and de-identification attributes): what
#: re-identification removes.
RESEARCH_SIDE_KEYWORDS = (
    *_SUBJECT_AND_STUDY_KEYWORDS,
    *_TRIAL_SERIES_KEYWORDS,
    "LongitudinalTemporalInformationModified",
)


@dataclass(frozen=True)
class SegmentSpec:
    """One segment to write: a boolean mask (slices in the order of the sources) and its coded meaning."""

    label: str
    mask: npt.NDArray[np.bool_]  # (slices, rows, columns)
    category: Code  # e.g. codes.SCT.MorphologicallyAbnormalStructure
    type: Code  # e.g. codes.SCT.Neoplasm
    colour: tuple[int, int, int]  # sRGB 0-255, written as RecommendedDisplayCIELabValue
    region: Code | None = None  # anatomic region, where given


@dataclass(frozen=True)
class SegMeta:
    """What the caller decides about the SEG instance: identity, author, labels."""

    series_instance_uid: str
    sop_instance_uid: str
    series_number: int
    series_description: str
    annotator: str  # who drew it; a DICOM person name such as "DOE^JANE" or a user name
    content_label: str  # CS: upper case, digits, space, underscore; at most 16 characters
    timepoint_label: str | None  # written as ClinicalTrialTimePointID
    software_version: str


def build_seg(
    sources: Sequence[Dataset],
    segments: Sequence[SegmentSpec],
    meta: SegMeta,
    *,
    omit_empty_frames: bool = True,
) -> Dataset:
    """Return a BINARY SEG over ``sources`` with one segment per spec, numbered 1..n in the order given.

    Every segment is MANUAL and names ``meta.annotator`` as its content creator (as does the instance).
    A segment whose mask is empty is allowed and kept in the Segment Sequence (with no frames): an expert's
    "nothing here" at a time point is a result, and dropping it would renumber the others. If every mask is
    empty, highdicom keeps all frames (a SEG cannot have none). Raises ValueError on unusable inputs.
    """
    rows, columns, charsets = _check_sources(sources)
    _check_meta(meta, sources, charsets)
    _check_segments(segments, len(sources), rows, columns, charsets)
    descriptions = [_describe(number, spec, meta.annotator) for number, spec in enumerate(segments, start=1)]
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=_stack(segments),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=meta.series_instance_uid,
        series_number=meta.series_number,
        sop_instance_uid=meta.sop_instance_uid,
        instance_number=1,  # one SEG revision per series (DESIGN)
        manufacturer=MANUFACTURER,
        manufacturer_model_name=_MODEL_NAME,
        software_versions=meta.software_version,
        device_serial_number=_DEVICE_SERIAL_NUMBER,
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=omit_empty_frames,
        content_label=meta.content_label,
        content_creator_name=meta.annotator,
        series_description=meta.series_description,
    )
    _unshare(seg, sources[0])
    _copy_trial_attributes(seg, sources[0], meta.timepoint_label)
    return seg


def _unshare(seg: Dataset, source: Dataset) -> None:
    """Give the SEG its own copies of the elements highdicom took over from the source by reference.

    highdicom copies the Patient and Study modules as the source's very DataElement objects; setting the time
    point label (or a later re-identification of the SEG) would otherwise change the caller's source images.
    """
    for element in list(seg):
        if element.tag in source and source[element.tag] is element:
            seg[element.tag] = copy.deepcopy(element)


def _stack(segments: Sequence[SegmentSpec]) -> npt.NDArray[np.bool_] | npt.NDArray[np.uint8]:
    """The array highdicom wants, with at most one copy of the masks: a label map (slices, rows, columns)
    of segment numbers when no two segments overlap (highdicom's checks of a boolean stack cost several
    times the rest of the build), else (slices, rows, columns, segments) booleans.

    The boolean copy is laid out segment-major and handed over as a transposed view, so that every frame
    highdicom cuts out (one slice of one segment) is contiguous; one segment needs no copy at all.
    """
    if len(segments) == 1:
        return segments[0].mask[..., np.newaxis]
    labels = _label_map(segments)
    if labels is not None:
        return labels
    first = segments[0].mask
    stacked = np.empty((len(segments), *first.shape), dtype=np.bool_)
    for index, spec in enumerate(segments):
        stacked[index] = spec.mask
    return stacked.transpose(1, 2, 3, 0)


def _label_map(segments: Sequence[SegmentSpec]) -> npt.NDArray[np.uint8] | None:
    """Segment numbers (0: none) per voxel, or None when segments overlap (or are too many for a byte).
    Only the slices a segment has voxels on are touched: annotations are sparse."""
    if len(segments) > 255:
        return None
    labels = np.zeros(segments[0].mask.shape, dtype=np.uint8)
    for number, spec in enumerate(segments, start=1):
        for index in np.flatnonzero(spec.mask.any(axis=(1, 2))):
            plane, drawn = labels[index], spec.mask[index]
            if plane[drawn].any():
                return None
            plane[drawn] = number
    return labels


def _describe(number: int, spec: SegmentSpec, annotator: str) -> hd.seg.SegmentDescription:
    description = hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=spec.label,
        segmented_property_category=spec.category,
        segmented_property_type=spec.type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        anatomic_regions=[spec.region] if spec.region is not None else None,
        display_color=hd.color.CIELabColor.from_rgb(*spec.colour),
    )
    # The Segment Description macro names a creator per segment (Type 3); Segment Algorithm Name would be
    # the other candidate, but the standard forbids it for MANUAL segments (dciodvfy: "present when condition
    # unsatisfied").
    description.ContentCreatorName = annotator
    return description


def _copy_trial_attributes(seg: Dataset, source: Dataset, timepoint_label: str | None) -> None:
    """Carry the research side's trial and de-identification attributes over, and the time point label."""
    for keyword in _SUBJECT_AND_STUDY_KEYWORDS:
        if keyword in source and keyword not in seg:
            seg[keyword] = copy.deepcopy(source[keyword])
    if any(keyword in source for keyword in _TRIAL_SERIES_KEYWORDS):
        for keyword in _TRIAL_SERIES_KEYWORDS:
            if keyword in source:
                seg[keyword] = copy.deepcopy(source[keyword])
        if "ClinicalTrialCoordinatingCenterName" not in seg:
            seg.ClinicalTrialCoordinatingCenterName = ""  # Type 2 once the module is present
    if timepoint_label is not None:
        seg.ClinicalTrialTimePointID = timepoint_label


# --------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------


def _check_sources(sources: Sequence[Dataset]) -> tuple[int, int, list[str]]:
    """Sources must be one series of single-frame CT/MR/PT images on one grid; returns rows, columns, codecs."""
    if len(sources) == 0:
        raise ValueError("At least one source image is required: pass the images of the annotated series.")
    for index, ds in enumerate(sources):
        if not isinstance(ds, Dataset):
            raise ValueError(f"sources[{index}] is a {type(ds).__name__}, not a pydicom Dataset")
        sop_class = UID(str(ds.get("SOPClassUID", "")))
        if sop_class not in _SOURCE_CLASSES:
            name = sop_class.name if sop_class else "no SOP Class UID"
            raise ValueError(f"sources[{index}] is {name}; a SEG is built over single-frame CT, MR or PET images only")
        if int(ds.get("NumberOfFrames") or 1) != 1:
            raise ValueError(f"sources[{index}] has {ds.NumberOfFrames} frames; only single-frame images are supported")
        for keyword in (
            "SOPInstanceUID",
            "SeriesInstanceUID",
            "Rows",
            "Columns",
            "FrameOfReferenceUID",
            "ImagePositionPatient",
            "ImageOrientationPatient",
            "PixelSpacing",
        ):
            if ds.get(keyword) in (None, ""):
                raise ValueError(f"sources[{index}] has no {keyword}; the SEG could not be placed on it")
    first = sources[0]
    series = {str(ds.SeriesInstanceUID) for ds in sources}
    if len(series) > 1:
        raise ValueError(f"sources span {len(series)} series; a SEG covers exactly one series")
    if len({str(ds.SOPInstanceUID) for ds in sources}) != len(sources):
        raise ValueError("sources contain the same SOP instance more than once")
    for index, ds in enumerate(sources):
        if (int(ds.Rows), int(ds.Columns)) != (int(first.Rows), int(first.Columns)):
            raise ValueError(
                f"sources[{index}] is {ds.Rows}x{ds.Columns} but sources[0] is {first.Rows}x{first.Columns} "
                "(rows x columns); all images of the series must have one size"
            )
        if str(ds.FrameOfReferenceUID) != str(first.FrameOfReferenceUID):
            raise ValueError(f"sources[{index}] has another Frame of Reference UID than sources[0]")
        if not _close(ds.ImageOrientationPatient, first.ImageOrientationPatient, _ORIENTATION_TOLERANCE):
            raise ValueError(
                f"sources[{index}] has another Image Orientation (Patient) than sources[0]; "
                "a SEG frame grid needs one orientation for the whole series"
            )
        if not _close(ds.PixelSpacing, first.PixelSpacing, _SPACING_TOLERANCE):
            raise ValueError(f"sources[{index}] has another Pixel Spacing than sources[0]")
    return int(first.Rows), int(first.Columns), _codecs(first)


def _check_segments(segments: Sequence[SegmentSpec], slices: int, rows: int, columns: int, charsets: list[str]) -> None:
    if len(segments) == 0:
        raise ValueError("At least one segment is required.")
    labels: set[str] = set()
    for number, spec in enumerate(segments, start=1):
        name = f"segment {number} ({spec.label!r})"
        _check_text(f"{name}: label", spec.label, 64, charsets)
        if spec.label in labels:
            raise ValueError(f"{name}: label used by an earlier segment; segment labels must be unique")
        labels.add(spec.label)
        mask = spec.mask
        if not isinstance(mask, np.ndarray):
            raise ValueError(f"{name}: mask is a {type(mask).__name__}, not a numpy array")
        if mask.dtype != np.bool_:
            raise ValueError(
                f"{name}: mask has dtype {mask.dtype}, not bool; convert it deliberately (e.g. mask > 0.5) "
                "so that no voxel is guessed"
            )
        if mask.shape != (slices, rows, columns):
            raise ValueError(
                f"{name}: mask has shape {mask.shape} but the sources need (slices, rows, columns) = "
                f"({slices}, {rows}, {columns}), slices in the order of the sources"
            )
        for attribute in ("category", "type"):
            if not isinstance(getattr(spec, attribute), Code):
                raise ValueError(f"{name}: {attribute} must be a pydicom Code (e.g. from pydicom.sr.codedict.codes)")
        if spec.region is not None and not isinstance(spec.region, Code):
            raise ValueError(f"{name}: region must be a pydicom Code or None")
        colour = spec.colour
        if (
            not isinstance(colour, tuple)
            or len(colour) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in colour)
        ):
            raise ValueError(f"{name}: colour must be an sRGB tuple of three integers 0-255, got {colour!r}")


def _check_meta(meta: SegMeta, sources: Sequence[Dataset], charsets: list[str]) -> None:
    for attribute in ("series_instance_uid", "sop_instance_uid"):
        value = getattr(meta, attribute)
        if not isinstance(value, str) or len(value) > 64 or not _UID_PATTERN.fullmatch(value):
            raise ValueError(f"SegMeta.{attribute} {value!r} is not a valid UID")
    if meta.series_instance_uid == meta.sop_instance_uid:
        raise ValueError("SegMeta.series_instance_uid and sop_instance_uid must differ")
    if meta.series_instance_uid == str(sources[0].SeriesInstanceUID):
        raise ValueError("SegMeta.series_instance_uid is the source series' UID; a SEG is a series of its own")
    if any(meta.sop_instance_uid == str(ds.SOPInstanceUID) for ds in sources):
        raise ValueError("SegMeta.sop_instance_uid is the UID of one of the sources")
    if isinstance(meta.series_number, bool) or not isinstance(meta.series_number, int):
        raise ValueError(f"SegMeta.series_number must be an int, got {meta.series_number!r}")
    if not 1 <= meta.series_number <= 2**31 - 1:
        raise ValueError(f"SegMeta.series_number {meta.series_number} is out of range 1..2147483647")
    _check_text("SegMeta.series_description", meta.series_description, 64, charsets, allow_empty=True)
    _check_person_name(meta.annotator, charsets)
    label = meta.content_label
    if (
        not isinstance(label, str)
        or not 1 <= len(label) <= 16
        or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_ " for c in label)
        or not label.strip()
    ):
        raise ValueError(
            f"SegMeta.content_label {label!r} is not a DICOM CS value: 1-16 characters of A-Z, 0-9, "
            "underscore and space (e.g. 'TUMOUR_BASELINE')"
        )
    if meta.timepoint_label is not None:
        _check_text("SegMeta.timepoint_label", meta.timepoint_label, 64, charsets)
    _check_text("SegMeta.software_version", meta.software_version, 64, charsets)


def _check_person_name(value: str, charsets: list[str]) -> None:
    """A PN value dciodvfy accepts: at most 3 component groups of at most 5 components and 64 characters."""
    what = "SegMeta.annotator"
    _check_text(what, value, 64 * 3 + 2, charsets)
    groups = value.split("=")
    if len(groups) > 3:
        raise ValueError(f"{what} has {len(groups)} '='-separated groups; a person name has at most 3")
    for group in groups:
        if group.count("^") > 4:
            raise ValueError(f"{what} has more than 5 '^'-separated components (family^given^middle^prefix^suffix)")
        if len(group) > 64:
            raise ValueError(f"{what} has a component group longer than 64 characters")


def _check_text(what: str, value: object, max_length: int, charsets: list[str], *, allow_empty: bool = False) -> None:
    """An LO/PN-like value: a string, short enough, one value (no backslash), no control characters,
    encodable in the character set the SEG inherits from its sources."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"{what} is empty")
    if len(value) > max_length:
        raise ValueError(f"{what} is {len(value)} characters long; at most {max_length} are allowed")
    if "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{what} contains a backslash or a control character")
    if not _encodable(value, charsets):
        raise ValueError(f"{what} has characters that the sources' character set ({', '.join(charsets)}) cannot encode")


def _codecs(source: Dataset) -> list[str]:
    """Python codecs of the sources' Specific Character Set, which highdicom gives the SEG."""
    value = source.get("SpecificCharacterSet")
    if not value:
        return ["ascii"]  # the DICOM default repertoire
    names = [value] if isinstance(value, str) else [str(v) for v in value]
    # pydicom calls the default repertoire (ISO_IR 6, or an empty first value) "iso8859"; DICOM means ASCII
    return ["ascii" if codec == "iso8859" else codec for codec in convert_encodings(names)]


def _encodable(value: str, codecs: list[str]) -> bool:
    for codec in codecs:
        try:
            value.encode(codec)
        except (UnicodeEncodeError, LookupError):
            continue
        return True
    return False


def _close(a: Sequence[float], b: Sequence[float], tolerance: float) -> bool:
    return len(a) == len(b) and all(
        math.isclose(float(x), float(y), abs_tol=tolerance) for x, y in zip(a, b, strict=True)
    )
