"""Agreement figures against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.typing import NDArray

from bridge.annotations.agreement import PairAgreement, dice, hausdorff95, majority_vote, pairwise, staple

Mask = NDArray[np.bool_]


def _mask(shape: tuple[int, int, int], *voxels: tuple[int, int, int]) -> Mask:
    mask = np.zeros(shape, dtype=bool)
    for voxel in voxels:
        mask[voxel] = True
    return mask


def _box(shape: tuple[int, int, int], z: slice, y: slice, x: slice) -> Mask:
    mask = np.zeros(shape, dtype=bool)
    mask[z, y, x] = True
    return mask


# --- Dice


def test_dice_of_cubes_offset_by_one_voxel() -> None:
    a = _box((5, 5, 6), slice(1, 4), slice(1, 4), slice(1, 4))
    b = _box((5, 5, 6), slice(1, 4), slice(1, 4), slice(2, 5))
    # 3x3x3 each; overlap x in {2, 3}: 3*3*2 = 18; dice = 2*18 / (27+27) = 36/54 = 2/3
    assert dice(a, b) == pytest.approx(2 / 3)


def test_dice_of_one_voxel_thick_plates_offset_by_one_row() -> None:
    a = _box((3, 6, 4), slice(1, 2), slice(0, 4), slice(0, 4))
    b = _box((3, 6, 4), slice(1, 2), slice(1, 5), slice(0, 4))
    # 4x4 plates; overlap rows 1..3: 3*4 = 12; dice = 2*12 / (16+16) = 0.75
    assert dice(a, b) == pytest.approx(0.75)


def test_dice_of_empty_masks() -> None:
    empty = np.zeros((2, 3, 4), dtype=bool)
    assert dice(empty, empty) == 1.0  # nobody drew anything: full agreement
    assert dice(empty, _mask((2, 3, 4), (0, 0, 0))) == 0.0  # 2*0 / (0+1)


def test_dice_refuses_masks_of_other_shapes() -> None:
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(2, 3, 5\)"):
        dice(np.zeros((2, 3, 4), dtype=bool), np.zeros((2, 3, 5), dtype=bool))


# --- HD95


def test_hd95_of_single_voxels_three_apart_along_x() -> None:
    a = _mask((1, 1, 6), (0, 0, 1))
    b = _mask((1, 1, 6), (0, 0, 4))
    # each voxel is its own surface; both directed distances are 3 columns * 0.7 mm = 2.1 mm
    assert hausdorff95(a, b, (2.5, 0.7, 0.7)) == pytest.approx(2.1)


def test_hd95_scales_each_axis_by_its_own_spacing() -> None:
    shape = (3, 3, 3)
    centre = _mask(shape, (1, 1, 1))
    spacing = (2.5, 0.5, 0.7)  # (z, y, x)
    assert hausdorff95(centre, _mask(shape, (2, 1, 1)), spacing) == pytest.approx(2.5)  # one slice
    assert hausdorff95(centre, _mask(shape, (1, 2, 1)), spacing) == pytest.approx(0.5)  # one row
    assert hausdorff95(centre, _mask(shape, (1, 1, 2)), spacing) == pytest.approx(0.7)  # one column
    # one slice and one column: sqrt(2.5^2 + 0.7^2) = sqrt(6.74)
    assert hausdorff95(centre, _mask(shape, (2, 1, 2)), spacing) == pytest.approx(math.sqrt(6.74))
    # the same offsets in voxels without spacing would all be 1 or sqrt(2)
    assert hausdorff95(centre, _mask(shape, (2, 1, 2)), (1.0, 1.0, 1.0)) == pytest.approx(math.sqrt(2))


def test_hd95_is_a_percentile_not_the_maximum() -> None:
    # One slice, so every voxel of a mask is surface (its slice neighbours are beyond the array's edge).
    # A: row 2, columns 0..9, plus (0, 0). B: row 3, columns 0..9, plus (5, 0). Spacing y = 0.5 mm.
    a = np.zeros((1, 6, 10), dtype=bool)
    b = np.zeros((1, 6, 10), dtype=bool)
    a[0, 2, :] = True
    a[0, 0, 0] = True
    b[0, 3, :] = True
    b[0, 5, 0] = True
    # A->B: the 10 row voxels 1 row away (0.5 mm), (0, 0) 3 rows from (3, 0) (1.5 mm)
    # B->A: the 10 row voxels 1 row away (0.5 mm), (5, 0) 3 rows from (2, 0) (1.5 mm)
    # pooled: 20 x 0.5 and 2 x 1.5, 22 values; numpy's linear rank = 0.95 * (22 - 1) = 19.95,
    # sorted[19] = 0.5, sorted[20] = 1.5: 0.5 + 0.95 * (1.5 - 0.5) = 1.45 (the maximum is 1.5)
    assert hausdorff95(a, b, (5.0, 0.5, 0.8)) == pytest.approx(1.45)
    # the same masks inside a larger volume: the same answer (the work is cut to the masks' bounding box)
    big_a, big_b = np.zeros((4, 20, 30), dtype=bool), np.zeros((4, 20, 30), dtype=bool)
    big_a[2:3, 7:13, 11:21], big_b[2:3, 7:13, 11:21] = a, b
    # in 4 slices the row voxels are no longer alone in z, but a 1-voxel-thick plate is all surface still
    assert hausdorff95(big_a, big_b, (5.0, 0.5, 0.8)) == pytest.approx(1.45)


def test_hd95_interpolates_between_overlapping_runs() -> None:
    a = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(0, 2))  # columns 0, 1
    b = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(1, 4))  # columns 1, 2, 3
    # A->B: 0 -> 0.7, 1 -> 0; B->A: 1 -> 0, 2 -> 0.7, 3 -> 1.4; sorted [0, 0, 0.7, 0.7, 1.4]
    # rank 0.95 * 4 = 3.8: 0.7 + 0.8 * (1.4 - 0.7) = 1.26
    assert hausdorff95(a, b, (2.5, 0.7, 0.7)) == pytest.approx(1.26)


def test_hd95_surface_excludes_the_inside() -> None:
    # A filled 5x5x5 cube and the same cube hollowed out (its 3x3x3 core removed) have the same surface: every
    # shell voxel touches the outside, and the filled cube's 27 core voxels are not surface. hd95 = 0.
    # Were every voxel surface, the core would add 26 distances of 1 and one of 2 to 196 zeros: 223 values,
    # rank 0.95 * 222 = 210.9 falls among the ones, and hd95 would be 1.
    filled = _box((7, 7, 7), slice(1, 6), slice(1, 6), slice(1, 6))
    hollow = filled.copy()
    hollow[2:5, 2:5, 2:5] = False
    assert hausdorff95(filled, hollow, (1.0, 1.0, 1.0)) == 0.0


def test_hd95_array_edge_counts_as_outside() -> None:
    # A fills the whole 3x3x3 array: its surface is the 26 voxels at the array's edge, the centre is inside.
    # B is the centre alone. B->A: 1. A->B: 6 face centres at 1, 12 edge voxels at sqrt(2), 8 corners at sqrt(3).
    # pooled 27 values: 7 x 1, 12 x sqrt(2), 8 x sqrt(3); rank 0.95 * 26 = 24.7 lies in sorted[19..26] = sqrt(3)
    full = np.ones((3, 3, 3), dtype=bool)
    assert hausdorff95(full, _mask((3, 3, 3), (1, 1, 1)), (1.0, 1.0, 1.0)) == pytest.approx(math.sqrt(3))


def test_hd95_of_empty_masks() -> None:
    empty = np.zeros((2, 3, 4), dtype=bool)
    assert hausdorff95(empty, empty, (1.0, 1.0, 1.0)) == 0.0
    assert hausdorff95(empty, _mask((2, 3, 4), (1, 1, 1)), (1.0, 1.0, 1.0)) is None
    assert hausdorff95(_mask((2, 3, 4), (1, 1, 1)), empty, (1.0, 1.0, 1.0)) is None


def test_hd95_refuses_other_shapes_and_bad_spacing() -> None:
    one = _mask((2, 3, 4), (1, 1, 1))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\) and \(2, 4, 3\)"):
        hausdorff95(one, np.zeros((2, 4, 3), dtype=bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(one, one, (1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        hausdorff95(one, one, (1.0, 0.0, 1.0))


# --- Majority vote


def test_majority_of_three_masks() -> None:
    a = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(0, 3))  # columns 0, 1, 2
    b = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(1, 4))  # columns 1, 2, 3
    c = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(2, 5))  # columns 2, 3, 4
    # votes per column: 1, 2, 3, 2, 1; more than 3/2 needs 2: columns 1, 2, 3
    assert majority_vote([a, b, c])[0, 0].tolist() == [False, True, True, True, False]


def test_majority_of_two_needs_both_and_of_four_needs_three() -> None:
    a = _box((1, 1, 4), slice(0, 1), slice(0, 1), slice(0, 2))  # columns 0, 1
    b = _box((1, 1, 4), slice(0, 1), slice(0, 1), slice(1, 3))  # columns 1, 2
    assert majority_vote([a, b])[0, 0].tolist() == [False, True, False, False]
    c = _box((1, 1, 4), slice(0, 1), slice(0, 1), slice(0, 4))  # all
    # votes with a, b, c, c: 3, 4, 3, 2; more than 4/2 needs 3: columns 0, 1, 2
    assert majority_vote([a, b, c, c])[0, 0].tolist() == [True, True, True, False]


def test_majority_refuses_no_masks_and_other_shapes() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        majority_vote([])
    with pytest.raises(ValueError, match=r"\(1, 1, 4\), \(1, 1, 5\)"):
        majority_vote([np.zeros((1, 1, 4), dtype=bool), np.zeros((1, 1, 5), dtype=bool)])


# --- STAPLE


@pytest.fixture
def filters(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every STAPLE filter that `staple` makes, kept to read what SimpleITK estimated."""
    made: list[Any] = []
    real = sitk.STAPLEImageFilter

    def recording() -> Any:
        made.append(real())  # type: ignore[no-untyped-call]
        return made[-1]

    monkeypatch.setattr(sitk, "STAPLEImageFilter", recording)
    return made


def test_staple_two_agreeing_raters_outvote_the_third(filters: list[Any]) -> None:
    shape = (3, 4, 5)  # 60 voxels
    a = _box(shape, slice(1, 2), slice(1, 3), slice(1, 4))  # 2x3 = 6 voxels
    c = _box(shape, slice(1, 2), slice(0, 2), slice(0, 3))  # 2x3 = 6 voxels; with a: row 1, columns 1, 2 = 2
    # Raters 1 and 2 agree everywhere: once the estimate follows them, their sensitivity and specificity are 1,
    # so the likelihood of the other label where they agree is 0 and the estimate is exactly a.
    # Rater 3 is then judged against a: sensitivity 2/6, specificity (60 - 6 - 4) / (60 - 6) = 50/54.
    assert np.array_equal(staple([a, a, c]), a)
    assert len(filters) == 1  # SimpleITK did the estimate
    assert filters[0].GetSensitivity() == pytest.approx((1.0, 1.0, 2 / 6))
    assert filters[0].GetSpecificity() == pytest.approx((1.0, 1.0, 50 / 54))


def test_staple_of_identical_masks_is_that_mask(filters: list[Any]) -> None:
    # SimpleITK answers NaN everywhere for raters who all draw nothing (or everything): 0/0 in its estimate
    shape = (2, 3, 4)
    drawn = _box(shape, slice(0, 1), slice(1, 3), slice(1, 3))
    for mask in (drawn, np.zeros(shape, dtype=bool), np.ones(shape, dtype=bool)):
        combined = staple([mask, mask, mask])
        assert np.array_equal(combined, mask)
        assert combined is not mask
    assert filters == []  # nothing to weigh


def test_staple_threshold_is_strict(filters: list[Any]) -> None:
    # Two raters, one draws a, the other nothing: STAPLE cannot tell whom to believe and gives 0.5 on a.
    # Strictly above the threshold, as the majority vote: 0.5 keeps nothing, 0.4 keeps a.
    a = _box((1, 4, 5), slice(0, 1), slice(1, 3), slice(1, 4))
    empty = np.zeros_like(a)
    assert not staple([a, empty]).any()
    assert np.array_equal(staple([a, empty], threshold=0.4), a)
    assert len(filters) == 2


def test_staple_refuses_one_mask_other_shapes_and_bad_threshold() -> None:
    one = np.zeros((1, 2, 2), dtype=bool)
    with pytest.raises(ValueError, match="at least 2"):
        staple([one])
    with pytest.raises(ValueError, match="same shape"):
        staple([one, np.zeros((1, 2, 3), dtype=bool)])
    with pytest.raises(ValueError, match="threshold"):
        staple([one, one], threshold=1.0)


def test_staple_without_an_estimate_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoEstimate:
        def SetForegroundValue(self, value: float) -> None:  # noqa: N802 (SimpleITK's name)
            pass

        def Execute(self, images: list[sitk.Image]) -> sitk.Image:  # noqa: N802
            return sitk.GetImageFromArray(np.full((1, 2, 2), np.nan))

    monkeypatch.setattr(sitk, "STAPLEImageFilter", NoEstimate)
    with pytest.raises(ValueError, match="no estimate"):
        staple([np.zeros((1, 2, 2), dtype=bool), np.ones((1, 2, 2), dtype=bool)])


# --- Pairs


def test_pairwise_every_pair_once_in_name_order() -> None:
    alice = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(0, 2))  # columns 0, 1
    bob = _box((1, 1, 5), slice(0, 1), slice(0, 1), slice(1, 4))  # columns 1, 2, 3
    carol = np.zeros((1, 1, 5), dtype=bool)
    pairs = pairwise("Liver", {"carol": carol, "bob": bob, "alice": alice}, (2.5, 0.7, 0.7))
    assert pairs == [
        # dice 2*1 / (2+3) = 0.4; hd95 1.26 as in test_hd95_interpolates_between_overlapping_runs
        PairAgreement("Liver", "alice", "bob", pytest.approx(0.4), pytest.approx(1.26)),  # type: ignore[arg-type]
        PairAgreement("Liver", "alice", "carol", 0.0, None),  # carol drew nothing: no distance
        PairAgreement("Liver", "bob", "carol", 0.0, None),
    ]
    assert pairwise("Liver", {"alice": alice}, (1.0, 1.0, 1.0)) == []
