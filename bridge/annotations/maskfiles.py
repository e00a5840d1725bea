"""The mask files of annotation versions: one NumPy file per version, written durably, never overwritten (a
correction is a new version). The masks are a stack of booleans, one per segment, (segment, slice, row,
column) in the series' index order (`bridge.annotations.geometry`).

Annotations are sparse (a lesion covers a few slices of hundreds), so only the drawn planes are kept, each
packed to bits: a 10-segment mask of a 300-slice 512x512 series is ~786 MB as booleans and a few MB here,
and it loads in milliseconds, not seconds.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from storage.durable import HashingWriter, StoredFile, write_durably


def relative_path(project: str, annotation_id: int, version: int) -> str:
    return f"{project}/{annotation_id}/v{version}.npz"


def save(root: Path, relative: str, masks: np.ndarray) -> StoredFile:
    if masks.ndim != 4 or masks.dtype != np.bool_:
        raise ValueError(f"a mask stack is boolean (segment, slice, row, column), not {masks.dtype} {masks.shape}")
    drawn = np.argwhere(masks.any(axis=(2, 3)))  # (segment, slice) of every plane with a voxel
    planes = np.packbits(masks[drawn[:, 0], drawn[:, 1]], axis=-1) if len(drawn) else np.zeros((0,), np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, shape=np.array(masks.shape), planes=drawn.astype(np.int32), bits=planes)

    def produce(writer: HashingWriter) -> None:
        writer.write(buffer.getbuffer())

    return write_durably(root, relative, produce)


def load(root: Path, relative: str) -> np.ndarray:
    with np.load(root / relative, allow_pickle=False) as data:
        shape = tuple(int(n) for n in data["shape"])
        masks = np.zeros(shape, dtype=bool)
        drawn, bits = data["planes"], data["bits"]
        if len(drawn):
            masks[drawn[:, 0], drawn[:, 1]] = np.unpackbits(bits, axis=-1, count=shape[3]).astype(bool)
        return masks
