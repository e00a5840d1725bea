"""A series' thumbnail: its middle slice, from the de-identified file in the store, in the series' own window
(Window Center/Width of that instance; else the 1st to 99th percentile), as a PNG of at most 128 pixels.

Rendered once per file and kept (a few hundred, in memory): the timeline shows the same thumbnails again
and again, and a stored file never changes under its name.
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.pixels.processing import apply_modality_lut

SIZE = 128


class NoThumbnail(ValueError):
    """The instance has no pixels this can draw (a SEG, a compressed syntax without a decoder, ...)."""


def _first(value: object) -> float:
    """The first of a multi-valued DS (several windows: the first is the suggested one)."""
    return float(value[0] if isinstance(value, pydicom.multival.MultiValue) else value)  # type: ignore[arg-type]


def _window(ds: pydicom.Dataset, values: NDArray[np.float64]) -> tuple[float, float]:
    center, width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if center is not None and width is not None:
        c, w = _first(center), max(_first(width), 1.0)
        return c - w / 2, c + w / 2
    low, high = np.percentile(values, [1, 99])
    return float(low), float(max(high, low + 1))


def _grey(ds: pydicom.Dataset) -> NDArray[np.uint8]:
    try:
        pixels = ds.pixel_array
    except Exception as error:  # no decoder for the syntax, no pixel data: the page shows none
        raise NoThumbnail(f"cannot decode the pixels: {type(error).__name__}") from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[len(pixels) // 2]
    if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
        return np.asarray(pixels, dtype=np.uint8) if pixels.dtype == np.uint8 else pixels.astype(np.uint8)
    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    low, high = _window(ds, values)
    scaled = np.clip((values - low) / (high - low), 0, 1) * 255
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        scaled = 255 - scaled
    return scaled.astype(np.uint8)


@lru_cache(maxsize=512)
def thumbnail(path: Path) -> bytes:
    """The PNG of the instance at `path`."""
    ds = pydicom.dcmread(path)
    if "PixelData" not in ds or ds.get("Modality") == "SEG":
        raise NoThumbnail("no image pixels")
    image = Image.fromarray(_grey(ds))
    image.thumbnail((SIZE, SIZE))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
