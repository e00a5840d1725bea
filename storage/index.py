"""Repository functions of the research index. They take the session and never commit on their own.

Rows that parallel workers may create at the same moment (project, subject, timepoint, series, instance)
are inserted with insert-or-ignore on their unique key and then read back, so that two nodes agree.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from functools import cache
from typing import Any, TypedDict, TypeVar

from sqlalchemy import Table, bindparam, func, update
from sqlalchemy.sql.dml import Update
from sqlmodel import Session, select

from storage.models import (
    Instance,
    Project,
    QuarantineItem,
    ResearchModel,
    Series,
    Subject,
    Timepoint,
    utcnow,
)
from storage.upsert import insert_ignore, insert_ignore_one

Row = TypeVar("Row", bound=ResearchModel)


def _ensure(session: Session, model: type[Row], key: dict[str, Any], values: dict[str, Any]) -> tuple[Row, bool]:
    """Get the row with `key`, inserting it with `values` first if absent. Returns (row, created)."""
    table = model.__table__  # type: ignore[attr-defined]
    row = {**key, **values}
    if "created_at" in table.c:
        row["created_at"] = utcnow()
    created = insert_ignore_one(session, table, row)
    statement = select(model)
    for column, value in key.items():
        statement = statement.where(getattr(model, column) == value)
    return session.exec(statement).one(), created


def ensure_project(session: Session, name: str) -> Project:
    return _ensure(session, Project, {"name": name}, {})[0]


def ensure_subject(session: Session, *, project_id: int, subject_code: str) -> Subject:
    return _ensure(session, Subject, {"project_id": project_id, "subject_code": subject_code}, {})[0]


@dataclass(frozen=True)
class TimepointFields:
    study_uid: str
    study_date: dt.date | None
    label: str | None
    description: str | None


def ensure_timepoint(
    session: Session, *, project_id: int, subject_id: int, fields: TimepointFields
) -> tuple[Timepoint, bool]:
    timepoint, created = _ensure(
        session,
        Timepoint,
        {"project_id": project_id, "study_uid": fields.study_uid},
        {
            "subject_id": subject_id,
            "study_date": fields.study_date,
            "label": fields.label,
            "description": fields.description,
        },
    )
    if created:
        recompute_baseline(session, subject_id=subject_id)
        session.refresh(timepoint)
    return timepoint, created


def recompute_baseline(session: Session, *, subject_id: int) -> None:
    """Days from baseline of every timepoint of a subject; baseline is the earliest dated study."""
    timepoints = session.exec(select(Timepoint).where(Timepoint.subject_id == subject_id)).all()
    dates = [t.study_date for t in timepoints if t.study_date is not None]
    baseline = min(dates) if dates else None
    for timepoint in timepoints:
        days = (timepoint.study_date - baseline).days if baseline and timepoint.study_date else None
        if timepoint.days_from_baseline != days:
            timepoint.days_from_baseline = days
            session.add(timepoint)
    session.flush()


@dataclass(frozen=True)
class SeriesFields:
    series_uid: str
    modality: str | None = None
    body_part: str | None = None
    description: str | None = None
    series_number: int | None = None
    frame_of_reference_uid: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    slice_thickness: float | None = None
    pixel_spacing_row: float | None = None
    pixel_spacing_col: float | None = None
    kvp: float | None = None
    convolution_kernel: str | None = None
    contrast_agent: str | None = None


def ensure_series(session: Session, *, project_id: int, timepoint: Timepoint, fields: SeriesFields) -> Series:
    values = {k: v for k, v in fields.__dict__.items() if k != "series_uid"}
    series, created = _ensure(
        session,
        Series,
        {"project_id": project_id, "series_uid": fields.series_uid},
        {"timepoint_id": timepoint.id, **values},
    )
    if created:
        modalities = set(filter(None, timepoint.modalities.split(","))) | {fields.modality or ""}
        session.execute(
            update(Timepoint)
            .where(Timepoint.id == timepoint.id)  # type: ignore[arg-type]
            .values(series_count=Timepoint.series_count + 1, modalities=",".join(sorted(filter(None, modalities))))
        )
    return series


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


class InstanceRow(TypedDict):
    """The columns of a new instance row: a plain insert needs no ORM object (building one costs more than
    the insert)."""

    project_id: int
    series_id: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    path: str
    size: int
    sha256: str
    source: str
    received_at: dt.datetime


def add_instances(
    session: Session, *, instances: list[InstanceRow], timepoint_of: dict[int, int]
) -> set[tuple[int, str]]:
    """Insert the instances and count them in their series and timepoints (`timepoint_of`: series id ->
    timepoint id); returns (project id, SOP Instance UID) of those inserted (the others were already
    indexed: resends)."""
    if not instances:
        return set()
    table = Instance.__table__  # type: ignore[attr-defined]
    statement = insert_ignore(session, table).returning(table.c.project_id, table.c.sop_instance_uid, table.c.series_id)
    inserted = session.execute(statement, instances).all()
    per_series = Counter(series_id for _, _, series_id in inserted)
    per_timepoint: Counter[int] = Counter()
    for series_id, count in per_series.items():
        per_timepoint[timepoint_of[series_id]] += count
    count_series, count_timepoints = _count_updates()
    if per_series:
        session.execute(count_series, [{"row": key, "added": count} for key, count in per_series.items()])
        session.execute(count_timepoints, [{"row": key, "added": count} for key, count in per_timepoint.items()])
    return {(int(project_id), str(uid)) for project_id, uid, _ in inserted}


@cache
def _count_updates() -> tuple[Update, Update]:
    """`instance_count += :added WHERE id = :row` of series and of timepoints, built once (Core statements,
    run as executemany; the ORM would build and evaluate each one per call)."""

    def statement(table: Table) -> Update:
        return (
            update(table)
            .where(table.c.id == bindparam("row"))
            .values(instance_count=table.c.instance_count + bindparam("added"))
        )

    return statement(Series.__table__), statement(Timepoint.__table__)  # type: ignore[attr-defined]


def find_quarantined(session: Session, *, project_id: int | None, sha256: str) -> QuarantineItem | None:
    statement = select(QuarantineItem).where(QuarantineItem.sha256 == sha256, QuarantineItem.project_id == project_id)
    return session.exec(statement).first()


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

    def tally(model: type[ResearchModel]) -> dict[str, int]:
        column = model.project_id  # type: ignore[attr-defined]
        rows = session.exec(select(column, func.count()).group_by(column)).all()
        return {by_id[pid]: n for pid, n in rows if pid in by_id}

    subjects, timepoints, series = tally(Subject), tally(Timepoint), tally(Series)
    instances, quarantined = tally(Instance), tally(QuarantineItem)
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
