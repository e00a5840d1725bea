"""The grid of a series agrees with SimpleITK's own reading of the same files (axial, oblique, shuffled, feet
first), from headers alone; what is no regular volume is refused with the reason; grids compare within the
documented tolerance and name each difference."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from numpy.typing import NDArray
from pydicom.dataset import Dataset

from bridge.annotations.geometry import GeometryError, Grid, SeriesGeometry, series_geometry
from tests import factory

ROWS, COLUMNS = 16, 12  # not square, and PixelSpacing rows != columns, so an x/y mix-up shows
ORIGIN = np.array([-40.0, 12.5, 100.0])


def rotation(axis: int, degrees: float) -> NDArray[np.float64]:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    i, j = [k for k in range(3) if k != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


AXIAL = np.eye(3)
OBLIQUE = rotation(1, 20) @ rotation(0, 20)  # 20 degrees about x, then 20 about y


def oriented_series(
    axes: NDArray[np.float64] = AXIAL, count: int = 5, step: float = 2.5, shuffle: bool = False
) -> list[Dataset]:
    """`count` CT slices with row/column cosines the first two columns of `axes`, slice i at ORIGIN + i * step
    along the normal (step < 0: instance numbers run against the normal, as feet-first series do); `shuffle`
    gives the list, and the InstanceNumbers (hence file names), in a random order."""
    row, column = axes[:, 0], axes[:, 1]
    normal = np.cross(row, column)
    datasets = factory.make_series(factory.make_patient(4), "CT", count, rows=ROWS, columns=COLUMNS)
    for index, ds in enumerate(datasets):
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*row, *column)]
        ds.ImagePositionPatient = [f"{v:.4f}" for v in ORIGIN + index * step * normal]
        ds.PixelSpacing = ["0.8", "0.6"]  # rows 0.8 mm apart, columns 0.6 mm
    if shuffle:
        order = list(range(count))
        random.Random(11).shuffle(order)
        for number, index in enumerate(order, start=1):
            datasets[index].InstanceNumber = number
        datasets = [datasets[i] for i in order]
    return datasets


def sitk_read(paths: Sequence[Path]) -> tuple[sitk.Image, list[str]]:
    """SimpleITK's volume of the series in the files' folder, and the SOPInstanceUIDs in its slice order."""
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(paths[0].parent))
    reader.SetFileNames(names)
    image = reader.Execute()
    return image, [str(pydicom.dcmread(name, stop_before_pixels=True).SOPInstanceUID) for name in names]


def headers(paths: Sequence[Path]) -> list[Dataset]:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in paths]


CASES = {
    "axial": (AXIAL, 2.5, False),
    "axial-shuffled": (AXIAL, 2.5, True),
    "axial-feet-first": (AXIAL, -2.5, False),
    "oblique": (OBLIQUE, 3.0, False),
    "oblique-shuffled": (OBLIQUE, 3.0, True),
    "oblique-feet-first-shuffled": (OBLIQUE, -1.25, True),
}


@pytest.mark.parametrize("case", CASES)
def test_the_grid_is_simpleitks_grid(tmp_path: Path, case: str) -> None:
    axes, step, shuffle = CASES[case]
    paths = factory.write_files(oriented_series(axes, step=step, shuffle=shuffle), tmp_path)
    image, sitk_order = sitk_read(paths)

    geometry = series_geometry(headers(paths))

    grid = geometry.grid
    assert grid.size == image.GetSize() == (COLUMNS, ROWS, 5)
    np.testing.assert_allclose(grid.spacing, image.GetSpacing(), atol=1e-5)
    np.testing.assert_allclose(grid.spacing, (0.6, 0.8, abs(step)), atol=1e-4)
    np.testing.assert_allclose(grid.origin, image.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(grid.direction, image.GetDirection(), atol=1e-6)
    assert list(geometry.instance_uids) == sitk_order
    assert grid.mismatches(_grid_of(image)) == []


def test_index_order_follows_position_not_instance_number() -> None:
    datasets = oriented_series(AXIAL, step=-2.5)  # InstanceNumber 1 is the highest slice
    geometry = series_geometry(list(reversed(datasets[2:])) + datasets[:2])
    assert geometry.instance_uids == tuple(str(ds.SOPInstanceUID) for ds in reversed(datasets))
    assert geometry.grid.origin == pytest.approx(tuple(ORIGIN - 4 * 2.5 * np.array([0, 0, 1])))
    assert geometry.frame_of_reference_uid == str(datasets[0].FrameOfReferenceUID)


def test_one_slice_takes_its_nominal_spacing() -> None:
    (ds,) = oriented_series(count=1)
    ds.SliceThickness = 3.0
    geometry = series_geometry([ds])
    assert geometry.grid.size == (COLUMNS, ROWS, 1)
    assert geometry.grid.spacing == pytest.approx((0.6, 0.8, 3.0))


Change = Callable[[list[Dataset]], None]


def _set(keyword: str, value: object, index: int = 2) -> Change:
    def change(datasets: list[Dataset]) -> None:
        if value is None:
            delattr(datasets[index], keyword)
        else:
            setattr(datasets[index], keyword, value)

    return change


def _move(index: int, offset: Sequence[float]) -> Change:
    def change(datasets: list[Dataset]) -> None:
        position = [float(v) for v in datasets[index].ImagePositionPatient]
        datasets[index].ImagePositionPatient = [f"{p + o:.4f}" for p, o in zip(position, offset, strict=True)]

    return change


def _set_all(keyword: str, value: object) -> Change:
    def change(datasets: list[Dataset]) -> None:
        for ds in datasets:
            setattr(ds, keyword, value)

    return change


REFUSALS: dict[str, tuple[Change, str]] = {
    "mixed orientations": (_set("ImageOrientationPatient", [1, 0, 0, 0, 0, -1]), "mixed orientations"),
    "no position": (_set("ImagePositionPatient", None), "1 of 5 instances have no valid ImagePositionPatient"),
    "no orientation": (_set("ImageOrientationPatient", None), "no valid ImageOrientationPatient"),
    "multi-frame": (_set("NumberOfFrames", 3), "multi-frame"),
    "uneven spacing": (_move(4, (0, 0, 2.5)), r"slice spacing is uneven \(2\.5 to 5 mm"),
    "other rows": (_set("Rows", 32), "Rows/Columns differ"),
    "duplicate position": (_move(3, (0, 0, -2.5)), "share one slice position"),
    "shear": (_move(2, (1.0, 0, 0)), "not stacked along their normal"),
    "other pixel spacing": (_set("PixelSpacing", ["0.8", "0.7"]), "PixelSpacing differs"),
    "other frame of reference": (_set("FrameOfReferenceUID", "1.2.3.4"), "FrameOfReferenceUID differs"),
    "not orthogonal": (_set_all("ImageOrientationPatient", [1, 0, 0, 1, 0, 0]), "not two orthogonal unit vectors"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_what_is_no_regular_volume_is_refused_with_the_reason(case: str) -> None:
    change, reason = REFUSALS[case]
    datasets = oriented_series()
    change(datasets)
    with pytest.raises(GeometryError, match=reason):
        series_geometry(datasets)


def test_no_instances_is_refused() -> None:
    with pytest.raises(GeometryError, match="no instances"):
        series_geometry([])


def test_a_small_jitter_of_positions_is_still_one_volume() -> None:
    datasets = oriented_series()
    _move(2, (0.01, -0.01, 0.02))(datasets)
    assert series_geometry(datasets).grid.spacing[2] == pytest.approx(2.5)


# -- grids ------------------------------------------------------------------------------------------------


def _grid_of(image: sitk.Image) -> Grid:
    return Grid(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())


def series_grid(axes: NDArray[np.float64] = OBLIQUE) -> SeriesGeometry:
    return series_geometry(oriented_series(axes, step=2.5))


def changed(grid: Grid, **fields: object) -> Grid:
    values: dict[str, object] = {
        "size": grid.size,
        "spacing": grid.spacing,
        "origin": grid.origin,
        "direction": grid.direction,
    }
    values.update(fields)
    return Grid(**values)  # type: ignore[arg-type]


def test_a_grid_matches_itself_and_its_float32_copy() -> None:
    grid = series_grid().grid
    as_float32 = Grid(
        grid.size,
        tuple(float(np.float32(v)) for v in grid.spacing),  # type: ignore[arg-type]
        tuple(float(np.float32(v)) for v in grid.origin),  # type: ignore[arg-type]
        tuple(float(np.float32(v)) for v in grid.direction),
    )
    assert grid.mismatches(grid) == []
    assert grid.mismatches(as_float32) == []
    assert grid.distance(grid) == 0.0
    assert grid.distance(as_float32) < 1e-4


def test_each_difference_is_named() -> None:
    grid = series_grid(AXIAL).grid
    other = changed(
        grid,
        size=(COLUMNS, ROWS, 6),
        spacing=(0.6, 0.8, 3.0),
        origin=(grid.origin[0], grid.origin[1], grid.origin[2] + 12.5),
    )
    assert grid.mismatches(other) == [
        "size 12x16x5 vs 12x16x6",
        "spacing 0.6x0.8x2.5 vs 0.6x0.8x3 mm",
        "origin differs by 12.5 mm",
    ]


def test_direction_differences_say_how() -> None:
    grid = series_grid(AXIAL).grid
    flipped = changed(grid, direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    swapped = changed(grid, direction=(0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    rotated = changed(grid, direction=tuple(float(v) for v in rotation(2, 20).ravel()))
    assert grid.mismatches(flipped) == ["direction differs (axis z flipped)"]
    assert grid.mismatches(swapped) == ["direction differs (axes x, y, z are y, x, -z of the other)"]
    assert grid.mismatches(rotated) == ["direction differs (axis x by 20 degrees, axis y by 20 degrees)"]


def test_tolerance_is_a_tenth_of_the_smallest_spacing_at_the_far_corner() -> None:
    grid = series_grid(AXIAL).grid  # smallest spacing 0.6 mm: tolerance 0.06 mm
    assert grid.tolerance_mm(grid) == pytest.approx(0.06)
    x, y, z = grid.origin
    assert grid.mismatches(changed(grid, origin=(x + 0.05, y, z))) == []
    assert grid.mismatches(changed(grid, origin=(x + 0.07, y, z))) == ["origin differs by 0.07 mm"]
    # 4 slice steps: 0.01 mm more per step moves the last slice by 0.04 mm (fits), 0.02 by 0.08 (does not)
    assert grid.mismatches(changed(grid, spacing=(0.6, 0.8, 2.51))) == []
    assert grid.mismatches(changed(grid, spacing=(0.6, 0.8, 2.52))) == ["spacing 0.6x0.8x2.5 vs 0.6x0.8x2.52 mm"]
    # each part within tolerance, together too far: the corner that moves most is named
    both = changed(grid, origin=(x + 0.05, y, z), spacing=(0.6 + 0.05 / 11, 0.8, 2.5))
    assert grid.mismatches(both) == ["voxel centres differ by up to 0.1 mm"]


def test_the_spacing_and_direction_of_a_one_voxel_axis_do_not_count() -> None:
    grid = changed(series_grid(AXIAL).grid, size=(COLUMNS, ROWS, 1))
    other = changed(grid, spacing=(0.6, 0.8, 1.0), direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    assert grid.mismatches(other) == []


def test_distance_ranks_grids_and_ignores_axis_order() -> None:
    grid = series_grid(AXIAL).grid
    x, y, z = grid.origin
    # the same voxels with z stored the other way round
    z_flipped = changed(grid, origin=(x, y, z + 4 * 2.5), direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
    near = changed(grid, origin=(x, y, z + 1.0))
    far = changed(grid, origin=(x, y, z + 10.0))
    finer = changed(grid, size=(2 * COLUMNS, ROWS, 5), spacing=(0.3, 0.8, 2.5))
    assert grid.distance(z_flipped) == pytest.approx(0.0, abs=1e-9)
    assert 0 < grid.distance(near) < grid.distance(far)
    assert grid.distance(finer) > 0
    assert grid.distance(near) == pytest.approx(near.distance(grid))


def test_a_grid_checks_itself() -> None:
    grid = series_grid(AXIAL).grid
    with pytest.raises(ValueError, match="positive spacings"):
        changed(grid, spacing=(0.6, 0.0, 2.5))
    with pytest.raises(ValueError, match="sizes"):
        changed(grid, size=(0, 16, 5))
    with pytest.raises(ValueError, match="nine"):
        changed(grid, direction=(1.0, 0.0, 0.0))
