"""Mask files of a series' grid align to it, whichever tool wrote them (SimpleITK, nibabel's RAS affine in sform
or qform, pynrrd), also stored with axes flipped or swapped; the voxels land on the right slices; NumPy arrays
are checked by shape; any other grid is refused naming each difference; unreadable files name the file."""

from __future__ import annotations

from pathlib import Path

import nibabel
import nrrd
import numpy as np
import pytest
import SimpleITK as sitk
from numpy.typing import NDArray

from bridge.annotations.geometry import Grid, SeriesGeometry, series_geometry
from bridge.annotations.masks import GeometryMismatch, Mask, MaskError, align, read_mask
from tests.annotations.test_geometry import AXIAL, COLUMNS, OBLIQUE, ROWS, oriented_series, rotation

SLICES = 5
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(params=["axial", "oblique"])
def series(request: pytest.FixtureRequest) -> SeriesGeometry:
    return series_geometry(oriented_series(AXIAL if request.param == "axial" else OBLIQUE, count=SLICES))


def labels() -> NDArray[np.uint16]:
    """(z, y, x) labels: slice z holds value z + 1 in a block off the diagonal, so any flip or swap shows;
    one voxel of 300 so that values beyond a byte must survive."""
    array = np.zeros((SLICES, ROWS, COLUMNS), dtype=np.uint16)
    for z in range(SLICES):
        array[z, z + 1 : z + 4, 2 * z : 2 * z + 2] = z + 1
    array[4, 15, 0] = 300
    return array


def image_on(grid: Grid, array: NDArray[np.generic]) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def ras_affine(grid: Grid) -> NDArray[np.float64]:
    """The NIfTI (RAS) affine of `grid`: index (i, j, k) -> RAS mm."""
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ grid.axes @ np.diag(grid.spacing)
    affine[:3, 3] = LPS_TO_RAS @ np.array(grid.origin)
    return affine


def flipped_z(grid: Grid, array: NDArray[np.generic]) -> tuple[Grid, NDArray[np.generic]]:
    """The same voxels stored with z running the other way: origin at the last slice, z axis negated."""
    axes = grid.axes.copy()
    origin = np.array(grid.origin) + axes[:, 2] * grid.spacing[2] * (grid.size[2] - 1)
    axes[:, 2] *= -1
    flipped = Grid(grid.size, grid.spacing, tuple(float(v) for v in origin), tuple(float(v) for v in axes.ravel()))  # type: ignore[arg-type]
    return flipped, array[::-1].copy()


# -- NIfTI and NRRD ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".nhdr"])
def test_a_file_written_by_simpleitk_on_the_series_grid_aligns_exactly(
    tmp_path: Path, series: SeriesGeometry, suffix: str
) -> None:
    path = tmp_path / f"mask{suffix}"
    sitk.WriteImage(image_on(series.grid, labels()), str(path))

    mask = read_mask(path)

    assert mask.grid is not None and mask.grid.mismatches(series.grid) == []
    aligned = align(mask, series)
    np.testing.assert_array_equal(aligned, labels())
    assert aligned.dtype == np.uint16


@pytest.mark.parametrize(("sform", "qform"), [(1, 0), (0, 1), (2, 1), (1, 1)])
def test_nibabel_nifti_with_the_series_ras_affine_aligns(
    tmp_path: Path, series: SeriesGeometry, sform: int, qform: int
) -> None:
    """SimpleITK must turn the RAS affine back into the series' LPS grid, from the sform or the qform."""
    affine = ras_affine(series.grid)
    image = nibabel.Nifti1Image(labels().transpose(2, 1, 0), affine)  # indexes (i, j, k) = (x, y, z)
    image.set_sform(affine if sform else None, code=sform)
    image.set_qform(affine if qform else None, code=qform)
    path = tmp_path / "mask.nii.gz"
    nibabel.save(image, path)

    mask = read_mask(path)

    assert mask.grid is not None
    assert mask.grid.mismatches(series.grid) == []
    np.testing.assert_allclose(mask.grid.origin, series.grid.origin, atol=1e-4)
    np.testing.assert_allclose(mask.grid.direction, series.grid.direction, atol=1e-5)
    np.testing.assert_array_equal(align(mask, series), labels())


def test_a_nifti_whose_pixdim_contradicts_its_sform_is_refused_not_misplaced(
    tmp_path: Path, series: SeriesGeometry
) -> None:
    """ITK takes the spacing from pixdim, nibabel from the sform: where the two disagree the file is ambiguous,
    and the spacing check refuses it rather than putting labels where one of the readers would not."""
    image = nibabel.Nifti1Image(labels().transpose(2, 1, 0), None)  # pixdim stays 1, 1, 1
    image.set_sform(ras_affine(series.grid), code=1)
    path = tmp_path / "ambiguous.nii"
    nibabel.save(image, path)

    with pytest.raises(GeometryMismatch, match=r"spacing 1x1x1 vs 0\.6x0\.8x2\.5 mm"):
        align(read_mask(path), series)


@pytest.mark.parametrize(
    ("space", "to_space"),
    [("left-posterior-superior", np.eye(3)), ("right-anterior-superior", LPS_TO_RAS)],
)
@pytest.mark.parametrize("suffix", [".nrrd", ".nhdr"])
def test_pynrrd_file_aligns(
    tmp_path: Path, series: SeriesGeometry, space: str, to_space: NDArray[np.float64], suffix: str
) -> None:
    grid = series.grid
    header = {
        "space": space,
        "space directions": (to_space @ grid.axes @ np.diag(grid.spacing)).T,  # one row per axis
        "space origin": to_space @ np.array(grid.origin),
        "kinds": ["domain", "domain", "domain"],
    }
    path = tmp_path / f"mask{suffix}"
    nrrd.write(str(path), labels().transpose(2, 1, 0), header, detached_header=suffix == ".nhdr")

    mask = read_mask(path)

    assert mask.grid is not None and mask.grid.mismatches(grid) == []
    np.testing.assert_array_equal(align(mask, series), labels())


def test_a_z_flipped_nifti_aligns_with_its_slices_in_place(tmp_path: Path, series: SeriesGeometry) -> None:
    grid, stored = flipped_z(series.grid, labels())
    image = nibabel.Nifti1Image(stored.transpose(2, 1, 0), ras_affine(grid))  # as some tools write: z descending
    path = tmp_path / "flipped.nii.gz"
    nibabel.save(image, path)

    mask = read_mask(path)
    assert mask.grid is not None
    assert mask.grid.mismatches(series.grid) == ["origin differs by 10 mm", "direction differs (axis z flipped)"]
    aligned = align(mask, series)

    np.testing.assert_array_equal(aligned, labels())
    for z in range(SLICES):  # the labels of slice z are back on the series' slice z
        assert set(np.unique(aligned[z])) - {0, 300} == {z + 1}
    assert aligned[4, 15, 0] == 300
    assert aligned.flags.c_contiguous


def test_swapped_rows_and_columns_align(tmp_path: Path, series: SeriesGeometry) -> None:
    """PermuteAxes keeps every voxel where it is in space, storing x and y the other way round."""
    swapped = sitk.PermuteAxes(image_on(series.grid, labels()), [1, 0, 2])
    path = tmp_path / "swapped.nrrd"
    sitk.WriteImage(swapped, str(path))

    mask = read_mask(path)
    assert mask.array.shape == (SLICES, COLUMNS, ROWS)
    np.testing.assert_array_equal(align(mask, series), labels())


def test_swapped_and_flipped_axes_align(tmp_path: Path, series: SeriesGeometry) -> None:
    grid, stored = flipped_z(series.grid, labels())
    path = tmp_path / "both.nii.gz"
    sitk.WriteImage(sitk.PermuteAxes(image_on(grid, stored), [2, 0, 1]), str(path))  # axes (z, x, y)

    mask = read_mask(path)
    assert mask.array.shape == (ROWS, COLUMNS, SLICES)
    np.testing.assert_array_equal(align(mask, series), labels())


def test_a_flipped_mask_of_another_grid_names_the_remaining_difference(tmp_path: Path, series: SeriesGeometry) -> None:
    grid, stored = flipped_z(series.grid, labels())
    x, y, z = grid.origin
    moved = Grid(grid.size, grid.spacing, (x + 3.0, y, z), grid.direction)
    path = tmp_path / "moved.nii"
    sitk.WriteImage(image_on(moved, stored), str(path))

    with pytest.raises(GeometryMismatch) as raised:
        align(read_mask(path), series)

    assert raised.value.mismatches == ["origin differs by 3 mm"]
    assert "series x, y, z = mask x, y, -z" in str(raised.value)


# -- refusals ----------------------------------------------------------------------------------------------


def other_grid(grid: Grid, change: str) -> Grid:
    x, y, z = grid.origin
    size, spacing, origin = grid.size, grid.spacing, grid.origin
    if change in ("origin", "all"):
        origin = (x, y + 12.5, z)
    if change in ("spacing", "all"):
        spacing = (grid.spacing[0], grid.spacing[1], 5.0)
    if change in ("size", "all"):
        size = (grid.size[0], grid.size[1], grid.size[2] - 1)
    return Grid(size, spacing, origin, grid.direction)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("origin", ["origin differs by 12.5 mm"]),
        ("spacing", ["spacing 0.6x0.8x2.5 vs 0.6x0.8x5 mm"]),
        ("size", ["size 12x16x4 vs 12x16x5"]),
        ("all", ["size 12x16x4 vs 12x16x5", "spacing 0.6x0.8x5 vs 0.6x0.8x2.5 mm", "origin differs by 12.5 mm"]),
    ],
)
def test_a_mask_of_another_grid_is_refused_naming_every_mismatch(
    tmp_path: Path, series: SeriesGeometry, change: str, named: list[str]
) -> None:
    grid = other_grid(series.grid, change)
    path = tmp_path / "other.nii.gz"
    sitk.WriteImage(image_on(grid, labels()[: grid.size[2]]), str(path))

    with pytest.raises(GeometryMismatch) as raised:
        align(read_mask(path), series)

    if change == "spacing":  # the mask's value comes first
        named = ["spacing 0.6x0.8x5 vs 0.6x0.8x2.5 mm"]
    assert raised.value.mismatches == named
    for mismatch in named:
        assert mismatch in str(raised.value)


def test_a_rotated_mask_is_refused_not_resampled(tmp_path: Path) -> None:
    series = series_geometry(oriented_series(AXIAL, count=SLICES))
    grid = series.grid
    rotated = Grid(grid.size, grid.spacing, grid.origin, tuple(float(v) for v in rotation(2, 20).ravel()))
    path = tmp_path / "rotated.nii"
    sitk.WriteImage(image_on(rotated, labels()), str(path))

    with pytest.raises(GeometryMismatch, match=r"direction differs \(axis x by 20 degrees, axis y by 20 degrees\)"):
        align(read_mask(path), series)


# -- NumPy -------------------------------------------------------------------------------------------------


def test_numpy_arrays_of_the_right_shape_align(tmp_path: Path, series: SeriesGeometry) -> None:
    np.save(tmp_path / "mask.npy", labels())
    np.savez_compressed(tmp_path / "named.npz", mask=labels(), other=np.zeros(3))
    np.savez(tmp_path / "only.npz", anything=labels() > 0)

    for name in ("mask.npy", "named.npz"):
        mask = read_mask(tmp_path / name)
        assert mask.grid is None
        np.testing.assert_array_equal(align(mask, series), labels())
    only = read_mask(tmp_path / "only.npz")
    assert only.array.dtype == np.uint8
    np.testing.assert_array_equal(align(only, series), labels() > 0)


def test_a_numpy_array_of_the_wrong_shape_is_refused_with_the_expected_shape(
    tmp_path: Path, series: SeriesGeometry
) -> None:
    np.save(tmp_path / "mask.npy", labels().transpose(2, 1, 0))  # (x, y, z): the classic mistake

    with pytest.raises(GeometryMismatch, match=r"12x16x5 does not fit .* must be 5x16x12 \(slices x rows x columns"):
        align(read_mask(tmp_path / "mask.npy"), series)


def test_an_npz_with_several_arrays_none_named_mask_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=labels(), b=labels())
    with pytest.raises(MaskError, match=r"two\.npz: the archive holds arrays a, b: name the mask 'mask'"):
        read_mask(tmp_path / "two.npz")


# -- values ------------------------------------------------------------------------------------------------


def test_integral_floats_become_integer_labels(tmp_path: Path, series: SeriesGeometry) -> None:
    path = tmp_path / "float.nii.gz"
    sitk.WriteImage(image_on(series.grid, labels().astype(np.float32)), str(path))

    mask = read_mask(path)

    assert np.issubdtype(mask.array.dtype, np.integer)
    np.testing.assert_array_equal(align(mask, series), labels())


def test_fractional_values_are_refused(tmp_path: Path, series: SeriesGeometry) -> None:
    values = labels().astype(np.float32)
    values[0, 0, 0] = 0.5
    sitk.WriteImage(image_on(series.grid, values), str(tmp_path / "prob.nii"))
    np.save(tmp_path / "nan.npy", np.full((SLICES, ROWS, COLUMNS), np.nan))

    with pytest.raises(MaskError, match=r"prob\.nii: voxel values are not integer labels"):
        read_mask(tmp_path / "prob.nii")
    with pytest.raises(MaskError, match=r"nan\.npy: voxel values are not integer labels"):
        read_mask(tmp_path / "nan.npy")


# -- unreadable files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mask.nii", "mask.nii.gz", "mask.nrrd", "mask.nhdr", "mask.npy", "mask.npz"])
def test_a_garbage_file_is_a_mask_error_naming_the_file_not_its_folder(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "DOE^JOHN"
    folder.mkdir()
    path = folder / name
    path.write_bytes(b"this is not a mask\x00\x01\x02" * 20)

    with pytest.raises(MaskError) as raised:
        read_mask(path)

    assert str(raised.value).startswith(f"{name}: not a readable")
    assert "DOE" not in str(raised.value)


def test_unsupported_missing_and_misshapen_files_are_refused(tmp_path: Path, series: SeriesGeometry) -> None:
    (tmp_path / "mask.png").write_bytes(b"\x89PNG")
    np.save(tmp_path / "flat.npy", np.zeros((ROWS, COLUMNS)))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((ROWS, COLUMNS), np.uint8)), str(tmp_path / "flat.nrrd"))
    vector = sitk.GetImageFromArray(np.zeros((SLICES, ROWS, COLUMNS, 3), np.uint8), isVector=True)
    sitk.WriteImage(vector, str(tmp_path / "rgb.nrrd"))

    with pytest.raises(MaskError, match=r"mask\.png: unsupported mask file type"):
        read_mask(tmp_path / "mask.png")
    with pytest.raises(MaskError, match=r"absent\.nii: no such file"):
        read_mask(tmp_path / "absent.nii")
    with pytest.raises(MaskError, match=r"flat\.npy: a 2-D array"):
        read_mask(tmp_path / "flat.npy")
    with pytest.raises(MaskError, match=r"flat\.nrrd: a 2-D image"):
        read_mask(tmp_path / "flat.nrrd")
    with pytest.raises(MaskError, match=r"rgb\.nrrd: 3 values per voxel"):
        read_mask(tmp_path / "rgb.nrrd")


def test_a_mask_checks_its_array_against_its_grid(series: SeriesGeometry) -> None:
    with pytest.raises(ValueError, match="does not fit grid size"):
        Mask(labels()[:4], series.grid)
