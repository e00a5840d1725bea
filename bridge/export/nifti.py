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

from bridge.annotations.geometry import GeometryError, series_geometry

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
    when its name ends in .nii.gz, plain .nii otherwise), atomically. Raises NotAVolume before writing.
    The grid and slice order are the series geometry annotations are checked against, so that a mask and
    its image volume always share one grid."""
    if not files:
        raise NotAVolume("no DICOM files given")
    headers = [_header(Path(f)) for f in files]
    try:
        geometry = series_geometry(headers)
    except GeometryError as error:
        raise NotAVolume(str(error)) from None
    by_uid = {str(ds.SOPInstanceUID): Path(f) for ds, f in zip(headers, files, strict=True)}
    pixels = _pixels([by_uid[uid] for uid in geometry.instance_uids], headers[0])
    grid = geometry.grid
    image = sitk.GetImageFromArray(pixels)  # (slices, rows, columns) -> x along a row, y down the columns
    image.SetSpacing(grid.spacing)  # type: ignore[no-untyped-call]
    image.SetOrigin(grid.origin)  # type: ignore[no-untyped-call]
    image.SetDirection(grid.direction)  # type: ignore[no-untyped-call]
    digest = _write_atomically(image, target)
    return Volume(target, grid.size, grid.spacing, digest, grid.size[2])


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
