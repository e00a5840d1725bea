"""The ingest service every intake path calls: parse, admit, de-identify, store, index, audit.

A batch of instances is one unit of work. Each de-identified file is made durable before the rows that
point at it are committed (each file fsynced in the background while the next is de-identified, each folder
of the batch once before the commit), so a crash leaves at worst a file without a row (rewritten
identically on resend), never a row without a file. A resend of an indexed instance is recognised by its
keyed pseudo UID before any work.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from sqlalchemy.exc import IntegrityError

from bridge.annotations.seg_references import DELIVERY_SOURCE, SEG_SOP_CLASS, check_references
from bridge.deid import values
from bridge.deid.deidentify import DeidContext, DeidResult, deidentify
from bridge.dicom.elements import tag_of, text_of, value_of
from bridge.dicom.files import read_instance, write_instance
from bridge.errors import MalformedInstance, Refused
from bridge.ingest.admission import burned_in_reason, check_instance
from bridge.ingest.fields import Level, image_values, instance_number, row_values
from bridge.ingest.projects import ProjectContext
from bridge.process.caches import BoundedCache, BoundedSet
from bridge.process.metrics import metrics, reason_class
from bridge.timepoints import RECEIVED, update_timeline
from storage import index, queries, vault
from storage.audit import EventRow, record_event, record_events
from storage.db import Database, UnitOfWork
from storage.durable import StoredFile, sha256_of
from storage.filestore import FileBatch, FileStore
from storage.models.common import utcnow
from storage.models.research import QuarantineItem
from storage.quarantine import Quarantine

logger = logging.getLogger(__name__)
_ATTEMPTS = 3
# tags as constants: `value_of(ds, TAG)` skips the keyword look-up of `ds.Keyword` on every instance
_SOP_INSTANCE_UID, _STUDY_INSTANCE_UID, _SERIES_INSTANCE_UID, _SOP_CLASS_UID = (
    tag_of(k) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID")
)
_ACCESSION_NUMBER, _ISSUER_OF_PATIENT_ID, _PATIENT_ID, _PATIENT_NAME, _PATIENT_BIRTH_DATE = (
    tag_of(k) for k in ("AccessionNumber", "IssuerOfPatientID", "PatientID", "PatientName", "PatientBirthDate")
)
_TRANSFER_SYNTAX = BaseTag(0x00020010)


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@dataclass(frozen=True)
class IngestItem:
    path: Path
    project: str
    source: str  # a short intake label
    origin: str | None = None  # where it came from, for the quarantine record
    checked: bool = False  # passed `check_instance` already (a spool entry: the listener checked it)


@dataclass(frozen=True)
class _Prepared:
    """An instance de-identified and durably stored, whose rows are still to be committed."""

    context: ProjectContext
    project_id: int
    subject_code: str
    result: DeidResult
    stored: StoredFile
    source: str
    accession: str


@dataclass(frozen=True)
class IngestResult:
    outcome: Outcome
    reason: str | None = None
    sop_instance_uid: str | None = None  # pseudo UID; safe to log


class IngestService:
    """Holds what stays the same between instances: database, store, quarantine, projects, vault cipher."""

    def __init__(
        self,
        *,
        database: Database,
        store: FileStore,
        quarantine: Quarantine,
        projects: dict[str, ProjectContext],
        cipher: vault.VaultCipher,
        actor: str,
        on_seg: Callable[[Dataset, str, str], object] | None = None,
    ) -> None:
        self.database = database
        self.on_seg = on_seg  # a stored SEG (de-identified dataset, project, source): it becomes an annotation
        self.store = store
        self.quarantine = quarantine
        self.projects = projects
        self.cipher = cipher
        self.actor = actor
        self._project_ids: dict[str, int] = {}
        # Rows never deleted, remembered after commit to skip repeated look-ups (bounded: a long-running
        # service sees millions of instances).
        self._subjects: BoundedCache[tuple[str, str], str] = BoundedCache(100_000)
        self._known_series: BoundedCache[tuple[str, str], tuple[int, int]] = BoundedCache(100_000)
        self._recorded_uids: BoundedSet[tuple[str, str]] = BoundedSet(200_000)
        self._research_studies: BoundedCache[tuple[str, str], str] = BoundedCache(10_000)  # "": not research

    def ingest(self, path: Path, *, project: str, source: str, origin: str | None = None) -> IngestResult:
        """Ingest the instance in `path` (left in place) into `project`. `source` is a short intake label."""
        result = self.ingest_many([IngestItem(path, project, source, origin)])[0]
        if isinstance(result, BaseException):
            raise result
        return result

    def ingest_many(self, items: Sequence[IngestItem]) -> list[IngestResult | Exception]:
        """Ingest several instances with one transaction for all their rows (the files are written first and
        made durable). Each item gets its result, or the exception that stopped it alone."""
        results: list[IngestResult | Exception | None] = [None] * len(items)
        prepared: list[tuple[int, _Prepared]] = []
        files = self.store.batch()
        for position, item in enumerate(items):
            try:
                outcome = self._prepare(item, files)
            except IntegrityError:  # another process created the same subject a moment ago: again, alone
                results[position] = self._ingest_alone(item)
                continue
            except Exception as error:
                results[position] = error
                continue
            if isinstance(outcome, IngestResult):
                results[position] = outcome
            else:
                prepared.append((position, outcome))
        not_durable = files.finish()  # before any row points at the files
        for position, p in prepared:
            if (problem := not_durable.get(p.stored.relative_path)) is not None:
                results[position] = problem
        prepared = [(position, p) for position, p in prepared if p.stored.relative_path not in not_durable]
        if prepared:
            committed: list[IngestResult | Exception]
            try:
                committed = list(self._commit([p for _, p in prepared]))
            except IntegrityError:  # another worker indexed a row of the batch meanwhile: one by one
                committed = [self._ingest_alone(items[position]) for position, _ in prepared]
            for (position, _), result in zip(prepared, committed, strict=True):
                results[position] = result
            self._annotate_segs([p for position, p in prepared if results[position] is not None])
        done = [result for result in results if result is not None]
        counted = metrics().ingested
        for result in done:
            if isinstance(result, IngestResult) and result.outcome is not Outcome.QUARANTINED:
                counted.labels(result.outcome.value).inc()
        return done

    def _annotate_segs(self, prepared: list[_Prepared]) -> None:
        """Stored SEGs become annotations (after their commit: a failure there never loses the SEG)."""
        if self.on_seg is None:
            return
        for p in prepared:
            if text_of(p.result.dataset, _SOP_CLASS_UID) == SEG_SOP_CLASS:
                try:
                    self.on_seg(p.result.dataset, p.context.name, p.source)
                except Exception:  # the SEG is stored and indexed; the annotation can be made again from it
                    logger.exception("a stored SEG of project %s could not become an annotation", p.context.name)

    def _ingest_alone(self, item: IngestItem) -> IngestResult | Exception:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                files = self.store.batch()
                outcome = self._prepare(item, files)
                if isinstance(outcome, IngestResult):
                    return outcome
                if problem := files.finish().get(outcome.stored.relative_path):
                    return problem
                return self._commit([outcome])[0]
            except IntegrityError as error:
                if attempt == _ATTEMPTS:
                    return error
                logger.info("concurrent insert in project %s, retrying (attempt %d)", item.project, attempt)
            except Exception as error:
                return error
        raise AssertionError("unreachable")

    def refuse(
        self, path: Path, *, project: str | None, reason: str, source: str, origin: str | None = None
    ) -> IngestResult:
        """Keep the bytes in quarantine with the reason, index the refusal, audit it. The same bytes refused
        twice for the same project are kept once."""
        metrics().quarantined.labels(reason_class(reason)).inc()
        digest = sha256_of(path)
        project_id = self.project_id(project) if project else None
        with self.database.unit_of_work() as work:
            if queries.find_quarantined(work.research, project_id=project_id, sha256=digest):
                return IngestResult(Outcome.QUARANTINED, reason=reason)
        kept = self.quarantine.keep(path, project=project, reason=reason, origin=origin or str(path))
        with self.database.unit_of_work() as work:
            work.research.add(
                QuarantineItem(
                    project_id=project_id,
                    reason=reason[:256],
                    path=kept.stored.relative_path,
                    size=kept.stored.size,
                    sha256=kept.stored.sha256,
                    source=source[:64],
                )
            )
            record_event(
                work.research,
                actor=self.actor,
                action="instance.quarantined",
                project_id=project_id,
                object=kept.stored.relative_path,
                detail=reason[:1024],
            )
        logger.warning("quarantined an instance for project %s: %s", project, reason)
        return IngestResult(Outcome.QUARANTINED, reason=reason)

    def project_id(self, name: str) -> int:
        """The project's row id, created (and committed) on first use."""
        if name not in self._project_ids:
            with self.database.unit_of_work() as work:
                project = index.ensure_project(work.research, name)
            assert project.id is not None
            self._project_ids[name] = project.id
        return self._project_ids[name]

    def _prepare(self, item: IngestItem, files: FileBatch) -> IngestResult | _Prepared:
        """Everything but the rows: checks, de-identification, the file (durable once `files` is finished).
        Nothing is locked meanwhile."""
        context = self.projects[item.project]
        try:
            ds = read_instance(item.path)
            if not item.checked:
                check_instance(ds)
            if not context.settings.deid.accept_burned_in and (reason := burned_in_reason(ds)):
                raise Refused(reason)
        except (MalformedInstance, Refused) as problem:
            return self.refuse(
                item.path, project=item.project, reason=str(problem), source=item.source, origin=item.origin
            )

        project_id = self.project_id(context.name)
        # an object coming back from the research side (a SEG drawn on de-identified images) keeps the
        # research-side UIDs it references, its subject and its (already shifted) dates
        research_subject = self._research_subject(context, project_id, text_of(ds, _STUDY_INSTANCE_UID))
        known = self._known_uids(context, ds) if research_subject is not None else frozenset()
        # the bridge's own SEG of an approved annotation: built from de-identified sources, stored as it is
        own = research_subject is not None and item.source.startswith(DELIVERY_SOURCE)

        def pseudo(tag: BaseTag) -> str:
            original = text_of(ds, tag).strip("\x00 ")
            if own or context.retain_uids or original in known:
                return original
            return values.pseudo_uid(context.key, original)

        if text_of(ds, _SOP_CLASS_UID) == SEG_SOP_CLASS and not item.source.startswith(DELIVERY_SOURCE):
            try:
                self.check_seg(ds, context, project_id, known)
            except Refused as problem:
                return self.refuse(
                    item.path, project=item.project, reason=str(problem), source=item.source, origin=item.origin
                )
        pseudo_sop = pseudo(_SOP_INSTANCE_UID)
        relative = self.store.relative_path(
            context.name, pseudo(_STUDY_INSTANCE_UID), pseudo(_SERIES_INSTANCE_UID), pseudo_sop
        )
        accession = text_of(ds, _ACCESSION_NUMBER)
        # Only a file already in the store can mean a resend; the index decides (a crash can leave a file
        # without its row). New instances, the common case, skip this transaction.
        if self.store.path(relative).exists():
            with self.database.unit_of_work() as work:
                if queries.find_instance(work.research, project_id=project_id, sop_instance_uid=pseudo_sop):
                    return IngestResult(Outcome.DUPLICATE, sop_instance_uid=pseudo_sop)
        if research_subject is not None:
            subject_code = research_subject
            deid_context = self._deid_context(context, subject_code, None, known)
            if own:
                return self._prepared_as_is(item, files, context, project_id, subject_code, ds, relative)
        else:
            issuer, patient_id = text_of(ds, _ISSUER_OF_PATIENT_ID).strip(), text_of(ds, _PATIENT_ID).strip()
            patient_key = values.patient_key(context.key, issuer, patient_id)
            subject_code = self._subject_code(
                context,
                patient_key,
                lambda: vault.Identity(
                    issuer=issuer,
                    patient_id=patient_id,
                    name=str(value_of(ds, _PATIENT_NAME) or ""),
                    birth_date=text_of(ds, _PATIENT_BIRTH_DATE),
                ),
            )
            deid_context = self._deid_context(context, subject_code, patient_key)
        result = deidentify(ds, deid_context)
        stored = files.write(
            relative,
            lambda writer: write_instance(writer, result.dataset, item.path),  # type: ignore[arg-type]
        )
        return _Prepared(context, project_id, subject_code, result, stored, item.source, accession)

    def _prepared_as_is(
        self,
        item: IngestItem,
        files: FileBatch,
        context: ProjectContext,
        project_id: int,
        subject_code: str,
        ds: Dataset,
        relative: str,
    ) -> _Prepared:
        result = DeidResult(dataset=ds)
        stored = files.write(relative, lambda writer: write_instance(writer, ds, item.path))  # type: ignore[arg-type]
        return _Prepared(context, project_id, subject_code, result, stored, item.source, "")

    def _research_subject(self, context: ProjectContext, project_id: int, study_uid: str) -> str | None:
        """The subject whose indexed study this is, when `study_uid` is one of the project's own pseudo UIDs
        (only those can be: they are all `2.25.`). Never with retained UIDs, where a hospital's resend would
        look the same."""
        study_uid = study_uid.strip("\x00 ")
        if context.retain_uids or not study_uid.startswith(values.UID_ROOT):
            return None
        key = (context.name, study_uid)
        cached = self._research_studies.get(key)
        if cached is not None:
            return cached or None
        with self.database.reading() as session:
            subject = queries.subject_of_study(session, project_id=project_id, study_uid=study_uid)
        self._research_studies[key] = subject or ""
        return subject

    def _known_uids(self, context: ProjectContext, ds: Dataset) -> frozenset[str]:
        """The UIDs of `ds` (any depth) that are the project's pseudo UIDs."""
        uids = {str(v) for e in ds.iterall() if e.VR == "UI" for v in (e.value if e.VM > 1 else [e.value]) if v}
        with self.database.unit_of_work() as work:
            return frozenset(vault.known_pseudo_uids(work.vault, project=context.name, uids=uids))

    def check_seg(self, ds: Dataset, context: ProjectContext, project_id: int, known: frozenset[str]) -> None:
        """Refuse a SEG whose references are not indexed instances of the one series it names."""

        def stored_uid(uid: str) -> str:
            return uid if uid in known else context.stored_uid(uid)

        def series_of(uids: list[str]) -> dict[str, tuple[str, str]]:
            with self.database.reading() as session:
                return queries.series_of_instances(session, project_id=project_id, sop_instance_uids=uids)

        # a research-side SEG is drawn on images the index has; the hospital's may come with its images
        check_references(ds, stored_uid=stored_uid, series_of=series_of, require_indexed=bool(known))

    def check_received_seg(self, path: Path, project: str) -> None:
        """The SEG check of a received file, before it is acknowledged (admission reads only some elements)."""
        context = self.projects[project]
        ds = read_instance(path)
        project_id = self.project_id(project)
        research = self._research_subject(context, project_id, text_of(ds, _STUDY_INSTANCE_UID))
        self.check_seg(ds, context, project_id, self._known_uids(context, ds) if research else frozenset())

    def _commit(self, batch: list[_Prepared]) -> list[IngestResult]:
        """The rows of a batch of stored files (made durable by the caller), in one unit of work (vault
        first)."""
        new_pairs: dict[tuple[str, str], str] = {}  # (project, pseudo) -> original
        studies: dict[tuple[str, str], str] = {}  # (project, pseudo study UID) -> accession
        for p in batch:
            project = p.context.name
            for original, pseudo in p.result.uid_map.items():
                if (project, pseudo) not in self._recorded_uids:
                    new_pairs[(project, pseudo)] = original
            # the study's pseudo UID is recorded with the first instance's UID pairs: its accession goes with it
            study_key = (project, text_of(p.result.dataset, _STUDY_INSTANCE_UID))
            if p.accession and study_key not in self._recorded_uids:
                studies.setdefault(study_key, p.accession)
        located: dict[tuple[str, str], tuple[int, int]] = {}
        with self.database.unit_of_work() as work:
            for project in {project for project, _ in new_pairs}:
                pairs = [(original, pseudo) for (name, pseudo), original in new_pairs.items() if name == project]
                vault.add_uids(work.vault, project=project, pairs=pairs, cipher=self.cipher)
            for (project, study_uid), accession in studies.items():
                vault.add_study(
                    work.vault, project=project, pseudo_study_uid=study_uid, accession=accession, cipher=self.cipher
                )
            rows = []
            new_timepoints: dict[int, _Prepared] = {}  # subject id -> an instance of its new study
            for p in batch:
                series_key = (p.context.name, text_of(p.result.dataset, _SERIES_INSTANCE_UID))
                where = located.get(series_key) or self._known_series.get(series_key)
                if where is None:
                    where, subject_id = self._ensure_series(work, p)
                    if subject_id is not None:
                        new_timepoints[subject_id] = p
                located[series_key] = where
                rows.append(self._instance_row(p, series_id=where[0]))
            # the clocks of subjects with a new study, last and in the order of their ids: each subject is
            # locked while its clock is worked out, and transactions taking locks in one order never deadlock
            for subject_id in sorted(new_timepoints):
                visits = new_timepoints[subject_id].context.settings.visits
                update_timeline(work.research, subject_id=subject_id, visits=visits)
            timepoint_of = dict(located.values())
            inserted = index.add_instances(work.research, instances=rows, timepoint_of=timepoint_of)
            # not inserted: indexed a moment earlier (another worker, or twice in this batch: same bytes)
            stored: list[bool] = []
            for row in rows:
                indexed_as = (row["project_id"], row["sop_instance_uid"])
                stored.append(indexed_as in inserted)
                inserted.discard(indexed_as)
            events: list[EventRow] = [
                {
                    "at": utcnow(),
                    "actor": self.actor,
                    "action": "instance.stored",
                    "project_id": row["project_id"],
                    "object": row["sop_instance_uid"],
                    "detail": row["source"],
                }
                for row, new in zip(rows, stored, strict=True)
                if new
            ]
            record_events(work.research, events)
        # remembered only once committed: a rolled-back row must not be assumed to exist
        self._recorded_uids.update(new_pairs)
        for key, where in located.items():
            self._known_series[key] = where
        results = [
            IngestResult(Outcome.STORED if new else Outcome.DUPLICATE, sop_instance_uid=row["sop_instance_uid"])
            for row, new in zip(rows, stored, strict=True)
        ]
        return results

    def _subject_code(self, context: ProjectContext, patient_key: str, identity: Callable[[], vault.Identity]) -> str:
        """The subject of this patient in the project, allocated (and committed, vault first) if new (only
        then is the identity read: names are costly to decode)."""
        cached = self._subjects.get((context.name, patient_key))
        if cached:
            return cached
        with self.database.unit_of_work() as work:
            subject = vault.find_subject(work.vault, project=context.name, patient_key=patient_key)
            if subject is None:
                subject = vault.add_subject(
                    work.vault,
                    project=context.name,
                    patient_key=patient_key,
                    code_of=context.subject_code,
                    identity=identity(),
                    cipher=self.cipher,
                )
            code = subject.subject_code
        self._subjects[(context.name, patient_key)] = code
        return code

    def _deid_context(
        self,
        context: ProjectContext,
        subject_code: str,
        patient_key: str | None,
        known_uids: frozenset[str] = frozenset(),
    ) -> DeidContext:
        """`patient_key` None: the object comes from the research side, its dates are shifted already."""
        offset = 0
        if patient_key is not None:
            offset = values.date_offset_days(context.key, patient_key, context.settings.deid.max_date_shift_days)
        return DeidContext(
            policy=context.policy,
            key=context.key,
            subject_code=subject_code,
            date_offset_days=offset,
            trial=context.trial,
            keep_private=context.keep_private,
            known_uids=known_uids,
        )

    def _instance_row(self, p: _Prepared, *, series_id: int) -> index.InstanceRow:
        out = p.result.dataset
        return {
            "project_id": p.project_id,
            "series_id": series_id,
            "sop_instance_uid": text_of(out, _SOP_INSTANCE_UID),
            "sop_class_uid": text_of(out, _SOP_CLASS_UID),
            "transfer_syntax_uid": text_of(out.file_meta, _TRANSFER_SYNTAX),
            "instance_number": instance_number(out),
            **image_values(out),  # type: ignore[typeddict-item]
            "path": p.stored.relative_path,
            "size": p.stored.size,
            "sha256": p.stored.sha256,
            "source": p.source[:64],
            "received_at": utcnow(),
        }

    def _ensure_series(self, work: UnitOfWork, p: _Prepared) -> tuple[tuple[int, int], int | None]:
        """(series id, timepoint id), and the subject's id when its timepoint is new (its clock to be worked
        out again)."""
        out = p.result.dataset
        subject = index.ensure_subject(work.research, project_id=p.project_id, subject_code=p.subject_code)
        assert subject.id is not None
        values = row_values(out, Level.TIMEPOINT)
        values["label_source"] = RECEIVED if values.get("label") else None
        timepoint, created = index.ensure_timepoint(
            work.research, project_id=p.project_id, subject_id=subject.id, values=values
        )
        series = index.ensure_series(
            work.research, project_id=p.project_id, timepoint=timepoint, values=row_values(out, Level.SERIES)
        )
        assert series.id is not None and timepoint.id is not None
        return (series.id, timepoint.id), subject.id if created else None
