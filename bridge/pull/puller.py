"""Pull studies from a remote PACS (DICOMweb, C-GET or C-MOVE): find, fetch what is missing, ingest, check.

What the index already holds is never fetched again (the keyed pseudo UID of every instance the remote
lists is looked up first), so an interrupted pull run again fetches only the rest. Series are retrieved in
parallel (bounded); each retrieved file goes through the same ingest service as every other intake (C-MOVE:
through the bridge's own listener, spool and workers, and the puller waits for the index). After each study
the remote's instance list is compared with the index; what is still missing is fetched instance by instance
once more, and reported if it stays missing. A search the remote caps is split by study date.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from bridge.deid import values
from bridge.errors import RemoteError, TruncatedSearch, redact
from bridge.ingest.service import IngestItem, IngestResult, IngestService, Outcome
from bridge.ingest.workers import BATCH_SIZE, IngestPool
from bridge.pull.filters import PullFilters
from bridge.remotes.base import Delivery, Remote, RemoteInstance, RemoteSeries
from storage import queries
from storage.db import Database

logger = logging.getLogger(__name__)
_LOOKAHEAD = 2  # studies whose series are asked for ahead of their retrieval


@dataclass
class PullReport:
    studies: int = 0
    series: int = 0
    fetched: int = 0
    present: int = 0
    quarantined: int = 0
    missing: int = 0
    failed: list[str] = field(default_factory=list)  # per study, with the remote's message; pseudo UIDs only
    interrupted: bool = False  # stopped before the last study (the next run fetches the rest)


@dataclass(frozen=True)
class Task:
    """One retrieval: a whole series (`sop_uid` None) or one instance, and how many instances it brings."""

    series_uid: str
    sop_uid: str | None
    count: int
    sop_classes: frozenset[str] = frozenset()  # as far as known (C-GET offers to receive these)

    @classmethod
    def one(cls, instance: RemoteInstance) -> Task:
        return cls(instance.series_uid, instance.sop_uid, 1, _classes([instance]))


def _classes(instances: list[RemoteInstance]) -> frozenset[str]:
    return frozenset(i.sop_class_uid for i in instances if i.sop_class_uid)


class PullProgress(Protocol):
    """What the puller tells whoever shows progress (pseudo UIDs only)."""

    def studies(self, total: int) -> None: ...

    def study(self, label: str, instances: int) -> None: ...

    def advance(self, instances: int) -> None: ...

    def study_done(self) -> None: ...


class _Silent:
    def studies(self, total: int) -> None:
        pass

    def study(self, label: str, instances: int) -> None:
        pass

    def advance(self, instances: int) -> None:
        pass

    def study_done(self) -> None:
        pass


class Puller:
    def __init__(
        self,
        remote: Remote,
        *,
        database: Database,
        ingest: IngestService,
        project: str,
        incoming: Path,
        ingest_pool: IngestPool,
    ) -> None:
        self.remote = remote
        self.database = database  # for lookups in the index
        self.ingest = ingest  # the project's context and row id; files go to the ingest pool
        self.ingest_pool = ingest_pool
        self.project = project
        self.context = ingest.projects[project]
        self.incoming = incoming
        self.source = f"pull:{remote.name}"[:64]
        self.progress: PullProgress = _Silent()

    def pull(
        self, filters: PullFilters, progress: PullProgress | None = None, cancel: threading.Event | None = None
    ) -> PullReport:
        """Pull every study matching `filters`; when `cancel` is set, stop after the current study."""
        self.progress = progress or _Silent()
        report = PullReport()
        studies: dict[str, None] = {}
        for query in filters.queries():
            for study_uid in self.search(query):
                studies.setdefault(study_uid, None)
        report.studies = len(studies)
        self.progress.studies(len(studies))
        order = list(studies)
        # the series of the next studies are asked for while this one is retrieved and ingested
        with ThreadPoolExecutor(1, thread_name_prefix="search") as lookahead:
            listed = [lookahead.submit(self.remote.search_series, uid) for uid in order[:_LOOKAHEAD]]
            for number, study_uid in enumerate(order, 1):
                if number + _LOOKAHEAD <= len(order):
                    listed.append(lookahead.submit(self.remote.search_series, order[number + _LOOKAHEAD - 1]))
                if cancel is not None and cancel.is_set():
                    report.interrupted = True
                    break
                try:
                    self._pull_study(study_uid, listed[number - 1].result(), report, f"study {number}/{len(order)}")
                except RemoteError as error:  # its message is redacted of original UIDs by the adapter
                    report.failed.append(f"study {self._pseudo(study_uid)}: {error}")
                self.progress.study_done()
            for future in listed:
                future.cancel()
        return report

    def search(self, query: dict[str, str]) -> list[str]:
        """The studies of one query; a search the remote capped is split by study date until none is."""
        try:
            return self.remote.search_studies(query)
        except TruncatedSearch:
            if "StudyInstanceUID" in query:
                raise
        first, last = _date_range(query.get("StudyDate", ""))
        if first == last:
            raise RemoteError(
                f"remote {self.remote.name}: more studies on one day than the remote returns for one search"
                " (its result cap): add filters (modality, patient IDs) or raise the cap"
            )
        middle = first + (last - first) // 2
        logger.info("search capped by the remote: splitting its date range in two")
        halves = [(first, middle), (middle + dt.timedelta(days=1), last)]
        found: dict[str, None] = {}
        for start, end in halves:
            for study_uid in self.search({**query, "StudyDate": f"{start:%Y%m%d}-{end:%Y%m%d}"}):
                found.setdefault(study_uid, None)
        return list(found)

    def _pseudo(self, uid: str) -> str:
        return uid if self.context.retain_uids else values.pseudo_uid(self.context.key, uid)

    def _missing(self, instances: list[RemoteInstance]) -> list[RemoteInstance]:
        project_id = self.ingest.project_id(self.project)
        by_pseudo = {self._pseudo(i.sop_uid): i for i in instances}
        with self.database.unit_of_work() as work:
            held = queries.indexed_uids(work.research, project_id=project_id, sop_instance_uids=list(by_pseudo))
        return [instance for pseudo, instance in by_pseudo.items() if pseudo not in held]

    def _held(self, expected: dict[str, int]) -> dict[str, int]:
        """How many instances the index holds in each of these (original) series."""
        pseudo = {self._pseudo(uid): uid for uid in expected}
        with self.database.unit_of_work() as work:
            counts = queries.series_counts(
                work.research, project_id=self.ingest.project_id(self.project), series_uids=list(pseudo)
            )
        return {uid: counts.get(p, 0) for p, uid in pseudo.items()}

    def _pull_study(self, study_uid: str, listed: list[RemoteSeries], report: PullReport, label: str) -> None:
        """Compare the remote's count of each series with the index: fetch whole series the index lacks,
        list the instances of series it holds in part. A remote that does not count has its instances listed."""
        known: dict[str, list[RemoteInstance]] = {}
        if any(series.count is None for series in listed):
            for instance in self.remote.search_instances(study_uid):
                known.setdefault(instance.series_uid, []).append(instance)
            listed = [RemoteSeries(uid, len(instances)) for uid, instances in known.items()]
        expected = {series.uid: series.count or 0 for series in listed}
        report.series += len(expected)
        self.progress.study(label, sum(expected.values()))
        held = self._held(expected)
        present = sum(min(held[uid], count) for uid, count in expected.items())
        report.present += present
        self.progress.advance(present)

        def lacking() -> int:
            counts = self._held(expected)
            return sum(max(0, count - counts[uid]) for uid, count in expected.items())

        def instances_of(series_uid: str) -> list[RemoteInstance]:
            if series_uid not in known:
                known[series_uid] = self.remote.search_instances(study_uid, series_uid)
            return known[series_uid]

        tasks: list[Task] = []
        for uid, count in expected.items():
            if held[uid] == 0 and count:
                tasks.append(Task(uid, None, count, _classes(known.get(uid, []))))  # the whole series at once
            elif held[uid] < count:
                tasks.extend(Task.one(i) for i in self._missing(instances_of(uid)))
        short = self._fetch(study_uid, tasks, report, lacking)
        held = self._held(expected)
        if any(held[uid] < count for uid, count in expected.items()):
            # completeness: the instances the remote lists and the index lacks, once more one by one
            still = [i for uid, n in expected.items() if held[uid] < n for i in self._missing(instances_of(uid))]
            short += self._fetch(study_uid, [Task.one(i) for i in still], report, lacking)
        missing = lacking()
        if missing:
            report.missing += missing
            why = f" ({'; '.join(short[:3])})" if short else ""
            report.failed.append(
                f"study {self._pseudo(study_uid)}: {missing} of {sum(expected.values())} instances still missing{why}"
            )

    def _fetch(self, study_uid: str, tasks: list[Task], report: PullReport, lacking: Callable[[], int]) -> list[str]:
        """Retrieve in parallel; files are ingested (by the ingest pool) as they arrive; `lacking()` counts
        what the index still lacks (C-MOVE: the wait for arrivals). Returns the retrievals that completed
        fewer instances than asked for. When a retrieval failed (after the adapter's retries), the study fails
        with the remote's message."""
        if not tasks:
            return []
        before = lacking() if self.remote.via_listener else 0
        delivery = Delivery(self.incoming)
        with ThreadPoolExecutor(self.remote.parallel, thread_name_prefix="retrieve") as pool:
            futures = {
                pool.submit(self.remote.retrieve, delivery, study_uid, t.series_uid, t.sop_uid, t.sop_classes): t
                for t in tasks
            }
            ingesting: dict[Future[list[IngestResult | Exception]], list[Path]] = {}
            while any(not f.done() for f in futures) or not delivery.files.empty() or ingesting:
                # one batch per worker at a time: what arrives meanwhile makes the next batches larger
                if len(ingesting) < self.ingest_pool.capacity:
                    arrived = _take(delivery.files, limit=BATCH_SIZE, wait=0.02)
                    if arrived:
                        items = [IngestItem(path, self.project, self.source) for path in arrived]
                        ingesting[self.ingest_pool.submit(items)] = arrived
                else:
                    wait(ingesting, timeout=0.02, return_when=FIRST_COMPLETED)
                for batch in [f for f in ingesting if f.done()]:
                    for path in ingesting.pop(batch):
                        path.unlink(missing_ok=True)  # retrieved files are ours: gone once ingested
                    for result in batch.result():
                        self._count(result, report)
        errors = [failure for future in futures if (failure := future.exception()) is not None]
        if errors:
            raise RemoteError(f"{len(errors)} of {len(tasks)} retrievals failed; first: {redact(str(errors[0]))}")
        short = [
            f"a retrieval answered success with {done} of {task.count} instances"
            for future, task in futures.items()
            if (done := future.result()) < task.count
        ]
        if self.remote.via_listener:
            self._await_arrival(before, lacking, report)
        return short

    def _await_arrival(self, waiting: int, lacking: Callable[[], int], report: PullReport) -> None:
        """C-MOVE: the instances come through the bridge's listener and its ingest workers; wait until the
        index holds them, or until nothing more arrived for the remote's timeout."""
        quiet_since = time.monotonic()
        while waiting:
            now = lacking()
            if now < waiting:
                report.fetched += waiting - now
                self.progress.advance(waiting - now)
                waiting, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since > self.remote.timeout:
                return
            else:
                time.sleep(0.3)

    def _count(self, result: IngestResult | Exception, report: PullReport) -> None:
        self.progress.advance(1)
        if isinstance(result, Exception):  # the instance stays missing: fetched again, then reported
            logger.error("ingest of a retrieved instance failed (%s)", type(result).__name__)
        elif result.outcome is Outcome.STORED:
            report.fetched += 1
        elif result.outcome is Outcome.DUPLICATE:
            report.present += 1
        else:
            report.quarantined += 1


def _take(files: queue.Queue[Path], *, limit: int, wait: float) -> list[Path]:
    """What has arrived, up to `limit` files (waiting `wait` seconds for the first)."""
    try:
        taken = [files.get(timeout=wait)]
    except queue.Empty:
        return []
    while len(taken) < limit:
        try:
            taken.append(files.get_nowait())
        except queue.Empty:
            break
    return taken


def _date_range(value: str) -> tuple[dt.date, dt.date]:
    """A DICOM date range (`A-B`, `A-`, `-B`, `A`, or nothing) as two dates; open ends: 1900-01-01, today."""
    first, _, last = value.partition("-") if "-" in value else (value, "", value)
    start = dt.datetime.strptime(first, "%Y%m%d").date() if first else dt.date(1900, 1, 1)
    end = dt.datetime.strptime(last, "%Y%m%d").date() if last else dt.date.today()
    return start, end
