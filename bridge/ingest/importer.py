"""Folder import: walk paths, hand each DICOM file to the ingest service, tally what happened.

One bad file never stops the batch: unparseable and incomplete files are quarantined by ingest, files that
cannot be opened are counted as unreadable, everything else that is not DICOM is skipped and counted.
With several workers, each is a process with its own ingest service (and database connection); the
database's unique keys keep parallel workers from creating anything twice.
"""

from __future__ import annotations

import enum
import logging
import os
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from bridge.dicom.files import looks_like_dicom
from bridge.ingest.service import IngestItem, IngestResult, IngestService, Outcome
from bridge.ingest.workers import BATCH_SIZE, IngestPool, WorkerServices

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


_KINDS = {
    Outcome.STORED: FileKind.STORED,
    Outcome.DUPLICATE: FileKind.DUPLICATE,
    Outcome.QUARANTINED: FileKind.QUARANTINED,
}


def classify(path: Path) -> FileResult | None:
    """What a file is when it is not for ingest (None: a DICOM file, to ingest)."""
    if path.name.upper() == "DICOMDIR":
        return FileResult(path, FileKind.DICOMDIR)  # a CD's index; the files it lists are walked anyway
    try:
        return None if looks_like_dicom(path) else FileResult(path, FileKind.NOT_DICOM)
    except OSError as exc:
        return FileResult(path, FileKind.UNREADABLE, exc.strerror or type(exc).__name__)


def file_result(path: Path, result: IngestResult | Exception) -> FileResult:
    if isinstance(result, OSError):
        return FileResult(path, FileKind.UNREADABLE, result.strerror or type(result).__name__)
    if isinstance(result, Exception):
        logger.error("import of one file failed (%s); continuing with the next", type(result).__name__)
        logger.debug("failure detail", exc_info=result)
        return FileResult(path, FileKind.FAILED, type(result).__name__)
    return FileResult(path, _KINDS[result.outcome], result.reason)


def import_files(
    service: IngestService,
    files: list[Path],
    *,
    project: str,
    workers: int = 1,
    open_services: Callable[[], WorkerServices] | None = None,
    progress: Callable[[FileResult], None] | None = None,
) -> ImportSummary:
    """Import `files` with `service`, or with `workers` processes (each opening its own services with
    `open_services`) when there are enough files to share out."""
    summary = ImportSummary()

    def record(result: FileResult) -> None:
        summary.add(result)
        if progress:
            progress(result)

    dicom = []
    for path in files:
        kind = classify(path)
        if kind is None:
            dicom.append(path)
        else:
            record(kind)
    batches = [dicom[start : start + BATCH_SIZE] for start in range(0, len(dicom), BATCH_SIZE)]
    if open_services is None or len(batches) < 2 * workers:
        workers = 1
    pool = IngestPool(service, workers, open_services=open_services)
    pending: deque[tuple[list[Path], Future[list[IngestResult | Exception]]]] = deque()

    def finish_oldest() -> None:
        done, future = pending.popleft()
        for path, result in zip(done, future.result(), strict=True):
            record(file_result(path, result))

    try:
        for batch in batches:
            items = [IngestItem(path, project, "import", origin=str(path)) for path in batch]
            pending.append((batch, pool.submit(items)))
            if len(pending) > 2 * pool.capacity:  # a few batches queued per worker, progress as they finish
                finish_oldest()
        while pending:
            finish_oldest()
    finally:
        pool.close()
    return summary
