"""Saved cohorts (named filters: their answer follows the data) and snapshots (one answer frozen for good).

A snapshot keeps each series' row as the query gave it and each instance with the SHA-256 of its stored file,
and a content hash over them: it never changes. When data it names is later deleted or replaced, `gone`
says what; the snapshot still lists it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, insert
from sqlmodel import Session, select

from bridge.cohorts.filters import CODE, CohortFilters
from bridge.cohorts.query import SeriesRow, each_series
from storage import audit
from storage.index import ensure_project
from storage.models.cohorts import SavedCohort, Snapshot, SnapshotInstance, SnapshotSeries
from storage.models.common import utcnow
from storage.models.research import Instance, Project, Series


class CohortError(LookupError):
    """A cohort or snapshot that does not exist, or a name that cannot be one; the message says which."""


def check_name(name: str) -> str:
    if not re.fullmatch(CODE, name) or "@" in name:
        raise CohortError(f"cohort name {name!r}: use letters, digits, '.', '-' and '_' (at most 64)")
    return name


def save(session: Session, name: str, filters: CohortFilters, *, actor: str) -> SavedCohort:
    """Create the cohort, or replace its filters (audited either way)."""
    project = ensure_project(session, filters.project)
    assert project.id is not None
    cohort = session.exec(
        select(SavedCohort).where(SavedCohort.project_id == project.id, SavedCohort.name == check_name(name))
    ).first()
    action = "cohort.update" if cohort else "cohort.create"
    if cohort is None:
        cohort = SavedCohort(project_id=project.id, name=name, query=filters.saved(), created_by=actor)
    else:
        cohort.query, cohort.updated_at = filters.saved(), utcnow()
    session.add(cohort)
    audit.record_event(session, actor=actor, action=action, object=f"cohort:{name}", project_id=project.id)
    session.flush()
    return cohort


def filters_of(cohort: SavedCohort | Snapshot) -> CohortFilters:
    return CohortFilters.model_validate_json(cohort.query)


def find(session: Session, name: str, projects: Iterable[str] | None = None) -> tuple[str, SavedCohort]:
    """The saved cohort called `name` (and its project), among `projects` when given."""
    statement = select(Project.name, SavedCohort).join(Project).where(SavedCohort.name == name)
    if projects is not None:
        statement = statement.where(Project.name.in_(list(projects)))  # type: ignore[attr-defined]
    found = session.exec(statement).all()
    if not found:
        raise CohortError(f"no saved cohort {name!r}; `pacs-bridge cohort list` shows them")
    if len(found) > 1:
        raise CohortError(f"cohort {name!r} exists in several projects ({', '.join(p for p, _ in found)}): say which")
    return found[0]


def listing(session: Session, projects: Iterable[str] | None = None) -> list[tuple[str, SavedCohort]]:
    statement = select(Project.name, SavedCohort).join(Project).order_by(Project.name, SavedCohort.name)
    if projects is not None:
        statement = statement.where(Project.name.in_(list(projects)))  # type: ignore[attr-defined]
    return [(str(p), c) for p, c in session.exec(statement).all()]


def content_hash(instances: Iterable[tuple[str, str, str]]) -> str:
    """SHA-256 over the sorted (series UID, SOP Instance UID, file SHA-256) lines: equal content, equal hash."""
    digest = hashlib.sha256()
    for series_uid, sop_uid, sha256 in sorted(instances):
        digest.update(f"{series_uid}\t{sop_uid}\t{sha256}\n".encode())
    return digest.hexdigest()


def take_snapshot(session: Session, name: str, *, actor: str, projects: Iterable[str] | None = None) -> Snapshot:
    """Freeze the saved cohort `name` as it answers now: `NAME@N`, the N-th snapshot of it."""
    _, cohort = find(session, name, projects)
    filters = filters_of(cohort)
    rows = list(each_series(session, filters))
    uids = [row.series_instance_uid for row in rows]
    instances: list[tuple[str, str, str]] = []
    for start in range(0, len(uids), 500):
        statement = (
            select(Series.series_uid, Instance.sop_instance_uid, Instance.sha256)
            .join(Series, Series.id == Instance.series_id)  # type: ignore[arg-type]
            .where(Series.project_id == cohort.project_id, Series.series_uid.in_(uids[start : start + 500]))  # type: ignore[attr-defined]
        )
        instances.extend((str(a), str(b), str(c)) for a, b, c in session.exec(statement).all())
    taken = session.exec(
        select(func.count())
        .select_from(Snapshot)
        .where(Snapshot.project_id == cohort.project_id, Snapshot.cohort == name)
    ).one()
    snapshot = Snapshot(
        project_id=cohort.project_id,
        name=f"{name}@{taken + 1}",
        cohort=name,
        query=cohort.query,
        content_hash=content_hash(instances),
        series_count=len(rows),
        instance_count=len(instances),
        created_by=actor,
    )
    session.add(snapshot)
    session.flush()
    if rows:
        session.execute(
            insert(SnapshotSeries),
            [
                {"snapshot_id": snapshot.id, "series_uid": r.series_instance_uid, "row": r.model_dump_json()}
                for r in rows
            ],
        )
    if instances:
        session.execute(
            insert(SnapshotInstance),
            [
                {"snapshot_id": snapshot.id, "series_uid": a, "sop_instance_uid": b, "sha256": c}
                for a, b, c in instances
            ],
        )
    detail = f"{len(rows)} series, {len(instances)} instances, sha256 {snapshot.content_hash}"
    audit.record_event(
        session,
        actor=actor,
        action="snapshot.create",
        object=f"snapshot:{snapshot.name}",
        project_id=cohort.project_id,
        detail=detail,
    )
    session.flush()
    return snapshot


def find_snapshot(session: Session, name: str, projects: Iterable[str] | None = None) -> tuple[str, Snapshot]:
    statement = select(Project.name, Snapshot).join(Project).where(Snapshot.name == name)
    if projects is not None:
        statement = statement.where(Project.name.in_(list(projects)))  # type: ignore[attr-defined]
    found = session.exec(statement).all()
    if len(found) != 1:
        what = "no snapshot" if not found else "several projects have a snapshot"
        raise CohortError(f"{what} {name!r}; `pacs-bridge cohort list` shows the snapshots of each cohort")
    return str(found[0][0]), found[0][1]


def snapshots_of(session: Session, project_id: int, cohort: str) -> list[Snapshot]:
    statement = (
        select(Snapshot).where(Snapshot.project_id == project_id, Snapshot.cohort == cohort).order_by(Snapshot.id)  # type: ignore[arg-type]
    )
    return list(session.exec(statement).all())


def snapshot_series(session: Session, snapshot: Snapshot) -> list[SeriesRow]:
    statement = (
        select(SnapshotSeries.row).where(SnapshotSeries.snapshot_id == snapshot.id).order_by(SnapshotSeries.series_uid)
    )
    rows = [SeriesRow.model_validate_json(row) for row in session.exec(statement).all()]
    return sorted(
        rows, key=lambda r: (r.subject, r.days_from_baseline or 0, r.series_number or 0, r.series_instance_uid)
    )


def snapshot_instances(session: Session, snapshot: Snapshot) -> list[SnapshotInstance]:
    statement = select(SnapshotInstance).where(SnapshotInstance.snapshot_id == snapshot.id)
    return list(session.exec(statement).all())


@dataclass(frozen=True)
class Gone:
    """What a snapshot names that the index no longer holds as it was."""

    series: list[str]  # Series Instance UIDs no longer indexed
    instances: list[str]  # SOP Instance UIDs no longer indexed, or whose stored file changed

    def __bool__(self) -> bool:
        return bool(self.series or self.instances)


def gone(session: Session, snapshot: Snapshot) -> Gone:
    """Compare the snapshot with the index (two statements: its series, its instances, each outer-joined)."""
    series = session.exec(
        select(SnapshotSeries.series_uid)
        .outerjoin(
            Series,
            (Series.series_uid == SnapshotSeries.series_uid) & (Series.project_id == snapshot.project_id),  # type: ignore[arg-type]
        )
        .where(SnapshotSeries.snapshot_id == snapshot.id, Series.id.is_(None))  # type: ignore[union-attr]
        .order_by(SnapshotSeries.series_uid)
    ).all()
    instances = session.exec(
        select(SnapshotInstance.sop_instance_uid)
        .outerjoin(
            Instance,
            (Instance.sop_instance_uid == SnapshotInstance.sop_instance_uid)  # type: ignore[arg-type]
            & (Instance.project_id == snapshot.project_id)
            & (Instance.sha256 == SnapshotInstance.sha256),
        )
        .where(SnapshotInstance.snapshot_id == snapshot.id, Instance.id.is_(None))  # type: ignore[union-attr]
        .order_by(SnapshotInstance.sop_instance_uid)
    ).all()
    return Gone(series=list(series), instances=list(instances))
