"""Writes to the research index (reads are `storage.queries`). They take the session and never commit on their
own.

Rows that parallel workers may create at the same moment (project, subject, timepoint, series, instance)
are inserted with insert-or-ignore on their unique key and then read back, so that two nodes agree.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from functools import cache
from typing import Any, NamedTuple, TypedDict, TypeVar

from sqlalchemy import Table, bindparam, update
from sqlalchemy.sql.dml import Update
from sqlmodel import Session, select

from storage.models.common import utcnow
from storage.models.research import Instance, Project, ResearchModel, Series, Subject, Timepoint
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


def ensure_timepoint(
    session: Session, *, project_id: int, subject_id: int, values: dict[str, Any]
) -> tuple[Timepoint, bool]:
    """The timepoint of `values["study_uid"]`, created with `values` (its columns) if new; (row, created)."""
    key = {"project_id": project_id, "study_uid": values["study_uid"]}
    others = {column: value for column, value in values.items() if column != "study_uid"}
    return _ensure(session, Timepoint, key, {"subject_id": subject_id, **others})


class TimelineEntry(NamedTuple):
    """What places a timepoint on its subject's clock."""

    id: int
    study_date: dt.date | None
    label: str | None
    label_source: str | None


def lock_subject(session: Session, *, subject_id: int) -> None:
    """Hold the subject's row until the transaction ends (PostgreSQL; SQLite's writer holds the whole
    database already): two transactions placing the same subject's timepoints then take turns, and the second
    sees the first's timepoints, instead of each working out the clock without the other's new study."""
    session.execute(select(Subject.id).where(Subject.id == subject_id).with_for_update())


def timeline_of(session: Session, *, subject_id: int) -> list[TimelineEntry]:
    table = Timepoint.__table__.c  # type: ignore[attr-defined]
    columns = (table.id, table.study_date, table.label, table.label_source)
    rows = session.execute(select(*columns).where(table.subject_id == subject_id)).all()
    return [TimelineEntry(*row) for row in rows]


PLACEMENT_COLUMNS = ("days_from_baseline", "timepoint_index", "label", "label_source")


def set_placements(session: Session, placements: dict[int, dict[str, Any]]) -> None:
    """Store each timepoint's place on its clock (timepoint id -> PLACEMENT_COLUMNS), where it changed, and
    in the copies its series carry."""
    rows = session.exec(select(Timepoint).where(Timepoint.id.in_(list(placements)))).all()  # type: ignore[union-attr]
    moved = []
    for timepoint in rows:
        assert timepoint.id is not None
        wanted = placements[timepoint.id]
        if any(getattr(timepoint, column) != wanted[column] for column in PLACEMENT_COLUMNS):
            for column in PLACEMENT_COLUMNS:
                setattr(timepoint, column, wanted[column])
            session.add(timepoint)
            moved.append(timepoint)
    session.flush()
    _copy_placements(session, moved)


def set_label(session: Session, timepoint: Timepoint, label: str | None, source: str | None) -> None:
    timepoint.label, timepoint.label_source = label, source
    session.add(timepoint)
    session.flush()
    _copy_placements(session, [timepoint])


def _series_copies(timepoint: Timepoint) -> dict[str, Any]:
    """The columns a series copies from its timepoint (see `Series`)."""
    return {
        "subject_id": timepoint.subject_id,
        "study_date": timepoint.study_date,
        "days_from_baseline": timepoint.days_from_baseline,
        "timepoint_index": timepoint.timepoint_index,
        "timepoint_label": timepoint.label,
    }


def _copy_placements(session: Session, timepoints: list[Timepoint]) -> None:
    """Bring the copies in the series of `timepoints` in step with them (one executemany)."""
    if not timepoints:
        return
    table = Series.__table__  # type: ignore[attr-defined]
    statement = (
        update(table)
        .where(table.c.timepoint_id == bindparam("timepoint"))
        .values(
            days_from_baseline=bindparam("days"),
            timepoint_index=bindparam("index"),
            timepoint_label=bindparam("label"),
        )
    )
    session.execute(
        statement,
        [
            {"timepoint": t.id, "days": t.days_from_baseline, "index": t.timepoint_index, "label": t.label}
            for t in timepoints
        ],
    )


def ensure_series(session: Session, *, project_id: int, timepoint: Timepoint, values: dict[str, Any]) -> Series:
    """The series of `values["series_uid"]`, created with `values` (its columns, and the copies of its
    timepoint's) if new, and then counted in its timepoint (series and modalities)."""
    key = {"project_id": project_id, "series_uid": values["series_uid"]}
    others = {column: value for column, value in values.items() if column != "series_uid"}
    series, created = _ensure(
        session, Series, key, {"timepoint_id": timepoint.id, **_series_copies(timepoint), **others}
    )
    if created:
        modalities = set(filter(None, timepoint.modalities.split(","))) | {values.get("modality") or ""}
        session.execute(
            update(Timepoint)
            .where(Timepoint.id == timepoint.id)  # type: ignore[arg-type]
            .values(series_count=Timepoint.series_count + 1, modalities=",".join(sorted(filter(None, modalities))))
        )
    return series


class InstanceRow(TypedDict):
    """The columns of a new instance row: a plain insert needs no ORM object (building one costs more than
    the insert)."""

    project_id: int
    series_id: int
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    number_of_frames: int | None
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
