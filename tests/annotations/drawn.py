"""What annotation tools hand the bridge, for the tests: a label volume saved as NIfTI on a series' grid, and
a SEG as a viewer's segmentation mode sends it (highdicom, MANUAL, frames of empty slices omitted)."""

from __future__ import annotations

import warnings
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from bridge.annotations.geometry import Grid


def nifti_on_grid(grid: Grid, labels: np.ndarray, path: Path) -> Path:
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    sitk.WriteImage(image, str(path))
    return path


def viewer_seg(
    sources: list[pydicom.Dataset], mask: np.ndarray, *, label: str, series_number: int, model: str
) -> pydicom.Dataset:
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    with warnings.catch_warnings():  # the de-identified patient's name is the subject code: one component
        warnings.filterwarnings("ignore", message=".*intended person name", category=UserWarning)
        return hd.seg.Segmentation(
            source_images=sources,
            pixel_array=mask,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="OHIF",
            manufacturer_model_name=model,
            software_versions="3",
            device_serial_number="1",
        )
