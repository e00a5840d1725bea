"""Label masks from files (NIfTI, NRRD, NumPy), and their alignment to a series without resampling.

A mask is only trusted on the series' own grid: resampling would invent labels, and guessing an orientation
would put them on the wrong slices. So `align` accepts a mask whose grid is the series' grid (within
`geometry.POSITION_TOLERANCE_VOXELS`), or the same voxels stored in another axis order or sign (a NIfTI whose z
runs the other way, as some tools write): then the array is permuted and flipped, never interpolated. A bare
array (.npy/.npz) has no geometry: only its shape is checked, and it must be in the series' index order.

NIfTI and NRRD are read with SimpleITK, which turns NIfTI's RAS (sform or qform) and NRRD's declared space
into LPS, so a mask grid compares directly with `series_geometry`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray

from bridge.annotations.geometry import Grid, SeriesGeometry, axis_mapping

logger = logging.getLogger(__name__)

#: file types by name ending, and the ITK reader each needs (named, so a PNG called .nii is not read as PNG)
_IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO"}
_ARRAYS = (".npy", ".npz")
_NPZ_KEY = "mask"
_AXES = "xyz"
_SAME_AXIS_COSINE = 0.99  # about 8 degrees

Labels = NDArray[np.integer[Any]]


class MaskError(ValueError):
    """A mask file that cannot be used: the message names the file (its name only, not its folder) and why."""


class GeometryMismatch(MaskError):
    """The mask's grid is not the series' grid; `mismatches` lists each difference (`Grid.mismatches`)."""

    def __init__(self, message: str, mismatches: list[str]) -> None:
        super().__init__(message)
        self.mismatches = mismatches


@dataclass(frozen=True, eq=False)  # an array has no single truth value: masks compare by identity
class Mask:
    """Integer labels (z, y, x), 0 = background, and the grid the file declares (None for NumPy files)."""

    array: Labels
    grid: Grid | None

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"a mask array is 3-D (z, y, x), not {self.array.ndim}-D")
        if self.grid is not None and self.array.shape != _shape(self.grid):
            raise ValueError(f"array shape {self.array.shape} does not fit grid size {self.grid.size} (x, y, z)")


def read_mask(path: Path) -> Mask:
    """The labels and grid of a .nii, .nii.gz, .nrrd, .nhdr, .npy or .npz file (npz: the array named "mask",
    or its only array). Floating-point voxels are accepted only when every value is an integer."""
    path = Path(path)
    name = path.name
    lowered = name.lower()
    if not lowered.endswith((*_IMAGE_IO, *_ARRAYS)):
        raise MaskError(f"{name}: unsupported mask file type (use .nii, .nii.gz, .nrrd, .nhdr, .npy or .npz)")
    if not path.is_file():
        raise MaskError(f"{name}: no such file")
    io = next((reader for suffix, reader in _IMAGE_IO.items() if lowered.endswith(suffix)), None)
    if io is not None:
        array, grid = _read_image(path, io)
    else:
        array, grid = _read_array(path, npz=lowered.endswith(".npz")), None
    return Mask(_labels(array, name), grid)


def align(mask: Mask, series: SeriesGeometry) -> Labels:
    """The mask's labels (z, y, x) in the series' index order; GeometryMismatch naming every difference when
    the mask's grid is not the series' grid up to axis order and sign (nothing is resampled)."""
    target = series.grid
    if mask.grid is None:
        if mask.array.shape != _shape(target):
            expected = "x".join(map(str, _shape(target)))
            found = "x".join(map(str, mask.array.shape))
            raise GeometryMismatch(
                f"array shape {found} does not fit the series: a NumPy mask must be {expected} "
                "(slices x rows x columns, in the series' index order)",
                [f"shape {found} vs {expected}"],
            )
        return mask.array
    mismatches = mask.grid.mismatches(target)
    if not mismatches:
        return mask.array
    reoriented = _reorient(mask.array, mask.grid, target)
    if reoriented is None:
        raise GeometryMismatch(
            f"the mask's grid is not the series' grid (mask vs series): {'; '.join(mismatches)}", mismatches
        )
    array, grid, how = reoriented
    remaining = grid.mismatches(target)
    if remaining:
        raise GeometryMismatch(
            f"the mask's grid is not the series' grid (mask vs series, after reorienting: {how}): "
            f"{'; '.join(remaining)}",
            remaining,
        )
    logger.debug("mask reoriented to the series' index order (%s)", how)
    return array


def _shape(grid: Grid) -> tuple[int, int, int]:
    """The numpy shape (z, y, x) of an array on `grid`."""
    return grid.size[2], grid.size[1], grid.size[0]


def _read_image(path: Path, io: str) -> tuple[NDArray[Any], Grid]:
    try:
        # SimpleITK's Image methods carry no annotations: one Any at this edge instead of an ignore per call
        image: Any = sitk.ReadImage(str(path), imageIO=io)
    except RuntimeError as exc:
        raise MaskError(
            f"{path.name}: not a readable {io.removesuffix('ImageIO')} file ({_reason(exc, path)})"
        ) from None
    if image.GetDimension() != 3:
        raise MaskError(f"{path.name}: a {image.GetDimension()}-D image; a mask is a 3-D volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise MaskError(f"{path.name}: {image.GetNumberOfComponentsPerPixel()} values per voxel; a mask has one label")
    size, spacing, origin = image.GetSize(), image.GetSpacing(), image.GetOrigin()
    try:
        grid = Grid(
            size=(int(size[0]), int(size[1]), int(size[2])),
            spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
            origin=(float(origin[0]), float(origin[1]), float(origin[2])),
            direction=tuple(float(v) for v in image.GetDirection()),
        )
    except ValueError as exc:
        raise MaskError(f"{path.name}: {exc}") from None
    return sitk.GetArrayFromImage(image), grid


def _reason(exc: RuntimeError, path: Path) -> str:
    """ITK's own reason, without its source location or the file's full path (folders may name a patient)."""
    lines = [line for line in str(exc).splitlines() if "ITK ERROR" in line or "ITK EXCEPTION" in line]
    reason = lines[-1].split("): ", 1)[-1] if lines else "unknown format or damaged file"
    return reason.replace(str(path), path.name).replace(str(path.parent), "").strip()[:200]


def _read_array(path: Path, *, npz: bool) -> NDArray[Any]:
    kind = "NumPy .npz archive" if npz else "NumPy .npy file"
    try:
        loaded = np.load(path, allow_pickle=False)
    except Exception:  # numpy raises ValueError, OSError, EOFError, zipfile errors... all mean "not this format"
        raise MaskError(f"{path.name}: not a readable {kind}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            names = list(loaded.files)
            if _NPZ_KEY in names:
                key = _NPZ_KEY
            elif len(names) == 1:
                key = names[0]
            else:
                listed = ", ".join(sorted(names)) or "none"
                raise MaskError(f"{path.name}: the archive holds arrays {listed}: name the mask {_NPZ_KEY!r}")
            try:
                array = np.asarray(loaded[key])
            except Exception:  # a damaged member: zlib, zipfile or format errors
                raise MaskError(f"{path.name}: array {key!r} in the archive is not readable") from None
    elif isinstance(loaded, np.ndarray):
        array = loaded
    else:
        raise MaskError(f"{path.name}: not a readable {kind}")
    if array.ndim != 3:
        raise MaskError(f"{path.name}: a {array.ndim}-D array; a mask is 3-D (slices, rows, columns)")
    return array


def _labels(array: NDArray[Any], name: str) -> Labels:
    """Integer labels as stored; bool as uint8; floats cast to the smallest integer type, only if integral."""
    if array.size == 0:
        raise MaskError(f"{name}: the mask has no voxels")
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.integer):
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise MaskError(f"{name}: voxels of type {array.dtype} are not labels")
    if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
        raise MaskError(f"{name}: voxel values are not integer labels ({array.dtype} with fractions or NaN)")
    low, high = int(array.min()), int(array.max())
    if low < np.iinfo(np.int32).min or high > np.iinfo(np.int32).max:
        raise MaskError(f"{name}: label values {low}..{high} are out of range")
    dtype = np.result_type(np.min_scalar_type(low), np.min_scalar_type(high))
    return array.astype(dtype)


def _reorient(array: Labels, grid: Grid, target: Grid) -> tuple[Labels, Grid, str] | None:
    """The array and grid with the mask's axes permuted and flipped onto the target's, or None when the axes
    are not a permutation of the target's or already in its order and sign (nothing to reorient)."""
    ours = grid.axes
    permutation, signs = axis_mapping(ours, target.axes)  # target axis i = signs[i] * our axis permutation[i]
    if sorted(permutation) != [0, 1, 2] or (permutation == (0, 1, 2) and min(signs) > 0):
        return None
    # only axes that nearly coincide are worth reordering: for anything more rotated the plain mismatch is clearer
    if min(abs(float(target.axes[:, i] @ ours[:, permutation[i]])) for i in range(3)) < _SAME_AXIS_COSINE:
        return None
    by_axis = array.transpose(2, 1, 0)  # index [x, y, z]
    moved = by_axis.transpose(permutation)
    flips = tuple(i for i in range(3) if signs[i] < 0)
    if flips:
        moved = np.flip(moved, axis=flips)
    origin = np.array(grid.origin, dtype=np.float64)
    for i in flips:
        axis = permutation[i]
        origin += ours[:, axis] * grid.spacing[axis] * (grid.size[axis] - 1)
    direction = np.column_stack([signs[i] * ours[:, permutation[i]] for i in range(3)])
    reoriented = Grid(
        size=(grid.size[permutation[0]], grid.size[permutation[1]], grid.size[permutation[2]]),
        spacing=(grid.spacing[permutation[0]], grid.spacing[permutation[1]], grid.spacing[permutation[2]]),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        direction=tuple(float(v) for v in direction.ravel()),
    )
    how = "series x, y, z = mask " + ", ".join(("-" if signs[i] < 0 else "") + _AXES[permutation[i]] for i in range(3))
    return np.ascontiguousarray(moved.transpose(2, 1, 0)), reoriented, how
