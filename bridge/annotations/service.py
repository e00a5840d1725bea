"""Annotations in: a mask file aligned to a series (NIfTI, NRRD, NumPy), an upload, or a DICOM SEG that arrived
by an intake path. Each becomes an annotation of one series by one annotator, or a new version of one.

The geometry guard is here: a mask's grid must be its series' grid (`bridge.annotations.masks.align`), and a
mask that fits another series of the same subject is refused with that series named, so that a mask can
never be matched to the wrong image.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlmodel import Session, select

from bridge.annotations import maskfiles
from bridge.annotations.geometry import SeriesGeometry
from bridge.annotations.masks import GeometryMismatch, Mask, MaskError, align, read_mask
from bridge.annotations.records import AnnotationView, load_annotation, versions_of, view_of
from bridge.annotations.segments import Segment, coded, from_json, to_json
from bridge.annotations.sources import SeriesRecord, find_series, geometry_of, instance_paths, subject_series
from bridge.errors import AnnotationError, Forbidden
from bridge.settings import ProjectSettings, Settings
from storage.audit import record_event
from storage.db import Database
from storage.models.annotations import Annotation, AnnotationVersion
from storage.models.common import utcnow

logger = logging.getLogger(__name__)
IN_REVIEW, REJECTED, APPROVED = "in-review", "rejected", "approved"
NAME = r"^[A-Za-z0-9_.@ -]{1,64}$"


@dataclass(frozen=True)
class NewVersion:
    """A version about to be stored: its masks (segment, slice, row, column) and segments."""

    masks: np.ndarray
    segments: list[Segment]
    source: str  # import | seg | api | consensus
    seg_instance_uid: str | None = None


def labels_key(labels: Iterable[str]) -> str:
    """How an annotation's labels are kept for queries: lower case between commas (`,tumor,node,`)."""
    return "," + ",".join(label.lower() for label in labels) + ","


class AnnotationService:
    """Annotations of one deployment: the database, the de-identified store, the mask files, the projects."""

    def __init__(
        self,
        *,
        database: Database,
        store_root: Path,
        masks_root: Path,
        projects: Mapping[str, ProjectSettings],
    ) -> None:
        self.database = database
        self.store_root = store_root
        self.masks_root = masks_root
        self.projects = projects

    @classmethod
    def of(cls, settings: Settings, database: Database) -> AnnotationService:
        """The service as the settings configure it (the CLI, the API and serve's ingest each make one)."""
        return cls(
            database=database,
            store_root=settings.storage.store_dir,
            masks_root=settings.storage.annotations_dir,
            projects=settings.projects,
        )

    def settings_of(self, project: str) -> ProjectSettings:
        try:
            return self.projects[project]
        except KeyError:
            raise AnnotationError(f"project {project!r} is not configured") from None

    # -- geometry ---------------------------------------------------------------------------------------
    def geometry(self, session: Session, record: SeriesRecord) -> SeriesGeometry:
        return geometry_of(self.store_root, instance_paths(session, series_id=record.id), record)

    def aligned(self, session: Session, record: SeriesRecord, mask: Mask, *, name: str) -> np.ndarray:
        """The mask's labels in the series' index order, or an error naming every mismatch and, when the
        mask fits another series of the subject, that series."""
        geometry = self.geometry(session, record)
        try:
            return align(mask, geometry)
        except GeometryMismatch as mismatch:
            better = self._better_fit(session, record, mask)
            if better is not None:
                raise AnnotationError(
                    f"{name} does not fit {record.named()} ({mismatch}); it fits {better.named()}, timepoint "
                    f"{better.timepoint_label or '?'} (day {better.days_from_baseline}): import it there"
                ) from None
            raise AnnotationError(f"{name} does not fit {record.named()}: {mismatch}") from None

    def _better_fit(self, session: Session, named: SeriesRecord, mask: Mask) -> SeriesRecord | None:
        if mask.grid is None:  # a bare array has no geometry to compare: only its shape was checked
            return None
        fits: list[tuple[float, SeriesRecord]] = []
        for other in subject_series(session, subject_id=named.subject_id):
            if other.id == named.id:
                continue
            try:
                geometry = self.geometry(session, other)
                align(mask, geometry)
            except (AnnotationError, MaskError):
                continue
            fits.append((mask.grid.distance(geometry.grid), other))
        return min(fits, key=lambda fit: fit[0])[1] if fits else None

    # -- masks in -----------------------------------------------------------------------------------------
    def import_mask(
        self,
        *,
        series_uid: str,
        path: Path,
        labels: Sequence[str],
        annotator: str,
        actor: str,
        project: str | None = None,
        revise: int | None = None,
        task_id: int | None = None,
    ) -> AnnotationView:
        """A mask file of the series (label value i is `labels[i-1]`; with one label, every non-zero voxel)."""
        try:
            mask = read_mask(path)
        except MaskError as error:
            raise AnnotationError(str(error)) from None
        with self.database.reading() as session:
            record = find_series(session, series_uid=series_uid, project=project)
            values = self.aligned(session, record, mask, name=f"mask {path.name}")
        version = self.version_from_labels(record.project, values, labels, source="import")
        return self.save(record, version, annotator=annotator, actor=actor, revise=revise, task_id=task_id)

    def version_from_labels(
        self, project: str, values: np.ndarray, labels: Sequence[str], *, source: str
    ) -> NewVersion:
        """Split an integer label volume into one boolean mask per label; every label must be drawn."""
        labels = [label.strip() for label in labels if label.strip()]
        if not labels:
            raise AnnotationError("name the label(s) of the mask: --label Tumor (or Tumor,Lymph-node for values 1, 2)")
        if len({label.lower() for label in labels}) != len(labels):
            raise AnnotationError(f"labels must differ: {', '.join(labels)}")
        present = {int(v) for v in np.unique(values) if v != 0}
        if not present:
            raise AnnotationError("the mask is empty: no voxel is labelled")
        if len(labels) == 1:
            stack = (values != 0)[np.newaxis]
        else:
            unknown = sorted(v for v in present if v > len(labels) or v < 0)
            if unknown:
                raise AnnotationError(
                    f"the mask holds values {unknown} but only {len(labels)} labels were named (value i is label i)"
                )
            stack = np.stack([values == number for number in range(1, len(labels) + 1)])
        table = self.settings_of(project).labels
        segments = []
        for number, label in enumerate(labels, start=1):
            voxels = int(stack[number - 1].sum())
            if voxels == 0:
                raise AnnotationError(f"label {label!r} (value {number}) has no voxel in the mask")
            segments.append(coded(number, label, table, voxels))
        return NewVersion(masks=np.ascontiguousarray(stack), segments=segments, source=source)

    # -- rows ---------------------------------------------------------------------------------------------
    def save(
        self,
        record: SeriesRecord,
        version: NewVersion,
        *,
        annotator: str,
        actor: str,
        revise: int | None = None,
        task_id: int | None = None,
        consensus_of: Sequence[int] = (),
        stage: str | None = None,
        state: str = IN_REVIEW,
    ) -> AnnotationView:
        """A new annotation (submitted to the first review stage), or a new version of `revise`."""
        if not re.match(NAME, annotator):
            raise AnnotationError(f"annotator {annotator!r}: letters, digits, '.', '@', '-', '_' (at most 64)")
        stages = self.settings_of(record.project).review.stages
        with self.database.unit_of_work() as work:
            session = work.research
            if revise is None:
                row = Annotation(
                    project_id=record.project_id,
                    series_id=record.id,
                    task_id=task_id,
                    annotator=annotator,
                    stage=stage or stages[1],
                    state=state,
                    version=1,
                    consensus_of=",".join(str(i) for i in consensus_of) or None,
                )
                session.add(row)
                session.flush()
            else:
                row = self._revisable(session, revise, record, annotator)
                row.version += 1
                row.stage, row.state, row.updated_at = stages[1], IN_REVIEW, utcnow()
            row.labels = labels_key(segment.label for segment in version.segments)
            assert row.id is not None
            relative = maskfiles.relative_path(record.project, row.id, row.version)
            stored = maskfiles.save(self.masks_root, relative, version.masks)
            session.add(
                AnnotationVersion(
                    annotation_id=row.id,
                    version=row.version,
                    path=relative,
                    sha256=stored.sha256,
                    segments=to_json(version.segments),
                    source=version.source,
                    seg_instance_uid=version.seg_instance_uid,
                    created_by=actor[:128],
                )
            )
            record_event(
                session,
                actor=actor,
                action="annotation.created" if row.version == 1 else "annotation.revised",
                project_id=record.project_id,
                object=f"annotation {row.id} v{row.version}",
                detail=f"series {record.uid}, {version.source}, labels {', '.join(s.label for s in version.segments)}",
            )
            session.flush()
            view = view_of(session, row, record=record)
        logger.info("annotation %d v%d of series %s stored (%s)", row.id, row.version, record.uid, version.source)
        return view

    def _revisable(self, session: Session, annotation_id: int, record: SeriesRecord, annotator: str) -> Annotation:
        row = load_annotation(session, annotation_id)
        if row.series_id != record.id:
            raise AnnotationError(f"annotation {annotation_id} is of another series, not {record.uid}")
        if row.annotator != annotator:
            raise Forbidden(f"annotation {annotation_id} is {row.annotator}'s: only its annotator revises it")
        if row.state == APPROVED:
            raise AnnotationError(f"annotation {annotation_id} is approved: a correction is a new annotation")
        return row

    def existing_from_seg(self, session: Session, seg_instance_uid: str) -> int | None:
        """The annotation a SEG already became (a resend changes nothing)."""
        statement = select(AnnotationVersion.annotation_id).where(
            AnnotationVersion.seg_instance_uid == seg_instance_uid
        )
        return session.exec(statement).first()

    def get(self, annotation_id: int) -> AnnotationView:
        with self.database.reading() as session:
            return view_of(session, load_annotation(session, annotation_id))

    def masks_of(
        self, session: Session, annotation_id: int, version: int | None = None
    ) -> tuple[np.ndarray, list[Segment]]:
        """A version's masks (segment, slice, row, column) and segments (the current version by default)."""
        row = load_annotation(session, annotation_id)
        wanted = version or row.version
        for found in versions_of(session, annotation_id):
            if found.version == wanted:
                return maskfiles.load(self.masks_root, found.path), from_json(found.segments)
        raise AnnotationError(f"annotation {annotation_id} has no version {wanted}")
