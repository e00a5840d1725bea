"""How far annotators' masks agree, and how several masks are combined into one.

Pure functions over boolean arrays indexed (z, y, x); spacing is (z, y, x) in millimetres. Direction cosines are
orthonormal, so a distance in patient space is a voxel offset scaled by the spacing: no geometry needed here.
Dice and the 95th-percentile Hausdorff distance follow MedPy's `dc` and `hd95`, so figures compare with the
literature; the combination is a strict majority vote or SimpleITK's STAPLE.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import SimpleITK as sitk
from numpy.typing import NDArray
from scipy import ndimage

Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class PairAgreement:
    """Agreement of two annotators on one label; `hausdorff95_mm` is None where only one of them drew it."""

    label: str
    first: str
    second: str
    dice: float
    hausdorff95_mm: float | None


def dice(a: NDArray[Any], b: NDArray[Any]) -> float:
    """2|A∩B| / (|A|+|B|); two empty masks agree perfectly (1.0), as nobody drew anything."""
    first, second = _pair(a, b)
    total = np.count_nonzero(first) + np.count_nonzero(second)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(first & second) / total


def hausdorff95(a: NDArray[Any], b: NDArray[Any], spacing: Sequence[float]) -> float | None:
    """MedPy's `hd95` in mm: the 95th percentile of both directed surface-to-surface distance sets, pooled.

    Surface voxels are those of the mask with a face neighbour outside it (the array's edge counts as outside).
    Both empty: 0.0; exactly one empty: None, since no distance exists.
    """
    first, second = _pair(a, b)
    sampling = _sampling(spacing, first.ndim)
    first_empty, second_empty = not first.any(), not second.any()
    if first_empty and second_empty:
        return 0.0
    if first_empty or second_empty:
        return None
    first, second = _crop_to_union(first, second)
    first_surface, second_surface = _surface(first), _surface(second)
    # distance_transform_edt measures to the nearest zero, so invert the surface it is measured to
    to_second = ndimage.distance_transform_edt(~second_surface, sampling=sampling)[first_surface]
    to_first = ndimage.distance_transform_edt(~first_surface, sampling=sampling)[second_surface]
    return float(np.percentile(np.concatenate((to_second, to_first)), 95))


def majority_vote(masks: Sequence[NDArray[Any]]) -> Mask:
    """Voxels marked by more than half of the masks: a strict majority, so two masks must both mark a voxel."""
    stack = _stack(masks, at_least=1)
    return np.asarray(2 * np.count_nonzero(stack, axis=0) > len(masks), dtype=np.bool_)


def staple(masks: Sequence[NDArray[Any]], threshold: float = 0.5) -> Mask:
    """SimpleITK's STAPLE estimate, voxels whose probability is above `threshold` (strictly, as the majority).

    Identical masks (all empty or all full included) are returned as they are: STAPLE has nothing to weigh
    there, and SimpleITK answers NaN everywhere for empty or full ones (0/0 in the sensitivity estimate).
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"STAPLE threshold must be in [0, 1), not {threshold}")
    stack = _stack(masks, at_least=2)
    if bool((stack == stack[0]).all()):
        same: Mask = stack[0].copy()
        return same
    images = [sitk.GetImageFromArray(mask.astype(np.uint8)) for mask in stack]
    estimator: Any = sitk.STAPLEImageFilter()  # type: ignore[no-untyped-call]
    estimator.SetForegroundValue(1.0)
    probability = sitk.GetArrayFromImage(estimator.Execute(images))
    if np.isnan(probability).any():
        raise ValueError(f"STAPLE found no estimate for these {len(stack)} masks (NaN probabilities)")
    return np.asarray(probability > threshold, dtype=np.bool_)


def pairwise(
    label: str, masks_by_annotator: Mapping[str, NDArray[Any]], spacing: Sequence[float]
) -> list[PairAgreement]:
    """Dice and HD95 of every unordered pair of annotators, names sorted, so reports come out the same each run."""
    names = sorted(masks_by_annotator)
    return [
        PairAgreement(
            label=label,
            first=first,
            second=second,
            dice=dice(masks_by_annotator[first], masks_by_annotator[second]),
            hausdorff95_mm=hausdorff95(masks_by_annotator[first], masks_by_annotator[second], spacing),
        )
        for first, second in combinations(names, 2)
    ]


def _pair(a: NDArray[Any], b: NDArray[Any]) -> tuple[Mask, Mask]:
    first, second = np.asarray(a, dtype=np.bool_), np.asarray(b, dtype=np.bool_)
    if first.shape != second.shape:
        raise ValueError(f"masks to compare must have the same shape, not {first.shape} and {second.shape}")
    return first, second


def _stack(masks: Sequence[NDArray[Any]], *, at_least: int) -> Mask:
    if len(masks) < at_least:
        raise ValueError(f"at least {at_least} masks are needed to combine, not {len(masks)}")
    shapes = sorted({np.shape(mask) for mask in masks})
    if len(shapes) > 1:
        raise ValueError(f"masks to combine must have the same shape, not {', '.join(map(str, shapes))}")
    return np.stack([np.asarray(mask, dtype=np.bool_) for mask in masks])


def _sampling(spacing: Sequence[float], ndim: int) -> tuple[float, ...]:
    sampling = tuple(float(value) for value in spacing)
    if len(sampling) != ndim or not all(math.isfinite(value) and value > 0 for value in sampling):
        raise ValueError(f"spacing must be {ndim} positive millimetre values for these masks, not {tuple(spacing)}")
    return sampling


def _surface(mask: Mask) -> Mask:
    """Mask voxels with a face neighbour outside the mask; erosion's border of 0 makes the array's edge outside."""
    face = ndimage.generate_binary_structure(mask.ndim, 1)
    inner: Mask = ndimage.binary_erosion(mask, structure=face, border_value=0)
    return mask & ~inner


def _crop_to_union(a: Mask, b: Mask) -> tuple[Mask, Mask]:
    """Both masks cut to their union's bounding box plus one voxel: the same surfaces and distances, less work."""
    union = a | b
    box = []
    for axis in range(union.ndim):
        others = tuple(other for other in range(union.ndim) if other != axis)
        present = np.flatnonzero(union.any(axis=others))
        box.append(slice(max(int(present[0]) - 1, 0), int(present[-1]) + 2))
    return a[tuple(box)], b[tuple(box)]
