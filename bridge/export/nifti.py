"""One DICOM series as one NIfTI volume, with the geometry dcm2niix would give it.

Research tools read volumes, not slices. Slices are ordered by their position along the slice normal (never
by InstanceNumber or file name, which de-identified or re-sent copies do not keep), the slice spacing comes
from those positions (SliceThickness is a property of the acquisition, not of the grid), and the image is
built from numpy so that every slice's rescale is applied and no DICOM attribute reaches the NIfTI header.
SimpleITK writes the file and turns DICOM's LPS into NIfTI's RAS. A series that is not one regular grid is
refused, with a reason that names attributes and never the patient or a UID.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from pydicom import dcmread
from pydicom.dataset import Dataset

ORIENTATION_TOLERANCE = 1e-4  # direction cosines, as DS strings carry them
SPACING_TOLERANCE_MM = 0.01
SPACING_TOLERANCE_RATIO = 0.01
_INT16 = np.iinfo(np.int16)


class NotAVolume(ValueError):
    """The files are not one regular grid of single-frame slices; the message says why (no PHI, no UIDs)."""


@dataclass(frozen=True)
class Volume:
    """A written NIfTI volume: shape and spacing in NIfTI order (columns, rows, slices), in mm."""

    path: Path
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    sha256: str
    slices: int


def write_series_volume(files: Sequence[Path], target: Path) -> Volume:
    """Write the single-frame instances `files` of one series as one volume at `target` (gzip-compressed
    when its name ends in .nii.gz, plain .nii otherwise), atomically. Raises NotAVolume before writing."""
    if not files:
        raise NotAVolume("no DICOM files given")
    headers = [_header(Path(f)) for f in files]
    row, column, normal = _orientation(headers)
    positions = [_vector(ds, "ImagePositionPatient", 3) for ds in headers]
    order = sorted(range(len(headers)), key=lambda i: float(normal @ positions[i]))
    step = _slice_step(headers[order[0]], [positions[i] for i in order], normal)
    row_spacing, column_spacing = (float(v) for v in _vector(headers[0], "PixelSpacing", 2))
    pixels = _pixels([Path(files[i]) for i in order], headers[0])
    image = sitk.GetImageFromArray(pixels)  # (slices, rows, columns) -> x along a row, y down the columns
    image.SetSpacing((column_spacing, row_spacing, step))  # type: ignore[no-untyped-call]
    image.SetOrigin(tuple(float(v) for v in positions[order[0]]))  # type: ignore[no-untyped-call]
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()))  # type: ignore[no-untyped-call]
    digest = _write_atomically(image, target)
    slices, rows, columns = pixels.shape
    return Volume(target, (columns, rows, slices), (column_spacing, row_spacing, step), digest, slices)


def _header(path: Path) -> Dataset:
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # pydicom raises many types for bad input; all mean the same here
        raise NotAVolume(f"a file is not readable DICOM ({type(exc).__name__})") from None
    if int(ds.get("NumberOfFrames") or 1) > 1:
        raise NotAVolume("multi-frame instances are unsupported (an instance has several frames)")
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise NotAVolume("only single-sample (grayscale) images are supported")
    return ds


def _vector(ds: Dataset, keyword: str, length: int) -> NDArray[np.float64]:
    value = ds.get(keyword)
    if value is None or len(value) != length:
        raise NotAVolume(f"an instance has no valid {keyword}")
    return np.array([float(v) for v in value], dtype=np.float64)


def _orientation(headers: list[Dataset]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Unit row and column directions and the slice normal (LPS), after checking the series shares them."""
    if len({str(ds.get("SeriesInstanceUID", "")) for ds in headers}) > 1:
        raise NotAVolume("the files belong to more than one series")
    first = headers[0]
    orientation, spacing = _vector(first, "ImageOrientationPatient", 6), _vector(first, "PixelSpacing", 2)
    for ds in headers:
        if np.abs(_vector(ds, "ImageOrientationPatient", 6) - orientation).max() > ORIENTATION_TOLERANCE:
            raise NotAVolume("ImageOrientationPatient differs between instances")
        _vector(ds, "ImagePositionPatient", 3)
        if (ds.get("Rows"), ds.get("Columns")) != (first.get("Rows"), first.get("Columns")):
            raise NotAVolume("Rows/Columns differ between instances")
        if np.abs(_vector(ds, "PixelSpacing", 2) - spacing).max() > SPACING_TOLERANCE_MM / 10:
            raise NotAVolume("PixelSpacing differs between instances")
    row, column = orientation[:3], orientation[3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise NotAVolume("ImageOrientationPatient is not two orthogonal unit vectors")
    # DS strings round the cosines: make them exactly orthonormal, or the NIfTI qform cannot hold them
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row
    column = column / np.linalg.norm(column)
    return row, column, np.cross(row, column)


def _slice_step(first: Dataset, positions: list[NDArray[np.float64]], normal: NDArray[np.float64]) -> float:
    """The one distance between neighbouring slices, along the normal; refused unless it is uniform."""
    if len(positions) == 1:  # a single slice has no neighbour: its nominal thickness is all there is
        return float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    steps = np.diff(np.array(positions), axis=0)
    along = steps @ normal
    mean = float(positions[-1] @ normal - positions[0] @ normal) / (len(positions) - 1)
    tolerance = max(SPACING_TOLERANCE_MM, SPACING_TOLERANCE_RATIO * mean)
    if along.min() < tolerance:
        raise NotAVolume("two instances share one slice position")
    if np.abs(along - mean).max() > tolerance:
        raise NotAVolume(f"slice spacing is not uniform ({along.min():.3f} to {along.max():.3f} mm)")
    if np.linalg.norm(steps - np.outer(along, normal), axis=1).max() > tolerance:
        raise NotAVolume("slices are not stacked along their normal (gantry tilt or shear is unsupported)")
    return mean


def _pixels(ordered: list[Path], first: Dataset) -> NDArray[np.int16] | NDArray[np.float32]:
    """Modality values (HU for CT) of the slices in order: int16 when every value is an integer that fits."""
    volume = np.empty((len(ordered), int(first.Rows), int(first.Columns)), dtype=np.float64)
    for index, path in enumerate(ordered):
        ds = dcmread(path)
        try:
            stored = ds.pixel_array
        except Exception as exc:  # missing data, no decoder for the transfer syntax, wrong length
            raise NotAVolume(f"pixel data cannot be decoded ({type(exc).__name__})") from None
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        volume[index] = stored.astype(np.float64) * slope + intercept  # per slice: PET scales each slice
    integral = bool(np.all(volume == np.round(volume)))
    if integral and volume.min() >= _INT16.min and volume.max() <= _INT16.max:
        return volume.astype(np.int16)
    return volume.astype(np.float32)


def _write_atomically(image: sitk.Image, target: Path) -> str:
    """Write beside `target`, fsync, rename over it, fsync the folder; return the file's sha256."""
    suffix = ".nii.gz" if target.name.lower().endswith(".nii.gz") else ".nii"  # SimpleITK picks by suffix
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        sitk.WriteImage(image, str(temporary), useCompression=suffix == ".nii.gz")
        digest = hashlib.sha256()
        with temporary.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
    return digest.hexdigest()
