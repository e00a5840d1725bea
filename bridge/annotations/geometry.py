"""Where the voxels of a DICOM series lie in patient space, so that a mask file can be checked against them.

Conventions are ITK's, so that SimpleITK images convert directly: a voxel array is numpy (z, y, x) = (slice,
row, column); sizes, spacings and direction columns are (x, y, z); physical space is DICOM's LPS, in mm.

Index order: slice z = 0, 1, ... are the instances sorted by ImagePositionPatient projected on the slice normal
(row cosine x column cosine), ascending, ties broken by InstanceNumber. That is the order SimpleITK's
ImageSeriesReader gives with GDCM's sorting (`GetGDCMSeriesFileNames`), hence the z order of a NIfTI that
dcm2niix, Slicer or SimpleITK write from the series. A `.npy` mask has no geometry of its own: it must follow
this order.

Tolerance: two grids are the same when every voxel centre of one lies within a tenth of the smallest spacing
of the same voxel's centre in the other (`POSITION_TOLERANCE_VOXELS`). A tenth of a voxel is far below what
tells two reconstructions apart (other series differ by whole voxels or percent of a spacing), and far above
what storing a grid loses: float32 in NIfTI headers keeps ~1e-7 relative (1e-5 mm), DS strings round cosines
and positions to ~1e-6 and 1e-4 mm, and converters that estimate the slice spacing differently drift by a few
1e-4 mm over a series. A spacing error counts by the drift it causes across the grid, a direction error by how
far it moves the far edge, so a long axis is held to a tighter spacing than a short one (and the spacing or
direction of an axis of one voxel does not count at all: it moves no voxel centre).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset

#: grids match when no voxel centre moves by more than this fraction of the smallest spacing
POSITION_TOLERANCE_VOXELS = 0.1
#: direction cosines may differ this much between the instances of one series (DS strings round them)
ORIENTATION_TOLERANCE = 1e-4
#: PixelSpacing may differ this much (mm) between the instances of one series
PIXEL_SPACING_TOLERANCE_MM = 1e-4

_AXES = "xyz"


class GeometryError(ValueError):
    """The instances are not one regular volume; the message says why (attributes, never PHI or UIDs)."""


@dataclass(frozen=True)
class Grid:
    """A regular voxel grid in LPS, as SimpleITK describes an image (GetSize, GetSpacing, GetOrigin,
    GetDirection): direction is row-major 3x3 whose column i is the unit vector of axis i."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.size) != 3 or min(self.size) < 1:
            raise ValueError(f"a grid has three sizes of at least 1, not {self.size}")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise ValueError(f"a grid has three positive spacings, not {self.spacing}")
        if len(self.origin) != 3 or not all(math.isfinite(v) for v in self.origin):
            raise ValueError(f"a grid origin is three finite coordinates, not {self.origin}")
        if len(self.direction) != 9 or not all(math.isfinite(v) for v in self.direction):
            raise ValueError("a grid direction is nine finite values (row-major 3x3)")

    @property
    def axes(self) -> NDArray[np.float64]:
        """3x3 matrix whose column i is the unit vector of axis i (LPS)."""
        return np.array(self.direction, dtype=np.float64).reshape(3, 3)

    def tolerance_mm(self, other: Grid) -> float:
        """How far (mm) a voxel centre may move between two grids that are still the same grid."""
        return POSITION_TOLERANCE_VOXELS * min(*self.spacing, *other.spacing)

    def mismatches(self, other: Grid) -> list[str]:
        """What differs between this grid and `other`, for a person (this grid's value first); empty when
        every voxel centre of the one is within `tolerance_mm` of the same voxel in the other."""
        tolerance = self.tolerance_mm(other)
        # a difference in spacing or direction accumulates over the axis: judge it over the longer of the two
        reach = np.array([max(a, b) - 1 for a, b in zip(self.size, other.size, strict=True)], dtype=np.float64)
        found: list[str] = []
        if self.size != other.size:
            found.append(f"size {_times(self.size)} vs {_times(other.size)}")
        drift = np.abs(np.subtract(self.spacing, other.spacing)) * reach
        if drift.max() > tolerance:
            ours, theirs = _distinct(self.spacing, other.spacing)
            found.append(f"spacing {ours} vs {theirs} mm")
        shift = float(np.linalg.norm(np.subtract(self.origin, other.origin)))
        if shift > tolerance:
            found.append(f"origin differs by {shift:.4g} mm")
        tilt = np.linalg.norm(self.axes - other.axes, axis=0) * np.array(self.spacing) * reach
        if tilt.max() > tolerance:
            found.append(f"direction differs ({_direction_change(self.axes, other.axes)})")
        if not found:  # each part within tolerance, but together they may still move a corner too far
            moved = float(np.linalg.norm(self.corners() - other.corners(), axis=1).max())
            if moved > tolerance:
                found.append(f"voxel centres differ by up to {moved:.4g} mm")
        return found

    def corners(self) -> NDArray[np.float64]:
        """LPS positions (8 x 3) of the centres of the corner voxels, in index order."""
        last = [(0, n - 1) for n in self.size]
        index = np.array(list(itertools.product(*last)), dtype=np.float64)
        placed: NDArray[np.float64] = np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.axes.T
        return placed

    def distance(self, other: Grid) -> float:
        """How far apart two grids lie (mm; 0 = the same voxels), to pick the best-fitting of several series.

        Compares the sets of corner voxel centres and of outer box corners, whatever the axis order, so that
        a grid and its flipped or permuted copy (which `masks.align` accepts) are 0 apart."""
        return max(_hausdorff(self.corners(), other.corners()), _hausdorff(self._box(), other._box()))

    def _box(self) -> NDArray[np.float64]:
        """LPS positions (8 x 3) of the outer corners of the grid (voxel edges, not centres)."""
        last = [(-0.5, n - 0.5) for n in self.size]
        index = np.array(list(itertools.product(*last)), dtype=np.float64)
        placed: NDArray[np.float64] = np.asarray(self.origin) + (index * np.asarray(self.spacing)) @ self.axes.T
        return placed


@dataclass(frozen=True)
class SeriesGeometry:
    """A series as one volume: its grid, and which instance is slice z = 0, 1, ... (the index order)."""

    grid: Grid
    instance_uids: tuple[str, ...]
    frame_of_reference_uid: str | None


def series_geometry(datasets: Sequence[Dataset]) -> SeriesGeometry:
    """The grid and index order of single-frame instances of one series (headers suffice, no pixel data);
    GeometryError when they are not one regular volume."""
    if not datasets:
        raise GeometryError("no instances given")
    _check_one_series(datasets)
    row, column, normal = _orientation(datasets)
    rows, columns = _matrix(datasets)
    row_spacing, column_spacing = _pixel_spacing(datasets)
    positions = _vectors(datasets, "ImagePositionPatient", 3)
    order = sorted(range(len(datasets)), key=lambda i: (float(positions[i] @ normal), _instance_number(datasets[i])))
    ordered = positions[order]
    step = _slice_step(ordered, normal, datasets[order[0]], min(row_spacing, column_spacing))
    grid = Grid(
        size=(columns, rows, len(datasets)),
        spacing=(column_spacing, row_spacing, step),
        origin=(float(ordered[0][0]), float(ordered[0][1]), float(ordered[0][2])),
        direction=tuple(float(v) for v in np.column_stack([row, column, normal]).ravel()),
    )
    uids = [datasets[i].get("SOPInstanceUID") for i in order]
    if not all(uids):
        raise GeometryError("an instance has no SOPInstanceUID")
    references = {str(ds.get("FrameOfReferenceUID") or "") for ds in datasets}
    return SeriesGeometry(grid, tuple(str(uid) for uid in uids), references.pop() or None)


def _check_one_series(datasets: Sequence[Dataset]) -> None:
    if len({str(ds.get("SeriesInstanceUID") or "") for ds in datasets}) > 1:
        raise GeometryError("the instances belong to more than one series")
    if len({str(ds.get("FrameOfReferenceUID") or "") for ds in datasets}) > 1:
        raise GeometryError("FrameOfReferenceUID differs between instances")
    frames = max(int(ds.get("NumberOfFrames") or 1) for ds in datasets)
    if frames > 1:
        raise GeometryError(f"multi-frame instances are unsupported (an instance has {frames} frames)")


def _vectors(datasets: Sequence[Dataset], keyword: str, length: int) -> NDArray[np.float64]:
    """The attribute of every instance as an (instances x length) array; refused if any lacks it."""
    values: list[list[float]] = []
    for ds in datasets:
        value = ds.get(keyword)
        try:
            numbers = [float(v) for v in value] if value is not None else []
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) == length and all(math.isfinite(v) for v in numbers):
            values.append(numbers)
    missing = len(datasets) - len(values)
    if missing:
        raise GeometryError(f"{missing} of {len(datasets)} instances have no valid {keyword}")
    return np.array(values, dtype=np.float64)


def _orientation(datasets: Sequence[Dataset]) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Unit row and column cosines and the slice normal, shared by every instance, made exactly orthonormal."""
    orientations = _vectors(datasets, "ImageOrientationPatient", 6)
    if np.abs(orientations - orientations[0]).max() > ORIENTATION_TOLERANCE:
        raise GeometryError("mixed orientations: ImageOrientationPatient differs between instances")
    row, column = orientations[0][:3], orientations[0][3:]
    if abs(np.linalg.norm(row) - 1) > 1e-3 or abs(np.linalg.norm(column) - 1) > 1e-3 or abs(row @ column) > 1e-3:
        raise GeometryError("ImageOrientationPatient is not two orthogonal unit vectors")
    # DS strings round the cosines: Gram-Schmidt, so the direction matrix is a rotation (as ITK and NIfTI need)
    row = row / np.linalg.norm(row)
    column = column - (column @ row) * row
    column = column / np.linalg.norm(column)
    return row, column, np.cross(row, column)


def _matrix(datasets: Sequence[Dataset]) -> tuple[int, int]:
    shapes = {(ds.get("Rows"), ds.get("Columns")) for ds in datasets}
    if len(shapes) > 1:
        listed = ", ".join(sorted(f"{r}x{c}" for r, c in shapes))
        raise GeometryError(f"Rows/Columns differ between instances ({listed})")
    rows, columns = shapes.pop()
    if not rows or not columns:
        raise GeometryError("the instances have no Rows/Columns")
    return int(rows), int(columns)


def _pixel_spacing(datasets: Sequence[Dataset]) -> tuple[float, float]:
    """(row spacing, column spacing): the distance between rows, then between columns, as DICOM lists them."""
    spacings = _vectors(datasets, "PixelSpacing", 2)
    if spacings.min() <= 0:
        raise GeometryError("PixelSpacing is not positive")
    if np.abs(spacings - spacings[0]).max() > PIXEL_SPACING_TOLERANCE_MM:
        raise GeometryError("PixelSpacing differs between instances")
    return float(spacings[0][0]), float(spacings[0][1])


def _instance_number(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        return 0


def _slice_step(ordered: NDArray[np.float64], normal: NDArray[np.float64], first: Dataset, in_plane: float) -> float:
    """The distance between slice centres, (last - first) / (n - 1) along the normal as ITK computes it;
    refused unless every slice lies within the grid tolerance of where that regular grid puts it."""
    if len(ordered) == 1:  # no neighbour: the nominal value (it moves no voxel centre, see Grid.mismatches)
        nominal = first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0
        return float(nominal) if float(nominal) > 0 else 1.0
    along = ordered @ normal
    step = float(along[-1] - along[0]) / (len(ordered) - 1)
    tolerance = POSITION_TOLERANCE_VOXELS * min(in_plane, step)
    if float(np.diff(along).min()) <= tolerance:
        raise GeometryError("two instances share one slice position (duplicate ImagePositionPatient)")
    uneven = np.abs(along - (along[0] + step * np.arange(len(ordered)))).max()
    if uneven > tolerance:
        steps = np.diff(along)
        raise GeometryError(
            f"slice spacing is uneven ({steps.min():.4g} to {steps.max():.4g} mm between neighbours; missing slices?)"
        )
    in_plane_offsets = ordered - np.outer(along, normal)
    if np.linalg.norm(in_plane_offsets - in_plane_offsets[0], axis=1).max() > tolerance:
        raise GeometryError("slices are not stacked along their normal (gantry tilt or shear is unsupported)")
    return step


def _times(values: Sequence[float]) -> str:
    return "x".join(f"{v:.6g}" for v in values)


def _distinct(ours: Sequence[float], theirs: Sequence[float]) -> tuple[str, str]:
    """Two spacings written with as few digits as still tell them apart (from 4 significant digits up)."""
    for digits in range(4, 17):
        a, b = ("x".join(f"{v:.{digits}g}" for v in values) for values in (ours, theirs))
        if a != b:
            return a, b
    return a, b


def _hausdorff(a: NDArray[np.float64], b: NDArray[np.float64]) -> float:
    d = np.linalg.norm(a[:, np.newaxis, :] - b[np.newaxis, :, :], axis=2)
    return float(max(d.min(axis=1).max(), d.min(axis=0).max()))


def axis_mapping(ours: NDArray[np.float64], theirs: NDArray[np.float64]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """For each axis i of `theirs`, the axis of `ours` closest to it and the sign (+1/-1) that points it the
    same way. Only meaningful when `permutation` is one; callers check the resulting grid."""
    dots = theirs.T @ ours  # dots[i, j] = their axis i . our axis j
    permutation = tuple(int(np.argmax(np.abs(dots[i]))) for i in range(3))
    signs = tuple(1 if dots[i, permutation[i]] >= 0 else -1 for i in range(3))
    return permutation, signs


def _direction_change(ours: NDArray[np.float64], theirs: NDArray[np.float64]) -> str:
    """'axis z flipped', 'axes x, y, z are y, x, -z of the other' or the angle between each pair of axes."""
    permutation, signs = axis_mapping(theirs, ours)  # for each of our axes, the matching axis of theirs
    dots = [abs(float(ours[:, i] @ theirs[:, permutation[i]])) for i in range(3)]
    if sorted(permutation) == [0, 1, 2] and min(dots) > 1 - 1e-6:
        if permutation == (0, 1, 2):
            flipped = [_AXES[i] for i in range(3) if signs[i] < 0]
            return f"axis {flipped[0]} flipped" if len(flipped) == 1 else f"axes {' and '.join(flipped)} flipped"
        matched = ", ".join(("-" if s < 0 else "") + _AXES[p] for p, s in zip(permutation, signs, strict=True))
        return f"axes x, y, z are {matched} of the other"
    angles = [math.degrees(math.acos(max(-1.0, min(1.0, float(ours[:, i] @ theirs[:, i]))))) for i in range(3)]
    return ", ".join(f"axis {_AXES[i]} by {a:.3g} degrees" for i, a in enumerate(angles) if a > 1e-4) or "slightly"
