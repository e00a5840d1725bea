"""The query model run as SQL: one statement per page, in the database, the same rows on SQLite and PostgreSQL.

`matching` is the set of series (with their timepoint and subject) that pass the filters; the subjects that
meet the counted conditions are grouped from it; a page of subjects, timepoints or series is then selected
from those, with the total in the same statement (`count(*) OVER ()`). Nothing is filtered in Python.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel
from sqlalchemy import CTE, ColumnElement, Select, and_, case, distinct, func, select
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlmodel import Session

from bridge.cohorts.annotated import annotation_conditions
from bridge.cohorts.filters import CohortFilters, Level, Page
from storage.models.research import Project, Series, Subject, Timepoint

SERIES, TIMEPOINT, SUBJECT = Series.__table__, Timepoint.__table__, Subject.__table__  # type: ignore[attr-defined]
PROJECT = Project.__table__  # type: ignore[attr-defined]
S, T, P = SERIES.c, TIMEPOINT.c, SUBJECT.c


class SubjectRow(BaseModel):
    subject: str
    timepoints: int  # matching
    series: int
    instances: int
    first_days: int | None  # days from baseline of its first and last matching timepoints
    last_days: int | None


class TimepointRow(BaseModel):
    subject: str
    timepoint_label: str | None
    timepoint_index: int | None
    days_from_baseline: int | None
    study_date: dt.date | None  # shifted
    study_instance_uid: str
    modalities: str
    series: int  # matching
    instances: int


class SeriesRow(BaseModel):
    subject: str
    timepoint_label: str | None
    timepoint_index: int | None
    days_from_baseline: int | None
    study_date: dt.date | None
    study_instance_uid: str
    series_instance_uid: str
    series_number: int | None
    modality: str | None
    body_part: str | None
    description: str | None
    slice_thickness: float | None
    pixel_spacing_row: float | None
    pixel_spacing_col: float | None
    manufacturer: str | None
    model: str | None
    convolution_kernel: str | None
    contrast_agent: str | None
    instances: int


Row = SubjectRow | TimepointRow | SeriesRow
ROW_MODELS: dict[Level, type[BaseModel]] = {
    Level.SUBJECT: SubjectRow,
    Level.TIMEPOINT: TimepointRow,
    Level.SERIES: SeriesRow,
}


class Result(BaseModel):
    level: Level
    total: int
    offset: int
    limit: int
    rows: Sequence[Row]


FIRST_PAGE = Page()


class QueryError(ValueError):
    """A query the model cannot answer (unknown sort key); the message says what is allowed."""


def _contains(column: KeyedColumnElement[Any], text: str) -> ColumnElement[bool]:
    return func.lower(column).contains(text.lower(), autoescape=True)


def _any_of(column: KeyedColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    """Code strings (CS: modality, body part) are upper case by the standard: compared as stored, so that the
    database's statistics and indexes apply."""
    return column.in_([value.upper() for value in values])


def _between(column: KeyedColumnElement[Any], low: Any, high: Any) -> Iterable[ColumnElement[bool]]:
    if low is not None:
        yield column >= low
    if high is not None:
        yield column <= high


def timepoint_conditions(f: CohortFilters) -> Iterable[ColumnElement[bool]]:
    if f.subject:
        yield P.subject_code.in_(f.subject)
    if f.label:
        yield T.label.in_(f.label)
    if f.timepoint_index:
        yield T.timepoint_index.in_(f.timepoint_index)
    yield from _between(T.days_from_baseline, f.days_min, f.days_max)
    yield from _between(T.study_date, f.date_from, f.date_to)


def series_conditions(f: CohortFilters) -> Iterable[ColumnElement[bool]]:
    if f.modality:
        yield _any_of(S.modality, f.modality)
    if f.body_part:
        yield _any_of(S.body_part, f.body_part)
    for column, text in (
        (S.description, f.description),
        (S.manufacturer, f.manufacturer),
        (S.model, f.model),
        (S.convolution_kernel, f.kernel),
    ):
        if text:
            yield _contains(column, text)
    yield from _between(S.slice_thickness, f.slice_thickness_min, f.slice_thickness_max)
    for spacing in (S.pixel_spacing_row, S.pixel_spacing_col):
        yield from _between(spacing, f.pixel_spacing_min, f.pixel_spacing_max)
    if f.contrast:
        given = and_(S.contrast_agent.is_not(None), S.contrast_agent != "")
        wanted = f.contrast.strip().lower()
        yield given if wanted == "yes" else ~given if wanted == "no" else _contains(S.contrast_agent, f.contrast)
    if f.min_instances is not None:
        yield S.instance_count >= f.min_instances


# every clause a series must pass; a new kind of filter adds its builder here (e.g. annotations: EXISTS ...)
SERIES_CONDITIONS: list[Callable[[CohortFilters], Iterable[ColumnElement[bool]]]] = [
    timepoint_conditions,
    series_conditions,
    annotation_conditions,
]


def matching(f: CohortFilters) -> CTE:
    """The series that pass the filters, with their timepoint and subject."""
    statement = (
        select(
            S.id.label("series_id"),
            S.timepoint_id,
            T.subject_id,
            T.timepoint_index,
            T.days_from_baseline,
            S.instance_count,
        )
        .join(TIMEPOINT, T.id == S.timepoint_id)
        .join(SUBJECT, P.id == T.subject_id)
        .where(S.project_id == select(PROJECT.c.id).where(PROJECT.c.name == f.project).scalar_subquery())
    )
    for build in SERIES_CONDITIONS:
        statement = statement.where(*build(f))
    return statement.cte("matching")


def qualifying(f: CohortFilters, found: CTE) -> CTE | None:
    """The subjects whose matching timepoints meet the counted conditions (None: no condition)."""
    conditions: list[ColumnElement[bool]] = []
    if f.min_timepoints is not None:
        conditions.append(func.count(distinct(found.c.timepoint_id)) >= f.min_timepoints)
    if f.min_followups is not None:
        baseline = func.sum(case((found.c.timepoint_index == 0, 1), else_=0))
        followups = func.count(distinct(case((found.c.timepoint_index > 0, found.c.timepoint_id))))
        conditions += [baseline > 0, followups >= f.min_followups]
    if not conditions:
        return None
    return select(found.c.subject_id).group_by(found.c.subject_id).having(and_(*conditions)).cte("qualifying")


def _in_cohort(f: CohortFilters) -> CTE:
    """The matching series of the subjects in the cohort."""
    found = matching(f)
    subjects = qualifying(f, found)
    statement = select(found)
    if subjects is not None:
        statement = statement.where(found.c.subject_id.in_(select(subjects.c.subject_id)))
    return statement.cte("cohort")


_TIMEPOINT_COLUMNS = (
    P.subject_code.label("subject"),
    T.label.label("timepoint_label"),
    T.timepoint_index,
    T.days_from_baseline,
    T.study_date,
    T.study_uid.label("study_instance_uid"),
)
_SERIES_COLUMNS = (
    S.series_uid.label("series_instance_uid"),
    S.series_number,
    S.modality,
    S.body_part,
    S.description,
    S.slice_thickness,
    S.pixel_spacing_row,
    S.pixel_spacing_col,
    S.manufacturer,
    S.model,
    S.convolution_kernel,
    S.contrast_agent,
    S.instance_count.label("instances"),
)


def _statement(level: Level, cohort: CTE) -> tuple[Select[*tuple[Any, ...]], dict[str, ColumnElement[Any]], list[str]]:
    """The select of one level, its sortable columns by name, and its default order."""
    if level is Level.SERIES:
        statement = (
            select(*_TIMEPOINT_COLUMNS, *_SERIES_COLUMNS)
            .select_from(cohort)
            .join(SERIES, S.id == cohort.c.series_id)
            .join(TIMEPOINT, T.id == cohort.c.timepoint_id)
            .join(SUBJECT, P.id == cohort.c.subject_id)
        )
        order = ["subject", "days_from_baseline", "series_number", "series_instance_uid"]
        return statement, {c.name: c for c in (*_TIMEPOINT_COLUMNS, *_SERIES_COLUMNS)}, order
    if level is Level.TIMEPOINT:
        per = (
            select(
                cohort.c.timepoint_id,
                func.count().label("series"),
                func.sum(cohort.c.instance_count).label("instances"),
            )
            .group_by(cohort.c.timepoint_id)
            .subquery("per_timepoint")
        )
        columns = (*_TIMEPOINT_COLUMNS, T.modalities, per.c.series, per.c.instances)
        statement = (
            select(*columns)
            .select_from(per)
            .join(TIMEPOINT, T.id == per.c.timepoint_id)
            .join(SUBJECT, P.id == T.subject_id)
        )
        return statement, {c.name: c for c in columns}, ["subject", "days_from_baseline", "study_instance_uid"]
    per_subject = (
        select(
            cohort.c.subject_id,
            func.count(distinct(cohort.c.timepoint_id)).label("timepoints"),
            func.count().label("series"),
            func.sum(cohort.c.instance_count).label("instances"),
            func.min(cohort.c.days_from_baseline).label("first_days"),
            func.max(cohort.c.days_from_baseline).label("last_days"),
        )
        .group_by(cohort.c.subject_id)
        .subquery("per_subject")
    )
    columns = (P.subject_code.label("subject"), *list(per_subject.c)[1:])
    statement = select(*columns).select_from(per_subject).join(SUBJECT, P.id == per_subject.c.subject_id)
    return statement, {c.name: c for c in columns}, ["subject"]


def _order(sort: str | None, sortable: dict[str, ColumnElement[Any]], default: list[str]) -> list[ColumnElement[Any]]:
    """`a,-b`: ascending a then descending b; the default order breaks ties, so pages never overlap."""
    keys = [key.strip() for key in (sort or "").split(",") if key.strip()]
    order: list[ColumnElement[Any]] = []
    for key in keys:
        name = key.lstrip("-+")
        if name not in sortable:
            raise QueryError(f"cannot sort by {name!r}; sortable: {', '.join(sortable)}")
        column = sortable[name]
        order.append(column.desc().nulls_last() if key.startswith("-") else column.asc().nulls_first())
    order += [sortable[name].asc().nulls_first() for name in default]
    return order


def run(session: Session, filters: CohortFilters, page: Page = FIRST_PAGE) -> Result:
    """One page of the cohort at `page.level`, with the total number of rows."""
    statement, sortable, default = _statement(page.level, _in_cohort(filters))
    statement = statement.add_columns(func.count().over().label("total"))
    statement = statement.order_by(*_order(page.sort, sortable, default)).limit(page.limit).offset(page.offset)
    rows = session.execute(statement).mappings().all()
    total = int(rows[0]["total"]) if rows else _count(session, filters, page) if page.offset else 0
    model = ROW_MODELS[page.level]
    return Result(
        level=page.level,
        total=total,
        offset=page.offset,
        limit=page.limit,
        rows=[model.model_validate(dict(row)) for row in rows],  # type: ignore[misc]
    )


def _count(session: Session, filters: CohortFilters, page: Page) -> int:
    """The total alone, for a page past the end (which has no row to carry it)."""
    statement, _, _ = _statement(page.level, _in_cohort(filters))
    return int(session.execute(select(func.count()).select_from(statement.subquery())).scalar_one())


def each_series(session: Session, filters: CohortFilters, batch: int = 1000) -> Iterable[SeriesRow]:
    """Every series of the cohort, page by page (exports and snapshots)."""
    offset = 0
    while True:
        result = run(session, filters, Page(level=Level.SERIES, limit=batch, offset=offset))
        yield from result.rows  # type: ignore[misc]
        offset += batch
        if offset >= result.total:
            return
