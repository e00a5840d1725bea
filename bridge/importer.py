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
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from bridge.dicomio import looks_like_dicom
from bridge.ingest import IngestItem, IngestService, Outcome

logger = logging.getLogger(__name__)
_BATCH = 8  # files per ingest call: one transaction for their rows


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


_KINDS = {
    Outcome.STORED: FileKind.STORED,
    Outcome.DUPLICATE: FileKind.DUPLICATE,
    Outcome.QUARANTINED: FileKind.QUARANTINED,
}


def import_batch(service: IngestService, paths: list[Path], project: str) -> list[FileResult]:
    """Classify each file, ingest the DICOM ones together (one transaction for their rows)."""
    results: dict[int, FileResult] = {}
    dicom: list[tuple[int, Path]] = []
    for position, path in enumerate(paths):
        if path.name.upper() == "DICOMDIR":
            results[position] = FileResult(path, FileKind.DICOMDIR)  # a CD's index; its files are walked anyway
            continue
        try:
            if looks_like_dicom(path):
                dicom.append((position, path))
            else:
                results[position] = FileResult(path, FileKind.NOT_DICOM)
        except OSError as exc:
            results[position] = FileResult(path, FileKind.UNREADABLE, exc.strerror or type(exc).__name__)
    items = [IngestItem(path, project, "import", origin=str(path)) for _, path in dicom]
    for (position, path), outcome in zip(dicom, service.ingest_many(items), strict=True):
        if isinstance(outcome, OSError):
            results[position] = FileResult(path, FileKind.UNREADABLE, outcome.strerror or type(outcome).__name__)
        elif isinstance(outcome, Exception):
            logger.error("import of one file failed (%s); continuing with the next", type(outcome).__name__)
            logger.debug("failure detail", exc_info=outcome)
            results[position] = FileResult(path, FileKind.FAILED, type(outcome).__name__)
        else:
            results[position] = FileResult(path, _KINDS[outcome.outcome], outcome.reason)
    return [results[position] for position in range(len(paths))]


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
    batches = [files[start : start + _BATCH] for start in range(0, len(files), _BATCH)]
    with ExitStack() as stack:
        results: Iterable[list[FileResult]]
        if workers <= 1 or len(batches) < 2 * workers:
            service = open_service()
            results = (import_batch(service, batch, project) for batch in batches)
        else:
            # fork: workers inherit the imported modules; the caller has no open database connection yet
            context = multiprocessing.get_context("fork")
            pool = stack.enter_context(
                ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(open_service,))
            )
            results = pool.map(_import_in_worker, batches, [project] * len(batches))
        for batch_results in results:
            for result in batch_results:
                summary.add(result)
                if progress:
                    progress(result)
    return summary


_worker_service: IngestService | None = None


def _start_worker(open_service: Callable[[], IngestService]) -> None:
    global _worker_service
    _worker_service = open_service()


def _import_in_worker(paths: list[Path], project: str) -> list[FileResult]:
    assert _worker_service is not None, "worker not initialised"
    return import_batch(_worker_service, paths, project)
