"""Folder import: walk paths, hand each DICOM file to the ingest service, tally what happened.

One bad file never stops the batch: unparseable and incomplete files are quarantined by ingest, files that
cannot be opened are counted as unreadable, everything else that is not DICOM is skipped and counted.
With several workers, each is a process with its own ingest service (and database connection); the
database's unique keys keep parallel workers from creating anything twice.
"""

from __future__ import annotations

import enum
import logging
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bridge.dicomio import looks_like_dicom
from bridge.ingest import IngestService, Outcome

logger = logging.getLogger(__name__)


class FileKind(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"
    NOT_DICOM = "not DICOM"
    DICOMDIR = "DICOMDIR"
    UNREADABLE = "unreadable"
    FAILED = "failed"


@dataclass(frozen=True)
class FileResult:
    path: Path
    kind: FileKind
    detail: str | None = None


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

    def add(self, result: FileResult) -> None:
        kind = result.kind
        if kind is FileKind.STORED:
            self.stored += 1
        elif kind is FileKind.DUPLICATE:
            self.duplicates += 1
        elif kind is FileKind.QUARANTINED:
            self.quarantined[result.detail or "unknown"] += 1
        elif kind is FileKind.NOT_DICOM:
            self.skipped_non_dicom += 1
        elif kind is FileKind.DICOMDIR:
            self.skipped_dicomdir += 1
        elif kind is FileKind.UNREADABLE:
            self.unreadable.append(f"{result.path}: {result.detail}")
        else:
            self.failed.append(str(result.path))


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


def import_one(service: IngestService, path: Path, project: str) -> FileResult:
    if path.name.upper() == "DICOMDIR":
        return FileResult(path, FileKind.DICOMDIR)  # the index of a CD; the files it lists are walked anyway
    try:
        if not looks_like_dicom(path):
            return FileResult(path, FileKind.NOT_DICOM)
        result = service.ingest(path, project=project, source="import", origin=str(path))
    except OSError as exc:
        return FileResult(path, FileKind.UNREADABLE, exc.strerror or type(exc).__name__)
    except Exception as exc:
        logger.error("import of one file failed (%s); continuing with the next", type(exc).__name__)
        logger.debug("failure detail", exc_info=True)
        return FileResult(path, FileKind.FAILED, type(exc).__name__)
    kinds = {
        Outcome.STORED: FileKind.STORED,
        Outcome.DUPLICATE: FileKind.DUPLICATE,
        Outcome.QUARANTINED: FileKind.QUARANTINED,
    }
    return FileResult(path, kinds[result.outcome], result.reason)


def import_files(
    open_service: Callable[[], IngestService],
    files: list[Path],
    *,
    project: str,
    workers: int = 1,
    progress: Callable[[FileResult], None] | None = None,
) -> ImportSummary:
    """Import `files`; `open_service` builds an ingest service (called once per worker process)."""
    summary = ImportSummary()
    if workers <= 1 or len(files) < 2 * workers:
        service = open_service()
        results: Iterable[FileResult] = (import_one(service, path, project) for path in files)
        for result in results:
            summary.add(result)
            if progress:
                progress(result)
        return summary
    # fork: workers inherit the imported modules; the caller has no open database connection yet
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(open_service,)) as pool:
        for result in pool.map(_import_in_worker, files, [project] * len(files), chunksize=4):
            summary.add(result)
            if progress:
                progress(result)
    return summary


_worker_service: IngestService | None = None


def _start_worker(open_service: Callable[[], IngestService]) -> None:
    global _worker_service
    _worker_service = open_service()


def _import_in_worker(path: Path, project: str) -> FileResult:
    assert _worker_service is not None, "worker not initialised"
    return import_one(_worker_service, path, project)
