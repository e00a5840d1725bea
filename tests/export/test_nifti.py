"""One series as one NIfTI volume, read back with nibabel (an independent reader): geometry on axial and
oblique series written in shuffled order, values with the rescale applied, refusals that write nothing."""

from __future__ import annotations

import math
import random
from pathlib import Path

import nibabel
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from bridge.export.nifti import NotAVolume, write_series_volume
from tests import factory

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def series(tmp_path: Path, row: np.ndarray, column: np.ndarray, count: int = 5, step: float = 2.5) -> list[Path]:
    """`count` slices along row x column, positions `step` apart, written (and numbered) in shuffled order,
    a marker value in one pixel of slice 3."""
    normal = np.cross(row, column)
    origin = np.array([-40.0, 12.5, 100.0])
    datasets: list[Dataset] = factory.make_series(factory.make_patient(1), "CT", count, rows=16, columns=16)
    for index, ds in enumerate(datasets):
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *column)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in origin + index * step * normal]
        ds.PixelSpacing = ["0.8", "0.6"]  # rows 0.8 mm apart, columns 0.6 mm
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        pixels = np.full((16, 16), 1024, dtype=np.uint16)
        if index == 3:
            pixels[5, 9] = 1024 + 777  # row 5, column 9
        ds.PixelData = pixels.tobytes()
    order = list(range(count))
    random.Random(7).shuffle(order)
    for number, index in enumerate(order, start=1):
        datasets[index].InstanceNumber = number
    shuffled = [datasets[i] for i in order]
    return factory.write_files(shuffled, tmp_path / "in")


def expected_affine(row: np.ndarray, column: np.ndarray, step: float) -> np.ndarray:
    normal = np.cross(row, column)
    origin = np.array([-40.0, 12.5, 100.0])
    affine = np.eye(4)
    affine[:3, 0] = LPS_TO_RAS @ row * 0.6
    affine[:3, 1] = LPS_TO_RAS @ column * 0.8
    affine[:3, 2] = LPS_TO_RAS @ normal * step
    affine[:3, 3] = LPS_TO_RAS @ origin
    return affine


def rotation_x(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])


def rotation_z(degrees: float) -> np.ndarray:
    a = math.radians(degrees)
    return np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])


ORIENTATIONS = {
    "axial": np.eye(3),
    "oblique": rotation_x(30),
    "double-oblique": rotation_z(20) @ rotation_x(-35),
}


@pytest.mark.parametrize("name", ORIENTATIONS)
def test_geometry_and_values_match_the_dicom(tmp_path: Path, name: str) -> None:
    turn = ORIENTATIONS[name]
    row, column = turn @ np.array([1.0, 0, 0]), turn @ np.array([0, 1.0, 0])
    volume = write_series_volume(series(tmp_path, row, column), tmp_path / "out.nii.gz")
    image = nibabel.load(volume.path)
    data = np.asarray(image.dataobj)
    assert image.shape == (16, 16, 5) and volume.slices == 5
    np.testing.assert_allclose(image.affine, expected_affine(row, column, 2.5), atol=1e-3)
    # the marker is where the DICOM of slice 3 puts it, in patient space
    [(i, j, k)] = np.argwhere(data == 777)
    assert (i, j, k) == (9, 5, 3)
    lps = np.array([-40.0, 12.5, 100.0]) + 3 * 2.5 * np.cross(row, column) + 9 * 0.6 * row + 5 * 0.8 * column
    np.testing.assert_allclose(image.affine @ [i, j, k, 1], [*(LPS_TO_RAS @ lps), 1], atol=1e-3)
    assert data.min() == 0 and data.dtype == np.int16  # rescaled: 1024 - 1024


def test_series_that_are_not_one_grid_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    row, column = np.array([1.0, 0, 0]), np.array([0, 1.0, 0])
    files = series(tmp_path, row, column)
    target = tmp_path / "out.nii.gz"
    with pytest.raises(NotAVolume):
        write_series_volume([], target)
    other = factory.write_files(factory.make_series(factory.make_patient(2), "CT", 1), tmp_path / "other")
    with pytest.raises(NotAVolume):
        write_series_volume(files + other, target)  # two series
    by_position = sorted(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2]))
    with pytest.raises(NotAVolume, match="spacing"):
        write_series_volume(by_position[:2] + by_position[3:], target)  # a slice missing in the middle
    assert not target.exists() and not list(tmp_path.glob(".out*"))
