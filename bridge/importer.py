"""Folder import: walk paths, hand each DICOM file to the ingest service, tally what happened.

One bad file never stops the batch: unparseable and incomplete files are quarantined by ingest, files that
cannot be opened are counted as unreadable, everything else that is not DICOM is skipped and counted.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bridge.dicomio import looks_like_dicom
from bridge.ingest import IngestService, Outcome

logger = logging.getLogger(__name__)


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    skipped_non_dicom: int = 0
    skipped_dicomdir: int = 0
    unreadable: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


def discover(paths: Iterable[Path]) -> Iterator[Path]:
    """Every regular file under the given files and folders, in a stable order."""
    for path in paths:
        if path.is_file():
            yield path
        elif path.is_dir():
            for folder, folders, files in os.walk(path):
                folders.sort()
                for name in sorted(files):
                    yield Path(folder) / name
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")


def import_files(
    service: IngestService,
    files: Iterable[Path],
    *,
    project: str,
    progress: Callable[[Path], None] | None = None,
) -> ImportSummary:
    summary = ImportSummary()
    for path in files:
        try:
            _import_one(service, path, project, summary)
        finally:
            if progress:
                progress(path)
    return summary


def _import_one(service: IngestService, path: Path, project: str, summary: ImportSummary) -> None:
    if path.name.upper() == "DICOMDIR":
        summary.skipped_dicomdir += 1  # the index of a CD; the files it lists are walked anyway
        return
    try:
        if not looks_like_dicom(path):
            summary.skipped_non_dicom += 1
            return
        result = service.ingest(path, project=project, source="import", origin=str(path))
    except OSError as exc:
        summary.unreadable.append(f"{path}: {exc.strerror or type(exc).__name__}")
        return
    except Exception as exc:
        logger.error("import of one file failed (%s); continuing with the next", type(exc).__name__)
        logger.debug("failure detail", exc_info=True)
        summary.failed.append(str(path))
        return
    if result.outcome is Outcome.STORED:
        summary.stored += 1
    elif result.outcome is Outcome.DUPLICATE:
        summary.duplicates += 1
    else:
        summary.quarantined[result.reason or "unknown"] += 1
