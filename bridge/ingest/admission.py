"""Checks an instance must pass before it is de-identified and stored; each failure is a quarantine reason.

Reasons name attributes and rules, never values: they are shown to operators and stored in the index.
"""

from __future__ import annotations

import re

from pydicom.dataset import FileDataset
from pydicom.tag import BaseTag
from pydicom.uid import UID

from bridge.dicom import status
from bridge.dicom.elements import number_of, tag_of, text_of, value_length, value_of
from bridge.errors import MalformedInstance, Refused

# tags as constants: `text_of(ds, TAG)` skips the keyword look-up of `ds.get("Keyword")`
_REQUIRED = {k: tag_of(k) for k in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")}
_SOP_CLASS, _PATIENT_ID, _ROWS, _COLUMNS = (tag_of(k) for k in ("SOPClassUID", "PatientID", "Rows", "Columns"))
_SAMPLES, _FRAMES, _BITS = (tag_of(k) for k in ("SamplesPerPixel", "NumberOfFrames", "BitsAllocated"))
_BURNED_IN, _MODALITY, _IMAGE_TYPE = (tag_of(k) for k in ("BurnedInAnnotation", "Modality", "ImageType"))
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_SCREEN_CAPTURE_MODALITIES = frozenset({"US", "SC", "XC", "OT"})
_SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
_PIXEL_DATA = BaseTag(0x7FE00010)
_MEDIA_SOP_CLASS, _TRANSFER_SYNTAX = BaseTag(0x00020002), BaseTag(0x00020010)
_PIXEL_DATA_TAGS = (_PIXEL_DATA, BaseTag(0x7FE00008), BaseTag(0x7FE00009))
# every element of the dataset that check_instance and check_request look at (the file meta aside)
CHECKED_TAGS = frozenset(
    {*_REQUIRED.values(), _PATIENT_ID, _ROWS, _COLUMNS, _SAMPLES, _FRAMES, _BITS, *_PIXEL_DATA_TAGS}
)


def check_instance(ds: FileDataset) -> None:
    """Raise Refused unless the instance is complete enough to de-identify, route and index."""
    for keyword, tag in _REQUIRED.items():
        value = text_of(ds, tag).strip("\x00 ")
        if not value:
            raise Refused(f"missing {keyword}")
        if len(value) > 64 or not _UID.match(value):
            raise Refused(f"invalid UID in {keyword}")
    sop_class = text_of(ds, _SOP_CLASS)
    if _MEDIA_SOP_CLASS in ds.file_meta and text_of(ds.file_meta, _MEDIA_SOP_CLASS) != sop_class:
        raise Refused("SOPClassUID differs from MediaStorageSOPClassUID in the file meta", mismatch=True)
    if not text_of(ds, _PATIENT_ID).strip():
        raise Refused("missing PatientID: cannot assign a subject")
    _check_pixel_data(ds)


def _check_pixel_data(ds: FileDataset) -> None:
    sop_class = UID(text_of(ds, _SOP_CLASS))
    if "Image Storage" in sop_class.name and _PIXEL_DATA not in ds:
        raise Refused(f"no Pixel Data in an instance of {sop_class.name}", mismatch=True)
    if _ROWS not in ds or _COLUMNS not in ds:
        return
    if not any(tag in ds for tag in _PIXEL_DATA_TAGS):
        raise Refused("image attributes (Rows, Columns) without Pixel Data: truncated or incomplete", mismatch=True)
    if _PIXEL_DATA not in ds or UID(text_of(ds.file_meta, _TRANSFER_SYNTAX)).is_compressed:
        return
    try:
        rows, columns = int(number_of(ds, _ROWS)), int(number_of(ds, _COLUMNS))
        samples = int(number_of(ds, _SAMPLES) or 1)
        frames = int(number_of(ds, _FRAMES) or 1)
        bits = int(number_of(ds, _BITS))
    except (AttributeError, TypeError, ValueError):
        raise Refused("Image Pixel attributes missing or not numbers") from None
    pixels = rows * columns * samples * frames
    expected = (pixels + 7) // 8 if bits == 1 else pixels * bits // 8
    actual = value_length(ds, _PIXEL_DATA)
    if actual < expected:
        raise Refused(f"truncated: Pixel Data has {actual} bytes, the image attributes need {expected}")


def check_request(ds: FileDataset, *, sop_class_uid: str, sop_instance_uid: str) -> None:
    """The dataset must be the instance the C-STORE request announced."""
    if text_of(ds, _SOP_CLASS) != sop_class_uid:
        raise Refused("SOPClassUID differs from the C-STORE Affected SOP Class UID", mismatch=True)
    if text_of(ds, _REQUIRED["SOPInstanceUID"]) != sop_instance_uid:
        raise Refused("SOPInstanceUID differs from the C-STORE Affected SOP Instance UID", mismatch=True)


def check_study(ds: FileDataset, study_uid: str) -> None:
    """The dataset must belong to the study the request named (STOW-RS to /studies/{study})."""
    if text_of(ds, _REQUIRED["StudyInstanceUID"]) != study_uid:
        raise Refused("StudyInstanceUID differs from the study of the STOW-RS request", mismatch=True)


def burned_in_reason(ds: FileDataset) -> str | None:
    """Why the pixels may carry burned-in PHI, or None (PS3.15: Burned In Annotation, capture modalities)."""
    flag = text_of(ds, _BURNED_IN).strip().upper()
    if flag == "YES":
        return "burned-in annotation: BurnedInAnnotation is YES"
    if flag == "NO" or _PIXEL_DATA not in ds:
        return None
    modality = text_of(ds, _MODALITY).upper()
    if modality in _SCREEN_CAPTURE_MODALITIES:
        return f"possible burned-in annotation: {modality} without BurnedInAnnotation"
    if text_of(ds, _SOP_CLASS).startswith(_SECONDARY_CAPTURE_PREFIX):
        return "possible burned-in annotation: secondary capture without BurnedInAnnotation"
    image_type = [str(v).upper() for v in (value_of(ds, _IMAGE_TYPE) or [])]
    if image_type[:2] == ["DERIVED", "SECONDARY"] and any("SCREEN" in v for v in image_type):
        return "possible burned-in annotation: screen capture without BurnedInAnnotation"
    return None


def status_for(problem: Exception) -> int:
    """The failure status for a refused instance: A9xx when it contradicts its SOP class, C0xx otherwise."""
    if isinstance(problem, Refused) and problem.mismatch:
        return status.DATASET_DOES_NOT_MATCH_SOP_CLASS
    if isinstance(problem, (Refused, MalformedInstance)):
        return status.CANNOT_UNDERSTAND
    return status.PROCESSING_FAILURE
