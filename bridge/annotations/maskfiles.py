"""The mask files of annotation versions: one compressed NumPy file per version, written durably, never
overwritten (a correction is a new version). The array is a stack of boolean masks, one per segment,
(segment, slice, row, column) in the series' index order (`bridge.annotations.geometry`)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from storage.durable import HashingWriter, StoredFile, write_durably

_KEY = "segments"


def relative_path(project: str, annotation_id: int, version: int) -> str:
    return f"{project}/{annotation_id}/v{version}.npz"


def save(root: Path, relative: str, masks: np.ndarray) -> StoredFile:
    if masks.ndim != 4 or masks.dtype != np.bool_:
        raise ValueError(f"a mask stack is boolean (segment, slice, row, column), not {masks.dtype} {masks.shape}")
    buffer = io.BytesIO()
    np.savez_compressed(buffer, segments=masks)

    def produce(writer: HashingWriter) -> None:
        writer.write(buffer.getbuffer())

    return write_durably(root, relative, produce)


def load(root: Path, relative: str) -> np.ndarray:
    with np.load(root / relative, allow_pickle=False) as data:
        return np.asarray(data[_KEY], dtype=bool)
