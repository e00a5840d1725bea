"""Pull studies from a remote PACS over DICOMweb: find, fetch what is missing, ingest, check completeness.

What the index already holds is never fetched again (the keyed pseudo UID of every instance the remote
lists is looked up first), so an interrupted pull run again fetches only the rest. Series are retrieved in
parallel (bounded), each streamed part goes to a file and then through the same ingest service as every
other intake. After each study the remote's instance list is compared with the index; what is still missing
is fetched instance by instance once more, and reported if it stays missing.
"""

from __future__ import annotations

import logging
import os
import queue
import tempfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from bridge.deid import values
from bridge.ingest import IngestService, Outcome
from bridge.remotes.dicomweb import DicomwebRemote, RemoteError, RemoteInstance, redact
from storage import index

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PullFilters:
    patient_ids: tuple[str, ...] = ()
    accession_numbers: tuple[str, ...] = ()
    study_uids: tuple[str, ...] = ()
    modality: str | None = None
    date_from: str | None = None  # YYYYMMDD
    date_to: str | None = None
    description: str | None = None

    def queries(self) -> list[dict[str, str]]:
        """QIDO-RS study queries: one per listed identifier, each with the common filters."""
        common: dict[str, str] = {}
        if self.modality:
            common["ModalitiesInStudy"] = self.modality
        if self.date_from or self.date_to:
            common["StudyDate"] = f"{self.date_from or ''}-{self.date_to or ''}"
        if self.description:
            common["StudyDescription"] = self.description
        keyed = (
            [("PatientID", v) for v in self.patient_ids]
            + [("AccessionNumber", v) for v in self.accession_numbers]
            + [("StudyInstanceUID", v) for v in self.study_uids]
        )
        return [{**common, key: value} for key, value in keyed] or [common]


@dataclass
class PullReport:
    studies: int = 0
    series: int = 0
    fetched: int = 0
    present: int = 0
    quarantined: int = 0
    missing: int = 0
    failed: list[str] = field(default_factory=list)  # per study, with the remote's message; pseudo UIDs only


class _PartFile:
    """One retrieved part on its way to a file; complete parts are handed to the ingest queue."""

    def __init__(self, folder: Path, done: queue.Queue[Path]) -> None:
        fd, name = tempfile.mkstemp(dir=folder, suffix=".dcm")
        self.path = Path(name)
        self.stream = os.fdopen(fd, "wb")
        self.done = done

    def write(self, data: bytes) -> int:
        return self.stream.write(data)

    def finish(self) -> None:
        self.stream.close()
        self.done.put(self.path)

    def abort(self) -> None:
        self.stream.close()
        self.path.unlink(missing_ok=True)


class Puller:
    def __init__(self, remote: DicomwebRemote, ingest: IngestService, project: str, incoming: Path) -> None:
        self.remote = remote
        self.ingest = ingest
        self.project = project
        self.context = ingest.projects[project]
        self.incoming = incoming
        self.source = f"pull:{remote.name}"[:64]

    def pull(self, filters: PullFilters, progress: Callable[[int, int], None] | None = None) -> PullReport:
        """Pull every study matching `filters`; `progress(done, total)` counts studies."""
        report = PullReport()
        studies: dict[str, None] = {}
        for query in filters.queries():
            for study in self.remote.search_studies(query):
                uid = (study.get("0020000D", {}).get("Value") or [None])[0]
                if uid:
                    studies[str(uid)] = None
        report.studies = len(studies)
        for done, study_uid in enumerate(studies, 1):
            try:
                self._pull_study(study_uid, report)
            except RemoteError as error:  # its message is redacted of original UIDs by the adapter
                report.failed.append(f"study {self._pseudo(study_uid)}: {error}")
            if progress:
                progress(done, len(studies))
        return report

    def _pseudo(self, uid: str) -> str:
        return uid if self.context.retain_uids else values.pseudo_uid(self.context.key, uid)

    def _missing(self, instances: list[RemoteInstance]) -> list[RemoteInstance]:
        project_id = self.ingest.project_id(self.project)
        by_pseudo = {self._pseudo(i.sop_uid): i for i in instances}
        with self.ingest.database.unit_of_work() as work:
            held = index.indexed_uids(work.research, project_id=project_id, sop_instance_uids=list(by_pseudo))
        return [instance for pseudo, instance in by_pseudo.items() if pseudo not in held]

    def _pull_study(self, study_uid: str, report: PullReport) -> None:
        instances = self.remote.search_instances(study_uid)
        series_all: dict[str, list[RemoteInstance]] = {}
        for instance in instances:
            series_all.setdefault(instance.series_uid, []).append(instance)
        report.series += len(series_all)
        missing = self._missing(instances)
        report.present += len(instances) - len(missing)
        wanted: dict[str, list[RemoteInstance]] = {}
        for instance in missing:
            wanted.setdefault(instance.series_uid, []).append(instance)
        tasks: list[tuple[str, str | None]] = []
        for series_uid, lacking in wanted.items():
            if len(lacking) == len(series_all[series_uid]):
                tasks.append((series_uid, None))  # the whole series, one request
            else:
                tasks.extend((series_uid, i.sop_uid) for i in lacking)
        self._fetch(study_uid, tasks, report)
        still = self._missing(instances)
        if still:  # completeness: what the remote lists and the index lacks, once more one by one
            self._fetch(study_uid, [(i.series_uid, i.sop_uid) for i in still], report)
            still = self._missing(instances)
        if still:
            report.missing += len(still)
            report.failed.append(
                f"study {self._pseudo(study_uid)}: {len(still)} of {len(instances)} instances still missing"
            )

    def _fetch(self, study_uid: str, tasks: list[tuple[str, str | None]], report: PullReport) -> None:
        """Retrieve in parallel; ingest in this thread as parts complete (ingest is not shared by threads).
        When a retrieval failed (after the adapter's retries), the study fails with the remote's message."""
        if not tasks:
            return
        done: queue.Queue[Path] = queue.Queue()
        errors: list[BaseException] = []
        with ThreadPoolExecutor(self.remote.settings.parallel, thread_name_prefix="wado") as pool:
            futures: list[Future[int]] = [
                pool.submit(self.remote.retrieve, lambda: _PartFile(self.incoming, done), study_uid, series, sop)
                for series, sop in tasks
            ]
            while any(not f.done() for f in futures) or not done.empty():
                try:
                    path = done.get(timeout=0.1)
                except queue.Empty:
                    continue
                self._ingest(path, report)
            errors = [failure for future in futures if (failure := future.exception()) is not None]
        if errors:
            raise RemoteError(f"{len(errors)} of {len(tasks)} retrievals failed; first: {redact(str(errors[0]))}")

    def _ingest(self, path: Path, report: PullReport) -> None:
        try:
            result = self.ingest.ingest(path, project=self.project, source=self.source)
        finally:
            path.unlink(missing_ok=True)
        if result.outcome is Outcome.STORED:
            report.fetched += 1
        elif result.outcome is Outcome.DUPLICATE:
            report.present += 1
        else:
            report.quarantined += 1
