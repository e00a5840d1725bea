"""The forms an export takes (kept apart so the command line can name them without importing the export)."""

from __future__ import annotations

from enum import StrEnum


class Format(StrEnum):
    DICOM = "dicom"
    NIFTI = "nifti"
