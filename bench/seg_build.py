"""Time of `build_seg` against a bare highdicom `Segmentation(...)` of the same masks, in the same run.

Builds in memory (not timed) a synthetic CT series with ``tests/factory.py`` (``--slices`` images of
``--size`` x ``--size``) and a sparse annotation of ``--segments`` segments, each an ellipsoid blob over a few
slices (seeded, so every run draws the same blobs). Then, ``--repeat`` times, alternating: ``build_seg`` (input
checks, one copy of the masks into the array highdicom wants, the highdicom build, the trial attributes) and
highdicom alone, handed the already stacked (slices, rows, columns, segments) array with the same segment
descriptions and options (BINARY, Explicit VR Little Endian, empty frames omitted). Reports the median of each,
the ratio and the target: build_seg within 1.5x of bare highdicom. One untimed build of each on two annotated
slices comes first (imports and highdicom's lazy set-up). Exits 1 if the two SEGs' frames differ.

    .venv/bin/python bench/seg_build.py [--slices 300] [--size 512] [--segments 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import load_factory  # noqa: E402
from bridge.seg.build import MANUFACTURER, SegmentSpec, SegMeta, build_seg  # noqa: E402

TARGET_RATIO = 1.5
SEED = 20240105


def make_sources(slices: int, size: int) -> list[Dataset]:
    factory = load_factory()
    return list(factory.make_series(factory.make_patient(1), "CT", slices, rows=size, columns=size))


def make_segments(slices: int, size: int, count: int) -> list[SegmentSpec]:
    """Each segment an ellipsoid over 3-12 slices somewhere in the volume: sparse, like a lesion annotation."""
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:size, 0:size]
    segments = []
    for number in range(1, count + 1):
        mask = np.zeros((slices, size, size), dtype=bool)
        depth = int(rng.integers(3, 13))
        first = int(rng.integers(0, max(slices - depth, 1)))
        cy, cx = (float(v) for v in rng.uniform(0.2 * size, 0.8 * size, 2))
        radius = float(rng.uniform(0.02, 0.08)) * size
        for k in range(first, min(first + depth, slices)):
            scale = 1.0 - abs((k - first) - depth / 2) / (depth / 2 + 1)
            mask[k] = np.hypot(yy - cy, (xx - cx) * 0.8) < radius * scale
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        segments.append(
            SegmentSpec(
                f"Lesion {number}",
                mask,
                codes.SCT.MorphologicallyAbnormalStructure,
                codes.SCT.Neoplasm,
                (colour[0], colour[1], colour[2]),
                codes.SCT.Lung,
            )
        )
    return segments


def seg_meta() -> SegMeta:
    return SegMeta(generate_uid(), generate_uid(), 301, "Lesions", "DOE^JANE", "LESIONS", "BASELINE", "bench")


def bare(sources: list[Dataset], segments: list[SegmentSpec], stacked: np.ndarray[Any, Any]) -> Dataset:
    """highdicom alone, as a caller with the stacked array at hand would call it."""
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec.label,
            segmented_property_category=spec.category,
            segmented_property_type=spec.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[spec.region] if spec.region is not None else None,
            display_color=hd.color.CIELabColor.from_rgb(*spec.colour),
        )
        for number, spec in enumerate(segments, start=1)
    ]
    meta = seg_meta()
    return hd.seg.Segmentation(
        source_images=sources,
        pixel_array=stacked,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=meta.series_instance_uid,
        series_number=meta.series_number,
        sop_instance_uid=meta.sop_instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="pacs-bridge",
        software_versions=meta.software_version,
        device_serial_number="0",
        transfer_syntax_uid=ExplicitVRLittleEndian,
        omit_empty_frames=True,
        content_label=meta.content_label,
        content_creator_name=meta.annotator,
        series_description=meta.series_description,
    )


def timed(build: Callable[[], Dataset]) -> tuple[float, Dataset]:
    start = time.perf_counter()
    seg = build()
    return time.perf_counter() - start, seg


def frames_by_position(seg: Dataset) -> dict[tuple[int, str], bytes]:
    """(segment, source instance) -> the frame's packed bytes, to compare two SEGs whatever their frame order."""
    rows, columns = int(seg.Rows), int(seg.Columns)
    frames = hd.seg.Segmentation.from_dataset(seg, copy=False)
    out = {}
    for number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        key = (
            int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber),
            str(item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID),
        )
        out[key] = frames.get_stored_frame(number).reshape(rows, columns).tobytes()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows = columns")
    parser.add_argument("--segments", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"building {args.slices} CT slices of {args.size}x{args.size} and {args.segments} segments ...", flush=True)
    sources = make_sources(args.slices, args.size)
    segments = make_segments(args.slices, args.size, args.segments)
    stacked = np.stack([spec.mask for spec in segments], axis=-1)  # the bare caller's array, not timed
    non_empty = sum(int(spec.mask[k].any()) for spec in segments for k in range(args.slices))
    print(f"  {non_empty} non-empty frames of {args.slices * args.segments}; mask {stacked.nbytes / 1e6:.0f} MB")

    # one untimed build of each first: imports and highdicom's lazy set-up would otherwise fall on round 1
    # (on two slices that hold some segment: highdicom logs a warning for an all-empty SEG)
    few = [int(k) for k in np.flatnonzero(stacked.any(axis=(1, 2, 3)))[:2]]
    warm = [SegmentSpec(s.label, s.mask[few], s.category, s.type, s.colour) for s in segments]
    build_seg([sources[k] for k in few], warm, seg_meta())
    bare([sources[k] for k in few], segments, stacked[few])

    ours: list[float] = []
    theirs: list[float] = []
    seg_ours = seg_bare = Dataset()
    for round_ in range(1, args.repeat + 1):
        seconds, seg_ours = timed(lambda: build_seg(sources, segments, seg_meta()))
        ours.append(seconds)
        seconds, seg_bare = timed(lambda: bare(sources, segments, stacked))
        theirs.append(seconds)
        print(f"  round {round_}: build_seg {ours[-1]:.2f} s, bare highdicom {theirs[-1]:.2f} s", flush=True)

    if int(seg_ours.NumberOfFrames) != non_empty or frames_by_position(seg_ours) != frames_by_position(seg_bare):
        print("the two SEGs differ: build_seg did not write the frames highdicom alone writes", file=sys.stderr)
        sys.exit(1)

    ours_s, bare_s = statistics.median(ours), statistics.median(theirs)
    ratio = ours_s / bare_s
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"\n  {'':16} {'median s':>9} {'frames':>7}")
    print(f"  {'build_seg':16} {ours_s:9.2f} {int(seg_ours.NumberOfFrames):7d}")
    print(f"  {'bare highdicom':16} {bare_s:9.2f} {int(seg_bare.NumberOfFrames):7d}")
    print(f"  ratio build_seg / highdicom: {ratio:.2f}x  (target <= {TARGET_RATIO}x: {verdict})")


if __name__ == "__main__":
    main()
