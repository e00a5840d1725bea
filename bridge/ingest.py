"""The ingest service every intake path calls: parse, admit, de-identify, store, index, audit.

One call is one unit of work. The de-identified file is made durable before the rows that point at it are
committed, so a crash leaves at worst a file without a row (rewritten identically on resend), never a row
without a file. A resend of an indexed instance is recognised by its keyed pseudo UID before any work.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileDataset
from pydicom.multival import MultiValue
from sqlalchemy.exc import IntegrityError

from bridge.admission import Refused, burned_in_reason, check_instance
from bridge.caches import BoundedCache, BoundedSet
from bridge.deid import values
from bridge.deid.deidentify import DeidContext, DeidResult, deidentify
from bridge.dicomio import MalformedInstance, read_instance, write_instance
from bridge.projects import ProjectContext
from bridge.quarantine import Quarantine
from storage import index, vault
from storage.audit import record_event
from storage.db import Database, UnitOfWork
from storage.filestore import FileStore, StoredFile, sha256_of
from storage.models import Instance, QuarantineItem, utcnow

logger = logging.getLogger(__name__)
_ATTEMPTS = 3


class Outcome(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


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
    ) -> None:
        self.database = database
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

    def ingest(self, path: Path, *, project: str, source: str, origin: str | None = None) -> IngestResult:
        """Ingest the instance in `path` (left in place) into `project`. `source` is a short intake label."""
        context = self.projects[project]
        try:
            ds = read_instance(path)
            check_instance(ds)
            if not context.settings.deid.accept_burned_in and (reason := burned_in_reason(ds)):
                raise Refused(reason)
        except (MalformedInstance, Refused) as problem:
            return self.refuse(path, project=project, reason=str(problem), source=source, origin=origin)
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._store(ds, path, context, source)
            except IntegrityError:
                if attempt == _ATTEMPTS:
                    raise
                logger.info("concurrent insert in project %s, retrying (attempt %d)", project, attempt)
                ds = read_instance(path)  # the failed attempt de-identified `ds` in place
        raise AssertionError("unreachable")

    def refuse(
        self, path: Path, *, project: str | None, reason: str, source: str, origin: str | None = None
    ) -> IngestResult:
        """Keep the bytes in quarantine with the reason, index the refusal, audit it. The same bytes refused
        twice for the same project are kept once."""
        digest = sha256_of(path)
        project_id = self.project_id(project) if project else None
        with self.database.unit_of_work() as work:
            if index.find_quarantined(work.research, project_id=project_id, sha256=digest):
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

    def _store(self, ds: FileDataset, path: Path, context: ProjectContext, source: str) -> IngestResult:
        """Short transactions around the slow part: nothing is locked while de-identifying and writing."""

        def pseudo(keyword: str) -> str:
            original = str(ds[keyword].value).strip("\x00 ")
            return original if context.retain_uids else values.pseudo_uid(context.key, original)

        pseudo_sop = pseudo("SOPInstanceUID")
        relative = self.store.relative_path(
            context.name, pseudo("StudyInstanceUID"), pseudo("SeriesInstanceUID"), pseudo_sop
        )
        identity, accession = _identity_of(ds), str(ds.get("AccessionNumber") or "")
        patient_key = values.patient_key(context.key, identity.issuer, identity.patient_id)
        project_id = self.project_id(context.name)
        # Only a file already in the store can mean a resend; the index decides (a crash can leave a file
        # without its row). New instances, the common case, skip this transaction.
        if self.store.path(relative).exists():
            with self.database.unit_of_work() as work:
                if index.find_instance(work.research, project_id=project_id, sop_instance_uid=pseudo_sop):
                    return IngestResult(Outcome.DUPLICATE, sop_instance_uid=pseudo_sop)
        subject_code = self._subject_code(context, patient_key, identity)

        result = deidentify(ds, self._deid_context(context, subject_code, patient_key))
        out = result.dataset
        stored = self.store.write(relative, lambda writer: write_instance(writer, out, path))  # type: ignore[arg-type]

        new_pairs = [(o, p) for o, p in result.uid_map.items() if (context.name, p) not in self._recorded_uids]
        study_uid = str(out.StudyInstanceUID)
        # the study's pseudo UID is recorded with the first instance's UID pairs: its accession goes with it
        record_study = bool(accession) and (context.name, study_uid) not in self._recorded_uids
        with self.database.unit_of_work() as work:
            vault.add_uids(work.vault, project=context.name, pairs=new_pairs, cipher=self.cipher)
            if record_study:
                vault.add_study(
                    work.vault,
                    project=context.name,
                    pseudo_study_uid=study_uid,
                    accession=accession,
                    cipher=self.cipher,
                )
            located, inserted = self._index(work, context.name, project_id, subject_code, result, stored, source)
        # remembered only once committed: a rolled-back row must not be assumed to exist
        self._recorded_uids.update((context.name, p) for _, p in new_pairs)
        self._known_series[(context.name, str(out.SeriesInstanceUID))] = located
        if not inserted:  # another worker indexed the same instance a moment earlier (same file, same bytes)
            return IngestResult(Outcome.DUPLICATE, sop_instance_uid=str(out.SOPInstanceUID))
        logger.debug("stored %s in project %s", out.SOPInstanceUID, context.name)
        return IngestResult(Outcome.STORED, sop_instance_uid=str(out.SOPInstanceUID))

    def _subject_code(self, context: ProjectContext, patient_key: str, identity: vault.Identity) -> str:
        """The subject of this patient in the project, allocated (and committed, vault first) if new."""
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
                    prefix=context.settings.subject_prefix,
                    identity=identity,
                    cipher=self.cipher,
                )
            code = subject.subject_code
        self._subjects[(context.name, patient_key)] = code
        return code

    def _deid_context(self, context: ProjectContext, subject_code: str, patient_key: str) -> DeidContext:
        return DeidContext(
            policy=context.policy,
            key=context.key,
            subject_code=subject_code,
            date_offset_days=values.date_offset_days(
                context.key, patient_key, context.settings.deid.max_date_shift_days
            ),
            trial=context.trial,
            keep_private=context.keep_private,
        )

    def _index(
        self,
        work: UnitOfWork,
        project: str,
        project_id: int,
        subject_code: str,
        result: DeidResult,
        stored: StoredFile,
        source: str,
    ) -> tuple[tuple[int, int], bool]:
        """Index the stored instance; returns (series id, timepoint id) for the next instance of the series,
        and whether this call indexed it (False: it already was)."""
        out = result.dataset
        located = self._known_series.get((project, str(out.SeriesInstanceUID)))
        if located is None:
            located = self._ensure_series(work, project_id, subject_code, result)
        series_id, timepoint_id = located
        instance = Instance(
            project_id=project_id,
            series_id=series_id,
            sop_instance_uid=str(out.SOPInstanceUID),
            sop_class_uid=str(out.SOPClassUID),
            transfer_syntax_uid=str(out.file_meta.TransferSyntaxUID),
            instance_number=_int(out.get("InstanceNumber")),
            path=stored.relative_path,
            size=stored.size,
            sha256=stored.sha256,
            source=source[:64],
            received_at=utcnow(),
        )
        inserted = index.add_instance(work.research, instance=instance, timepoint_id=timepoint_id)
        if inserted:
            record_event(
                work.research,
                actor=self.actor,
                action="instance.stored",
                project_id=project_id,
                object=str(out.SOPInstanceUID),
                detail=source[:1024],
            )
        return located, inserted

    def _ensure_series(
        self, work: UnitOfWork, project_id: int, subject_code: str, result: DeidResult
    ) -> tuple[int, int]:
        out = result.dataset
        subject = index.ensure_subject(work.research, project_id=project_id, subject_code=subject_code)
        assert subject.id is not None
        timepoint, _ = index.ensure_timepoint(
            work.research,
            project_id=project_id,
            subject_id=subject.id,
            fields=index.TimepointFields(
                study_uid=str(out.StudyInstanceUID),
                study_date=_date(out.get("StudyDate")),
                label=result.timepoint_label,
                description=_text(out.get("StudyDescription")),
            ),
        )
        series = index.ensure_series(
            work.research, project_id=project_id, timepoint=timepoint, fields=series_fields(out)
        )
        assert series.id is not None and timepoint.id is not None
        return series.id, timepoint.id


def _identity_of(ds: FileDataset) -> vault.Identity:
    return vault.Identity(
        issuer=str(ds.get("IssuerOfPatientID") or "").strip(),
        patient_id=str(ds.PatientID).strip(),
        name=str(ds.get("PatientName") or ""),
        birth_date=str(ds.get("PatientBirthDate") or ""),
    )


def series_fields(ds: Dataset) -> index.SeriesFields:
    """The series attributes the index keeps (of the de-identified dataset)."""
    spacing = ds.get("PixelSpacing") or _functional_group(ds, "PixelMeasuresSequence", "PixelSpacing")
    thickness = ds.get("SliceThickness") or _functional_group(ds, "PixelMeasuresSequence", "SliceThickness")
    return index.SeriesFields(
        series_uid=str(ds.SeriesInstanceUID),
        modality=_text(ds.get("Modality")),
        body_part=_text(ds.get("BodyPartExamined")),
        description=_text(ds.get("SeriesDescription")),
        series_number=_int(ds.get("SeriesNumber")),
        frame_of_reference_uid=_text(ds.get("FrameOfReferenceUID")),
        manufacturer=_text(ds.get("Manufacturer")),
        model=_text(ds.get("ManufacturerModelName")),
        slice_thickness=_float(thickness),
        pixel_spacing_row=_float(spacing[0]) if spacing and len(spacing) == 2 else None,
        pixel_spacing_col=_float(spacing[1]) if spacing and len(spacing) == 2 else None,
        kvp=_float(ds.get("KVP")),
        convolution_kernel=_text(ds.get("ConvolutionKernel")),
        contrast_agent=_text(ds.get("ContrastBolusAgent")),
    )


def _functional_group(ds: Dataset, sequence: str, keyword: str) -> Any:
    """A value from the shared functional groups of an enhanced multi-frame instance."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if shared and sequence in shared[0] and shared[0][sequence].value:
        return shared[0][sequence][0].get(keyword)
    return None


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = "\\".join(str(v) for v in value) if isinstance(value, MultiValue) else str(value)
    return text.strip()[:64] or None


def _int(value: object) -> int | None:
    try:
        return int(value) if value not in (None, "") else None  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _float(value: object) -> float | None:
    try:
        return float(value) if value not in (None, "") else None  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def _date(value: object) -> dt.date | None:
    text = str(value or "").strip()
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
