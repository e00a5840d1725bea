"""The external validators the SEG tests run: dciodvfy (dicom3tools) and dcmqi's segimage2itkimage.

Both are real readers of the kind a receiver runs; a missing tool fails the test with what to install, it
never skips (DESIGN: every SEG passes dciodvfy).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

_TIMEOUT_S = 120


def dciodvfy_report(path: Path) -> list[str]:
    """Every line dciodvfy -new prints for a file (it reports on stderr; both streams are read)."""
    executable = shutil.which("dciodvfy")
    if executable is None:
        pytest.fail("dciodvfy is not installed: apt-get install dicom3tools (or run ./scripts/test.sh)")
    completed = subprocess.run(
        [executable, "-new", "-filename", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=_TIMEOUT_S,
    )
    return (completed.stdout + completed.stderr).splitlines()


def dciodvfy_errors(path: Path) -> list[str]:
    """The lines of dciodvfy -new's report that start with "Error"."""
    return [line for line in dciodvfy_report(path) if line.startswith("Error")]


def segimage2itkimage() -> str:
    """The dcmqi converter beside this interpreter (the venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "segimage2itkimage"
    if beside.is_file():
        return str(beside)
    found = shutil.which("segimage2itkimage")
    if found is None:
        pytest.fail("segimage2itkimage is not installed: .venv/bin/pip install dcmqi (the PyPI package ships it)")
    return found


def dcmqi_volume(seg_path: Path, out_dir: Path) -> list[tuple[str, sitk.Image]]:
    """(segment label, binary volume) per segment, as dcmqi converts the SEG (match them by label).

    dcmqi writes one NRRD per group of non-overlapping segments (one per segment in older versions, a labelmap
    with --mergeSegments) and a meta JSON whose ``segmentAttributes`` lists the groups in file order, each
    segment with the ``labelID`` that marks it in its group's file; each segment is cut out by that value.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [
        segimage2itkimage(),
        "--inputDICOM",
        str(seg_path),
        "--outputDirectory",
        str(out_dir),
        "--outputType",
        "nrrd",
        "--prefix",
        "seg",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, errors="replace", timeout=_TIMEOUT_S)
    if completed.returncode != 0:
        pytest.fail(f"segimage2itkimage failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    meta_path = out_dir / "seg-meta.json"
    if not meta_path.is_file():
        pytest.fail(f"segimage2itkimage wrote no seg-meta.json; it wrote {sorted(p.name for p in out_dir.iterdir())}")
    groups = json.loads(meta_path.read_text())["segmentAttributes"]
    volumes: list[tuple[str, sitk.Image]] = []
    for number, group in enumerate(groups, start=1):
        image_path = out_dir / f"seg-{number}.nrrd"
        if not image_path.is_file():
            pytest.fail(
                f"segimage2itkimage wrote no {image_path.name}; it wrote {sorted(p.name for p in out_dir.iterdir())}"
            )
        image = sitk.ReadImage(str(image_path))
        for attributes in group:
            volumes.append((str(attributes["SegmentLabel"]), image == int(attributes["labelID"])))
    return volumes
