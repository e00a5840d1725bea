"""Reads of the research index (writes are `storage.index`). They take the session and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, select

from storage.models.research import Instance, Project, QuarantineItem, ResearchModel, Series, Subject, Timepoint


def find_instance(session: Session, *, project_id: int, sop_instance_uid: str) -> Instance | None:
    statement = select(Instance).where(Instance.project_id == project_id, Instance.sop_instance_uid == sop_instance_uid)
    return session.exec(statement).first()


def indexed_uids(session: Session, *, project_id: int, sop_instance_uids: list[str]) -> set[str]:
    """Which of these (pseudo) SOP Instance UIDs the project already holds."""
    held: set[str] = set()
    for start in range(0, len(sop_instance_uids), 500):
        batch = sop_instance_uids[start : start + 500]
        statement = select(Instance.sop_instance_uid).where(
            Instance.project_id == project_id,
            Instance.sop_instance_uid.in_(batch),  # type: ignore[attr-defined]
        )
        held.update(session.exec(statement).all())
    return held


def series_counts(session: Session, *, project_id: int, series_uids: list[str]) -> dict[str, int]:
    """Instances indexed per (pseudo) Series Instance UID, for those the project holds."""
    counts: dict[str, int] = {}
    for start in range(0, len(series_uids), 500):
        statement = select(Series.series_uid, Series.instance_count).where(
            Series.project_id == project_id,
            Series.series_uid.in_(series_uids[start : start + 500]),  # type: ignore[attr-defined]
        )
        counts.update({str(uid): int(count) for uid, count in session.exec(statement).all()})
    return counts


def project_id_of(session: Session, name: str) -> int | None:
    return session.exec(select(Project.id).where(Project.name == name)).first()


def find_quarantined(session: Session, *, project_id: int | None, sha256: str) -> QuarantineItem | None:
    statement = select(QuarantineItem).where(QuarantineItem.sha256 == sha256, QuarantineItem.project_id == project_id)
    return session.exec(statement).first()


def subject_ids(session: Session, *, project_id: int) -> list[int]:
    return [int(i) for i in session.exec(select(Subject.id).where(Subject.project_id == project_id)).all()]  # type: ignore[arg-type]


def find_timepoints(session: Session, *, project_id: int, subject_code: str) -> list[Timepoint]:
    """The timepoints of one subject, by date."""
    statement = (
        select(Timepoint)
        .join(Subject, Subject.id == Timepoint.subject_id)  # type: ignore[arg-type]
        .where(Subject.project_id == project_id, Subject.subject_code == subject_code)
        .order_by(Timepoint.days_from_baseline, Timepoint.id)  # type: ignore[arg-type]
    )
    return list(session.exec(statement).all())


@dataclass(frozen=True)
class ProjectCounts:
    name: str
    subjects: int
    timepoints: int
    series: int
    instances: int
    quarantined: int


def project_counts(session: Session, names: list[str]) -> list[ProjectCounts]:
    """Counts per project, for `status`; projects not yet in the database count zero."""
    by_id = {p.id: p.name for p in session.exec(select(Project)).all()}

    def tally(model: type[ResearchModel], counted: Any = None) -> dict[str, int]:
        column = model.project_id  # type: ignore[attr-defined]
        rows = session.exec(select(column, counted if counted is not None else func.count()).group_by(column)).all()
        return {by_id[pid]: int(n or 0) for pid, n in rows if pid in by_id}

    # series and instances from the timepoints' counters: the same numbers, without reading every instance row
    subjects, timepoints, quarantined = tally(Subject), tally(Timepoint), tally(QuarantineItem)
    series = tally(Timepoint, func.sum(Timepoint.series_count))
    instances = tally(Timepoint, func.sum(Timepoint.instance_count))
    return [
        ProjectCounts(
            name=name,
            subjects=subjects.get(name, 0),
            timepoints=timepoints.get(name, 0),
            series=series.get(name, 0),
            instances=instances.get(name, 0),
            quarantined=quarantined.get(name, 0),
        )
        for name in sorted(set(names) | set(by_id.values()))
    ]


def series_of_instances(
    session: Session, *, project_id: int, sop_instance_uids: list[str]
) -> dict[str, tuple[str, str]]:
    """Indexed instance UID -> (its series' UID, how to name that series: UID, description, number)."""
    found: dict[str, tuple[str, str]] = {}
    for start in range(0, len(sop_instance_uids), 500):
        chunk = sop_instance_uids[start : start + 500]
        statement = (
            select(Instance.sop_instance_uid, Series.series_uid, Series.description, Series.series_number)
            .join(Series, Series.id == Instance.series_id)  # type: ignore[arg-type]
            .where(Instance.project_id == project_id, Instance.sop_instance_uid.in_(chunk))  # type: ignore[attr-defined]
        )
        for sop, series, description, number in session.exec(statement):
            found[sop] = (series, f"series {series} ({description or 'no description'!r}, number {number})")
    return found


def subject_of_study(session: Session, *, project_id: int, study_uid: str) -> str | None:
    """The subject code of the indexed (de-identified) study, if the project has it."""
    statement = (
        select(Subject.subject_code)
        .join(Timepoint, Timepoint.subject_id == Subject.id)  # type: ignore[arg-type]
        .where(Timepoint.project_id == project_id, Timepoint.study_uid == study_uid)
    )
    return session.exec(statement).first()


def project_name_of(session: Session, project_id: int) -> str:
    project = session.get(Project, project_id)
    assert project is not None
    return project.name
