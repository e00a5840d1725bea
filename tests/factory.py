"""Synthetic, standard-conformant DICOM for the pacs-bridge test-suite.

Every test that needs DICOM input builds it here, so that the rest of the
suite never depends on binary fixtures and every object carries fresh UIDs
(``pydicom.uid.generate_uid``).  The objects are deliberately "full": they
carry the identifying attributes a de-identifier must handle (names, IDs,
dates, institution, operators, device serials, ...) and they pass
``dciodvfy -new`` (dicom3tools) without errors, which ``test_factory.py``
checks.

Everything except the UIDs is deterministic: the same arguments give the
same names, dates and pixel values.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComprehensiveSRStorage,
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    generate_uid,
)

__all__ = [
    "DEFAULT_STUDY_DATE",
    "JAPANESE_NAME",
    "UTF8_NAME",
    "PatientSpec",
    "make_patient",
    "make_ct",
    "make_mr",
    "make_pt",
    "make_image",
    "make_series",
    "make_study",
    "make_corpus",
    "make_sr",
    "make_seg",
    "write_files",
    "with_private_tags",
    "with_charset",
    "PRIVATE_CREATOR",
]

DEFAULT_STUDY_DATE = "20240105"
#: Private creator used by :func:`with_private_tags`.
PRIVATE_CREATOR = "ACME 1.0"
#: PS3.5 H.3.1 example name; needs ``\ISO 2022 IR 87``.
JAPANESE_NAME = "Yamada^Tarou=山田^太郎=やまだ^たろう"
#: A name that is only encodable in a Unicode/Latin character set.
UTF8_NAME = "Müller^Jürgen"

_IMPLEMENTATION_VERSION = "PACSBRIDGE_TEST"
_UNCOMPRESSED = {
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
}


# --------------------------------------------------------------------------
# Patients
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class PatientSpec:
    """Identity of one synthetic patient; the values a de-identifier must hide."""

    patient_id: str
    name: str
    birth_date: str  # YYYYMMDD
    sex: str  # M, F or O
    issuer: str = "HOSP"
    weight_kg: float | None = 72.5
    size_m: float | None = 1.78
    ethnic_group: str | None = None
    comments: str | None = None
    other_patient_ids: tuple[str, ...] = field(default_factory=tuple)


_FAMILY = ("DOE", "O'BRIEN", "VAN DER BERG", "SMITH-JONES", "NGUYEN", "GARCÍA")
_GIVEN = ("JOHN", "MARY ANNE", "PIERRE", "AOIFE", "LI", "JOSÉ")
_MIDDLE = ("Q", "", "JEAN", "", "T", "")


def make_patient(n: int) -> PatientSpec:
    """Return the deterministic patient number ``n``; distinct ``n`` give distinct IDs and names.

    The names deliberately contain apostrophes, spaces, hyphens and (for some
    ``n``) Latin-1 letters, so that matching/redaction code is exercised on
    more than plain ``DOE^JOHN``.
    """
    i = n % len(_FAMILY)
    birth = date(1940 + (n * 7) % 60, 1 + (n * 5) % 12, 1 + (n * 11) % 28)
    name = f"{_FAMILY[i]}^{_GIVEN[i]}{n}"
    if _MIDDLE[i]:
        name += f"^{_MIDDLE[i]}"
    return PatientSpec(
        patient_id=f"PID{n:06d}",
        name=name,
        birth_date=birth.strftime("%Y%m%d"),
        sex=("M", "F", "O")[n % 3] if n % 7 == 6 else ("M", "F")[n % 2],
        weight_kg=round(55.0 + (n * 3.7) % 40, 1),
        size_m=round(1.55 + (n * 0.037) % 0.4, 2),
        comments=f"Synthetic test patient {n}; call {_GIVEN[i].title()} on +1-555-01{n % 100:02d}",
        other_patient_ids=(f"MRN-{n:05d}-X",),
    )


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _d(value: str) -> date:
    return datetime.strptime(value, "%Y%m%d").date()


def _age(birth_date: str, on: str) -> str | None:
    """DICOM AS string (e.g. '045Y') of the patient on the study date."""
    if not birth_date:
        return None
    b, d = _d(birth_date), _d(on)
    years = d.year - b.year - ((d.month, d.day) < (b.month, b.day))
    return f"{max(years, 0):03d}Y"


def _seed(*parts: object) -> int:
    """Stable seed (Python's hash() is salted per process)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def _digits(uid: str, n: int) -> str:
    """Short stable decimal token derived from a UID (for accession/study IDs)."""
    return str(int(hashlib.sha1(uid.encode()).hexdigest(), 16))[-n:]


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def _add_time(hhmmss: str, seconds: int) -> str:
    t = datetime.strptime(hhmmss[:6], "%H%M%S") + timedelta(seconds=seconds)
    return t.strftime("%H%M%S")


def _file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    return meta


def _apply_overrides(ds: Dataset, overrides: dict[str, Any]) -> None:
    """Set keyword=value on ``ds``; a value of ``None`` deletes the element.

    Lets edge-case tests tweak any attribute without a dedicated parameter.
    """
    for keyword, value in overrides.items():
        if value is None:
            if keyword in ds:
                delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)


def _sync_meta(ds: Dataset) -> None:
    """Keep file meta consistent with the dataset after overrides."""
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


# --------------------------------------------------------------------------
# Common modules
# --------------------------------------------------------------------------


def _patient_modules(ds: Dataset, patient: PatientSpec, study_date: str) -> None:
    """Patient + Patient Study modules."""
    ds.PatientName = patient.name
    ds.PatientID = patient.patient_id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    if patient.other_patient_ids:
        items = []
        for other in patient.other_patient_ids:
            item = Dataset()
            item.PatientID = other
            item.IssuerOfPatientID = f"{patient.issuer}-ALT"
            item.TypeOfPatientID = "TEXT"
            items.append(item)
        ds.OtherPatientIDsSequence = items
    if patient.ethnic_group:
        ds.EthnicGroup = patient.ethnic_group
    if patient.comments:
        ds.PatientComments = patient.comments
    age = _age(patient.birth_date, study_date)
    if age:
        ds.PatientAge = age
    if patient.size_m is not None:
        ds.PatientSize = patient.size_m
    if patient.weight_kg is not None:
        ds.PatientWeight = patient.weight_kg


def _study_module(
    ds: Dataset,
    study_uid: str,
    study_date: str,
    study_time: str,
    accession_number: str | None,
    study_description: str,
) -> None:
    """General Study module."""
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession_number if accession_number is not None else "A" + _digits(study_uid, 10)
    ds.ReferringPhysicianName = "WELBY^MARCUS^^DR"
    ds.StudyID = "S" + _digits(study_uid + "id", 8)
    ds.StudyDescription = study_description


def _series_module(
    ds: Dataset,
    modality: str,
    series_uid: str,
    series_number: int,
    series_date: str,
    series_time: str,
    series_description: str,
    body_part: str,
) -> None:
    """General Series module (also used, minus imaging bits, by SR/SEG)."""
    ds.Modality = modality
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDate = series_date
    ds.SeriesTime = series_time
    ds.SeriesDescription = series_description
    ds.BodyPartExamined = body_part
    ds.OperatorsName = ["TECH^ALICE", "TECH^BOB"]
    ds.PatientPosition = "HFS"


def _equipment_module(ds: Dataset, modality: str) -> None:
    """General Equipment module; identifying site/device data."""
    ds.Manufacturer = "ACME Medical"
    ds.InstitutionName = "St. Example General Hospital"
    ds.InstitutionAddress = "1 Example Road, Springfield, 12345"
    ds.StationName = f"{modality}SCANNER01"
    ds.InstitutionalDepartmentName = "Radiology"
    ds.ManufacturerModelName = f"Synth{modality} 3000"
    ds.DeviceSerialNumber = f"SN-{modality}-0042"
    ds.SoftwareVersions = ["1.2.3", "build 456"]


def _sop_common(ds: Dataset, sop_class: str, sop_instance: str, creation_date: str) -> None:
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.InstanceCreationDate = creation_date
    ds.InstanceCreationTime = "120000"


# --------------------------------------------------------------------------
# Pixel content
# --------------------------------------------------------------------------


def _phantom(rows: int, columns: int, seed: int, max_value: int, slice_index: int) -> np.ndarray:
    """Deterministic, non-trivial uint16 image: body ellipse, 'bone' ring,
    slice-dependent lesion, gradient and seeded noise.  Values stay in
    [0, max_value] so BitsStored is honoured."""
    yy, xx = np.mgrid[0:rows, 0:columns].astype(np.float64)
    cy, cx = (rows - 1) / 2.0, (columns - 1) / 2.0
    r = np.hypot((yy - cy) / (0.42 * rows), (xx - cx) / (0.36 * columns))
    img = np.zeros((rows, columns), dtype=np.float64)
    img[r < 1.0] = 0.25 * max_value  # soft tissue
    img[(r > 0.85) & (r < 1.0)] = 0.6 * max_value  # bony rim
    # a lesion whose position depends on the slice, so slices differ
    ly = cy + 0.15 * rows * np.sin(slice_index / 3.0)
    lx = cx + 0.15 * columns * np.cos(slice_index / 3.0)
    img[np.hypot(yy - ly, xx - lx) < max(2.0, rows / 10.0)] = 0.45 * max_value
    img += (xx / max(columns - 1, 1)) * 0.05 * max_value
    rng = np.random.default_rng(seed)
    img += rng.normal(0.0, 0.01 * max_value, size=img.shape)
    return np.clip(np.rint(img), 0, max_value).astype(np.uint16)


def _set_pixels(ds: Dataset, arr: np.ndarray, bits_stored: int, transfer_syntax: str) -> None:
    """Image Pixel module + encoding into the requested transfer syntax."""
    ds.set_pixel_data(arr, "MONOCHROME2", bits_stored, generate_instance_uid=False)
    ts = UID(transfer_syntax)
    if ts == ExplicitVRBigEndian:
        # pydicom writes OW bytes verbatim, so swap them ourselves
        ds.PixelData = arr.astype(">u2").tobytes()
        ds.file_meta.TransferSyntaxUID = ts
    elif ts in _UNCOMPRESSED:
        ds.file_meta.TransferSyntaxUID = ts
    else:
        # e.g. RLELossless (native encoder); others need pydicom plugins
        ds.compress(ts, generate_instance_uid=False)


# --------------------------------------------------------------------------
# Image builders
# --------------------------------------------------------------------------

_SERIES_OFFSET_MIN = {"CT": 5, "MR": 20, "PT": 35}


def make_image(
    modality: str,
    patient: PatientSpec,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = DEFAULT_STUDY_DATE,
    instance_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 1.25,
    accession_number: str | None = None,
    study_description: str | None = None,
    series_description: str | None = None,
    *,
    series_number: int = 1,
    study_time: str = "083000",
    transfer_syntax: str = ExplicitVRLittleEndian,
    contrast_agent: str | None = None,
    **overrides: Any,
) -> Dataset:
    """Build one single-frame CT, MR or PT instance (dispatch for make_series)."""
    modality = modality.upper()
    if modality not in _SERIES_OFFSET_MIN:
        raise ValueError(f"unsupported modality {modality!r}")
    sop_class = {
        "CT": CTImageStorage,
        "MR": MRImageStorage,
        "PT": PositronEmissionTomographyImageStorage,
    }[modality]
    sop_uid = generate_uid()
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_of_reference_uid = frame_of_reference_uid or generate_uid()

    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, sop_uid, ExplicitVRLittleEndian)
    _sop_common(ds, sop_class, sop_uid, study_date)
    _patient_modules(ds, patient, study_date)
    default_study_desc = {"CT": "CT CHEST W/O CONTRAST", "MR": "MR BRAIN W/O CONTRAST", "PT": "PET/CT WHOLE BODY FDG"}
    _study_module(
        ds,
        study_uid,
        study_date,
        study_time,
        accession_number,
        study_description if study_description is not None else default_study_desc[modality],
    )
    series_time = _add_time(study_time, 60 * _SERIES_OFFSET_MIN[modality] + 60 * (series_number - 1))
    default_series_desc = {"CT": f"AXIAL {slice_thickness}MM", "MR": "AX T1 SE", "PT": "WB FDG AC"}
    body_part = {"CT": "CHEST", "MR": "HEAD", "PT": "WHOLEBODY"}[modality]
    _series_module(
        ds,
        modality,
        series_uid,
        series_number,
        study_date,
        series_time,
        series_description if series_description is not None else default_series_desc[modality],
        body_part,
    )
    ds.FrameOfReferenceUID = frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    _equipment_module(ds, modality)

    # General Image / General Acquisition
    acq_time = _add_time(series_time, 2 * instance_number)
    ds.InstanceNumber = instance_number
    ds.PatientOrientation = ""  # Type 2C; plane attributes are present
    ds.ContentDate = study_date
    ds.ContentTime = acq_time
    ds.AcquisitionNumber = 1
    ds.AcquisitionDate = study_date
    ds.AcquisitionTime = acq_time
    ds.AcquisitionDateTime = f"{study_date}{acq_time}.000000"
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = f"Synthetic {modality} slice {instance_number} for {patient.patient_id}"

    # Image Plane
    z = -100.0 + instance_number * slice_thickness
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [round(-0.35 * (columns - 1), 3), round(-0.35 * (rows - 1), 3), round(z, 4)]
    ds.SliceThickness = slice_thickness
    ds.SliceLocation = round(z, 4)

    seed = _seed(patient.patient_id, modality, instance_number, rows, columns)
    if modality == "CT":
        _ct_modules(ds, contrast_agent)
        arr, bits = _phantom(rows, columns, seed, 4095, instance_number), 12
    elif modality == "MR":
        _mr_modules(ds, slice_thickness)
        arr, bits = _phantom(rows, columns, seed, 4095, instance_number), 12
    else:
        _pt_modules(ds, patient, study_date, study_time, series_time, instance_number)
        arr, bits = _phantom(rows, columns, seed, 32000, instance_number), 16
    _set_pixels(ds, arr, bits, transfer_syntax)

    _apply_overrides(ds, overrides)
    _sync_meta(ds)
    return ds


def _ct_modules(ds: Dataset, contrast_agent: str | None) -> None:
    """CT Image (+ optional Contrast/Bolus, VOI LUT) modules."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.DataCollectionDiameter = 500
    ds.ReconstructionDiameter = 350
    ds.ExposureTime = 500
    ds.XRayTubeCurrent = 200
    ds.ConvolutionKernel = "STANDARD"
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    if contrast_agent:
        ds.ContrastBolusAgent = contrast_agent
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = 80


def _mr_modules(ds: Dataset, slice_thickness: float) -> None:
    """MR Image module (Type 1/2 acquisition parameters)."""
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = ["SK", "SP"]
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SequenceName = "se2d1"
    ds.AngioFlag = "N"
    ds.RepetitionTime = 500.0
    ds.EchoTime = 12.0
    ds.EchoTrainLength = 1
    ds.NumberOfAverages = 2
    ds.ImagingFrequency = 63.87
    ds.ImagedNucleus = "1H"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = 1.5
    ds.SpacingBetweenSlices = slice_thickness
    ds.PercentSampling = 100
    ds.PercentPhaseFieldOfView = 100
    ds.PixelBandwidth = 130
    ds.ReceiveCoilName = "HEAD"
    ds.TransmitCoilName = "BODY"
    ds.AcquisitionMatrix = [0, 256, 192, 0]
    ds.InPlanePhaseEncodingDirection = "ROW"
    ds.FlipAngle = 90
    ds.SAR = 0.5
    ds.WindowCenter = 1000
    ds.WindowWidth = 2000


def _pt_modules(
    ds: Dataset,
    patient: PatientSpec,
    study_date: str,
    study_time: str,
    series_time: str,
    instance_number: int,
) -> None:
    """PET Series, PET Isotope, NM/PET Patient Orientation and PET Image modules."""
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    # PET Series
    ds.Units = "BQML"
    ds.CountsSource = "EMISSION"
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.NumberOfSlices = 100
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
    ds.RandomsCorrectionMethod = "DLYD"
    ds.AttenuationCorrectionMethod = "CT-based"
    ds.DecayCorrection = "START"
    ds.ReconstructionMethod = "OSEM 3i21s"
    ds.CollimatorType = "NONE"
    ds.AxialAcceptance = 26
    # NM/PET Patient Orientation replaces PatientPosition for PET
    del ds.PatientPosition
    # PET Isotope
    injection_time = _add_time(study_time, -3600 if study_time >= "010000" else 0)
    radio = Dataset()
    radio.RadionuclideCodeSequence = [_code("77004003", "SCT", "^18^Fluorine")]
    radio.RadiopharmaceuticalRoute = "Intravenous route"
    radio.RadiopharmaceuticalStartTime = injection_time
    radio.RadiopharmaceuticalStartDateTime = f"{study_date}{injection_time}"
    radio.RadionuclideTotalDose = 3.7e8
    radio.RadionuclideHalfLife = 6586.2
    radio.RadionuclidePositronFraction = 0.9673
    radio.Radiopharmaceutical = "Fluorodeoxyglucose"
    radio.RadiopharmaceuticalCodeSequence = [_code("35321007", "SCT", "Fluorodeoxyglucose F^18^")]
    ds.RadiopharmaceuticalInformationSequence = [radio]
    # NM/PET Patient Orientation
    orientation = _code("102538003", "SCT", "recumbent")
    orientation.PatientOrientationModifierCodeSequence = [_code("40199007", "SCT", "supine")]
    ds.PatientOrientationCodeSequence = [orientation]
    ds.PatientGantryRelationshipCodeSequence = [_code("102540008", "SCT", "headfirst")]
    # PET Image
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 0.5 + 0.001 * instance_number  # per-slice scaling is typical for PET
    ds.FrameReferenceTime = 0
    ds.ImageIndex = instance_number
    ds.ActualFrameDuration = 180000
    ds.DecayFactor = 1.0
    ds.DoseCalibrationFactor = 1.0
    ds.ScatterFractionFactor = 0.3
    ds.DeadTimeFactor = 1.02
    ds.SliceSensitivityFactor = 1.0
    ds.WindowCenter = 8000
    ds.WindowWidth = 16000


def make_ct(
    patient: PatientSpec,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = DEFAULT_STUDY_DATE,
    instance_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 1.25,
    accession_number: str | None = None,
    study_description: str | None = "CT CHEST W/O CONTRAST",
    series_description: str | None = None,
    **overrides: Any,
) -> Dataset:
    """One CT Image Storage instance.

    Keyword-only extras (via ``**overrides``): ``series_number``,
    ``study_time``, ``transfer_syntax`` (default Explicit VR Little Endian;
    Implicit/Deflated/Big Endian/RLE Lossless work out of the box),
    ``contrast_agent``; any other ``Keyword=value`` is set on the dataset
    (``None`` deletes the element).
    """
    return make_image(
        "CT",
        patient,
        study_uid,
        series_uid,
        frame_of_reference_uid,
        study_date,
        instance_number,
        rows,
        columns,
        slice_thickness,
        accession_number,
        study_description,
        series_description,
        **overrides,
    )


def make_mr(
    patient: PatientSpec,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = DEFAULT_STUDY_DATE,
    instance_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 5.0,
    accession_number: str | None = None,
    study_description: str | None = "MR BRAIN W/O CONTRAST",
    series_description: str | None = None,
    **overrides: Any,
) -> Dataset:
    """One MR Image Storage instance (T1 spin echo); extras as for :func:`make_ct`."""
    return make_image(
        "MR",
        patient,
        study_uid,
        series_uid,
        frame_of_reference_uid,
        study_date,
        instance_number,
        rows,
        columns,
        slice_thickness,
        accession_number,
        study_description,
        series_description,
        **overrides,
    )


def make_pt(
    patient: PatientSpec,
    study_uid: str | None = None,
    series_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
    study_date: str = DEFAULT_STUDY_DATE,
    instance_number: int = 1,
    rows: int = 64,
    columns: int = 64,
    slice_thickness: float = 3.0,
    accession_number: str | None = None,
    study_description: str | None = "PET/CT WHOLE BODY FDG",
    series_description: str | None = None,
    **overrides: Any,
) -> Dataset:
    """One PET Image Storage instance (static FDG, BQML); extras as for :func:`make_ct`."""
    return make_image(
        "PT",
        patient,
        study_uid,
        series_uid,
        frame_of_reference_uid,
        study_date,
        instance_number,
        rows,
        columns,
        slice_thickness,
        accession_number,
        study_description,
        series_description,
        **overrides,
    )


_BUILDERS = {"CT": make_ct, "MR": make_mr, "PT": make_pt}


# --------------------------------------------------------------------------
# Series / studies / corpora
# --------------------------------------------------------------------------


def make_series(
    patient: PatientSpec,
    modality: str = "CT",
    count: int = 3,
    study_uid: str | None = None,
    study_date: str = DEFAULT_STUDY_DATE,
    **kw: Any,
) -> list[Dataset]:
    """``count`` instances of one series: shared study/series/frame-of-reference
    UIDs and accession number, instance numbers 1..count, contiguous positions.

    Extra keywords go to the per-modality builder (``series_uid``,
    ``frame_of_reference_uid``, ``accession_number``, ``series_number``, ...).
    """
    builder = _BUILDERS[modality.upper()]
    study_uid = study_uid or generate_uid()
    kw.setdefault("series_uid", generate_uid())
    kw.setdefault("frame_of_reference_uid", generate_uid())
    if kw.get("accession_number") is None:
        kw["accession_number"] = "A" + _digits(study_uid, 10)
    first = int(kw.pop("first_instance_number", 1))
    return [
        builder(patient, study_uid=study_uid, study_date=study_date, instance_number=first + i, **kw)
        for i in range(count)
    ]


def make_study(
    patient: PatientSpec,
    study_date: str = DEFAULT_STUDY_DATE,
    modalities: Sequence[str] = ("CT",),
    per_series: int = 3,
    **kw: Any,
) -> list[Dataset]:
    """One study with one series per entry of ``modalities`` (series numbers 1..n)."""
    study_uid = kw.pop("study_uid", None) or generate_uid()
    kw.setdefault("accession_number", "A" + _digits(study_uid, 10))
    out: list[Dataset] = []
    for number, modality in enumerate(modalities, start=1):
        out.extend(
            make_series(
                patient,
                modality,
                per_series,
                study_uid=study_uid,
                study_date=study_date,
                series_number=number,
                **kw,
            )
        )
    return out


def make_corpus(
    n_patients: int = 2,
    studies_per_patient: int = 2,
    per_series: int = 3,
    modalities: Sequence[str] = ("CT",),
    first_date: str = DEFAULT_STUDY_DATE,
    interval_days: int = 90,
) -> list[Dataset]:
    """Patients ``make_patient(1..n_patients)``, each with ``studies_per_patient``
    studies ``interval_days`` apart (distinct dates and accession numbers)."""
    start = _d(first_date)
    out: list[Dataset] = []
    for p in range(1, n_patients + 1):
        patient = make_patient(p)
        for s in range(studies_per_patient):
            day = (start + timedelta(days=interval_days * s + p)).strftime("%Y%m%d")
            accession = f"ACC{p:04d}{s:03d}{day[2:]}"  # <= 16 chars, unique in corpus
            out.extend(make_study(patient, day, modalities, per_series, accession_number=accession))
    return out


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------


def _safe(component: object, fallback: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", str(component or "")).strip("._")
    return text or fallback


def write_files(datasets: Iterable[Dataset], folder: Path) -> list[Path]:
    """Write datasets as ``folder/<PatientID>/<StudyUID>/<SeriesUID>/NNN.dcm``
    (NNN = InstanceNumber, bumped on collision) with ``enforce_file_format``."""
    folder = Path(folder)
    paths: list[Path] = []
    for ds in datasets:
        series_dir = (
            folder
            / _safe(ds.get("PatientID"), "NOPATIENTID")
            / _safe(ds.get("StudyInstanceUID"), "NOSTUDY")
            / _safe(ds.get("SeriesInstanceUID"), "NOSERIES")
        )
        series_dir.mkdir(parents=True, exist_ok=True)
        number = int(ds.get("InstanceNumber") or 1)
        path = series_dir / f"{number:03d}.dcm"
        while path.exists() or path in paths:
            number += 1
            path = series_dir / f"{number:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------
# Structured report
# --------------------------------------------------------------------------


def _human_name(pn: str) -> str:
    """'DOE^JOHN1^Q' -> 'JOHN1 Q DOE' (the form a radiologist would type)."""
    parts = str(pn).split("=")[0].split("^")
    family = parts[0] if parts else ""
    rest = [p for p in parts[1:3] if p]
    return " ".join([*rest, family]).strip()


def make_sr(
    patient: PatientSpec,
    referenced: Sequence[Dataset],
    *,
    series_number: int = 900,
    instance_number: int = 1,
    content_date: str | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    **overrides: Any,
) -> Dataset:
    """A small Comprehensive SR referencing ``referenced`` (evidence + IMAGE items)
    whose free text contains the patient's name in both PN and natural form,
    so de-identification tests can check that free text is handled."""
    first = referenced[0] if referenced else None
    study_uid = str(first.StudyInstanceUID) if first is not None else generate_uid()
    study_date = str(first.StudyDate) if first is not None else DEFAULT_STUDY_DATE
    study_time = str(first.get("StudyTime", "083000")) if first is not None else "083000"
    content_date = content_date or study_date
    sop_uid = generate_uid()

    ds = Dataset()
    ds.file_meta = _file_meta(ComprehensiveSRStorage, sop_uid, transfer_syntax)
    _sop_common(ds, ComprehensiveSRStorage, sop_uid, content_date)
    _patient_modules(ds, patient, study_date)
    _study_module(
        ds,
        study_uid,
        study_date,
        study_time,
        str(first.AccessionNumber) if first is not None and "AccessionNumber" in first else None,
        str(first.get("StudyDescription", "")) if first is not None else "REPORT",
    )
    if first is not None and "StudyID" in first:
        ds.StudyID = first.StudyID
    # SR Document Series
    ds.Modality = "SR"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDate = content_date
    ds.SeriesTime = "170000"
    ds.SeriesDescription = "Radiology report"
    ds.ReferencedPerformedProcedureStepSequence = []
    _equipment_module(ds, "SR")

    # SR Document General
    ds.InstanceNumber = instance_number
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "VERIFIED"
    ds.ContentDate = content_date
    ds.ContentTime = "170000"
    verifier = Dataset()
    verifier.VerifyingObserverName = "HOUSE^GREGORY^^DR"
    verifier.VerifyingObserverIdentificationCodeSequence = []
    verifier.VerifyingOrganization = "St. Example General Hospital"
    verifier.VerificationDateTime = f"{content_date}171500"
    ds.VerifyingObserverSequence = [verifier]
    ds.PerformedProcedureCodeSequence = []

    by_study: dict[str, dict[str, list[Dataset]]] = {}
    for ref in referenced:
        by_study.setdefault(str(ref.StudyInstanceUID), {}).setdefault(str(ref.SeriesInstanceUID), []).append(ref)
    evidence = []
    for s_uid, series in by_study.items():
        study_item = Dataset()
        study_item.StudyInstanceUID = s_uid
        series_items = []
        for se_uid, instances in series.items():
            series_item = Dataset()
            series_item.SeriesInstanceUID = se_uid
            series_item.ReferencedSOPSequence = [_sop_ref(i) for i in instances]
            series_items.append(series_item)
        study_item.ReferencedSeriesSequence = series_items
        evidence.append(study_item)
    if evidence:
        ds.CurrentRequestedProcedureEvidenceSequence = evidence

    # SR Document Content (root container)
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("18748-4", "LN", "Diagnostic Imaging Report")]
    ds.ContinuityOfContent = "SEPARATE"
    text = Dataset()
    text.RelationshipType = "CONTAINS"
    text.ValueType = "TEXT"
    text.ConceptNameCodeSequence = [_code("121071", "DCM", "Finding")]
    text.TextValue = (
        f"Patient {patient.name} ({_human_name(patient.name)}), ID {patient.patient_id}, "
        f"born {patient.birth_date}: no acute abnormality on the images of {study_date}."
    )
    images = []
    for ref in referenced:
        item = Dataset()
        item.RelationshipType = "INFERRED FROM"
        item.ValueType = "IMAGE"
        item.ConceptNameCodeSequence = [_code("260753009", "SCT", "Source")]
        item.ReferencedSOPSequence = [_sop_ref(ref)]
        images.append(item)
    if images:
        text.ContentSequence = images
    ds.ContentSequence = [text]

    _apply_overrides(ds, overrides)
    _sync_meta(ds)
    return ds


def _sop_ref(ref: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ref.SOPClassUID
    item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    return item


# --------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------


def make_seg(
    referenced: Sequence[Dataset],
    *,
    series_number: int = 300,
    instance_number: int = 1,
    segment_label: str = "Lesion",
) -> Dataset:
    """A BINARY DICOM SEG (one segment, one frame per source image) built with
    highdicom on top of single-frame CT/MR/PT images of one series."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not referenced:
        raise ValueError("make_seg needs at least one source image")
    sources = sorted(referenced, key=lambda d: int(d.InstanceNumber))
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    yy, xx = np.mgrid[0:rows, 0:columns]
    masks = []
    for i, _ in enumerate(sources):
        cy, cx = rows / 2 + i, columns / 2 - i
        masks.append(np.hypot(yy - cy, xx - cx) < max(3, rows // 6))
    mask = np.stack(masks).astype(bool)

    algorithm = hd.AlgorithmIdentificationSequence(
        name="pacs-bridge-test-thresholder",
        family=codes.cid7162.ArtificialIntelligence,
        version="1.0",
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[description],
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="ACME Medical",
        manufacturer_model_name="SynthSEG 1",
        software_versions="1.0",
        device_serial_number="SN-SEG-0001",
        content_label="LESION",
        content_description="Synthetic lesion segmentation",
        content_creator_name="BOT^SEGMENTER",
    )
    return seg


# --------------------------------------------------------------------------
# Edge-case helpers
# --------------------------------------------------------------------------


def with_private_tags(ds: Dataset, group: int = 0x0009) -> Dataset:
    """Add a private block (creator ``ACME 1.0``) and an overlay in group 6000.

    Modifies ``ds`` in place and returns it.  The private LO element carries
    the patient's name so that tests can see whether private data leaks.
    """
    block = ds.private_block(group, PRIVATE_CREATOR, create=True)
    block.add_new(0x01, "LO", f"ACME ref {ds.get('PatientName', '')}")
    block.add_new(0x02, "DS", "1.5")
    block.add_new(0x03, "US", 7)
    block.add_new(0x10, "OB", b"\x01\x02\x03\x04ACME")

    rows, columns = int(ds.get("Rows", 64)), int(ds.get("Columns", 64))
    yy, xx = np.mgrid[0:rows, 0:columns]
    overlay = ((yy < 8) & (xx < columns // 2)) | (xx == yy)  # "burned-in" style banner + diagonal
    from pydicom.pixels.utils import pack_bits

    packed = pack_bits(overlay.astype(np.uint8).ravel(), pad=True)
    ds.add_new(0x60000010, "US", rows)  # OverlayRows
    ds.add_new(0x60000011, "US", columns)  # OverlayColumns
    ds.add_new(0x60000022, "LO", "Annotation")  # OverlayDescription
    ds.add_new(0x60000040, "CS", "G")  # OverlayType
    ds.add_new(0x60000050, "SS", [1, 1])  # OverlayOrigin
    ds.add_new(0x60000100, "US", 1)  # OverlayBitsAllocated
    ds.add_new(0x60000102, "US", 0)  # OverlayBitPosition
    ds.add_new(0x60001500, "LO", "ANNOT")  # OverlayLabel
    ds.add_new(0x60003000, "OW", packed)  # OverlayData
    return ds


_CHARSET_NAMES = {
    "ISO 2022 IR 87": (["", "ISO 2022 IR 87"], JAPANESE_NAME),
    "ISO_IR 192": ("ISO_IR 192", UTF8_NAME),
    "ISO_IR 100": ("ISO_IR 100", UTF8_NAME),
}


def _ascii_fold(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


def with_charset(ds: Dataset, charset: str, name: str | None = None) -> Dataset:
    """Set ``SpecificCharacterSet`` and a PatientName that needs it.

    ``'ISO 2022 IR 87'`` gives ``\\ISO 2022 IR 87`` (ASCII default + JIS X 0208)
    and the PS3.5 H.3.1 name; ``'ISO_IR 192'`` gives a UTF-8 name.  Other text
    is ASCII-folded when the new character set cannot hold Latin-1 letters.
    Modifies ``ds`` in place (including PN/text inside SR content) and returns it.
    """
    if charset not in _CHARSET_NAMES:
        raise ValueError(f"unsupported charset {charset!r}; use one of {sorted(_CHARSET_NAMES)}")
    value, default_name = _CHARSET_NAMES[charset]
    if charset == "ISO 2022 IR 87":

        def fold(d: Dataset, elem: Any) -> None:
            if elem.VR in {"PN", "LO", "SH", "ST", "LT", "UT", "UC"} and elem.value:
                if elem.VM > 1:
                    elem.value = [_ascii_fold(str(v)) for v in elem.value]
                else:
                    elem.value = _ascii_fold(str(elem.value))

        ds.walk(fold)
    ds.SpecificCharacterSet = value
    ds.PatientName = name or default_name
    return ds
