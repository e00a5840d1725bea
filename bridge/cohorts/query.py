"""The query model run as SQL: one statement per page, in the database, the same rows on SQLite and PostgreSQL;
nothing is filtered in Python.

`matching` is the set of series that pass the filters (a series carries its timepoint's subject, date and
place on the clock, so this needs no join); the subjects that meet the counted conditions are grouped from
it. A page's statement has two parts:

- the tally (a CTE): per subject, how many rows it has at the page's level (none unless it meets the counted
  conditions), read from the series' cohort indexes alone. Their sum is the total; and when the rows are
  ordered by subject first (the default), the running sum over the first `offset + limit` subjects says
  which subjects hold the page, and how many rows come before them;
- the page itself: the rows of those few subjects, sorted, so that a deep offset costs no more than the
  first page. Ordered otherwise, it is the whole cohort, sorted, then the window of `offset` and `limit`.

A page past the end has no row to carry the total: a second, smaller statement counts it.
The tally is kept (`bridge.cohorts.tallies`) with the index's generation: the same page again, in a session
that only reads and while no write has moved the generation, is the page's own statement alone; and a page's
statement, once built, is kept by its shape.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import CTE, ColumnElement, ScalarSelect, Select, and_, case, distinct, func, literal, select
from sqlalchemy.sql.elements import KeyedColumnElement
from sqlmodel import Session

from bridge.cohorts import tallies
from bridge.cohorts.annotated import annotation_conditions
from bridge.cohorts.filters import CohortFilters, Level, Page
from storage.db import READS_ONLY
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


def _project_id(f: CohortFilters) -> ScalarSelect[Any]:
    return select(PROJECT.c.id).where(PROJECT.c.name == f.project).scalar_subquery()


def timepoint_conditions(f: CohortFilters) -> Iterable[ColumnElement[bool]]:
    """On the series' copies of their timepoint's columns (the subject filter is `_passing`'s)."""
    if f.label:
        yield S.timepoint_label.in_(f.label)
    if f.timepoint_index:
        yield S.timepoint_index.in_(f.timepoint_index)
    yield from _between(S.days_from_baseline, f.days_min, f.days_max)
    yield from _between(S.study_date, f.date_from, f.date_to)


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


@dataclass(frozen=True)
class Window:
    """The subjects (codes, inclusive) whose rows hold a page, when rows are ordered by subject first: values,
    or the tally's columns in the page's own statement."""

    first: Any
    last: Any


def _passing(f: CohortFilters, window: Window | None = None) -> list[ColumnElement[bool]]:
    """What a series passes to match: it is the project's (of the subjects named by the filter, and in
    `window`, when given) and it passes every filter."""
    named = [P.subject_code.in_(f.subject)] if f.subject else []
    if window is not None:
        named.append(P.subject_code.between(window.first, window.last))
    conditions = [_of_subjects(f, *named) if named else S.project_id == _project_id(f)]
    for build in SERIES_CONDITIONS:
        conditions.extend(build(f))
    return conditions


def _of_subjects(f: CohortFilters, *named: ColumnElement[bool]) -> ColumnElement[bool]:
    """The series of the project's subjects that are `named`, found through their timepoints (timepoints are
    indexed by subject, series by timepoint). The project is then no term on the series: SQLite without
    statistics takes any equality for a narrow one, and would read every series of the project by it. (Series
    have no index by subject: SQLite would read them all in that order to group them by subject.)"""
    subjects = select(P.id).where(P.project_id == _project_id(f), *named)
    of_subjects: ColumnElement[bool] = S.timepoint_id.in_(select(T.id).where(T.subject_id.in_(subjects)))
    return of_subjects


def matching(f: CohortFilters, window: Window | None = None) -> CTE:
    """The series that pass the filters (of the subjects in `window` only, when given)."""
    columns = (S.timepoint_id, S.subject_id, S.timepoint_index, S.days_from_baseline, S.instance_count)
    return select(S.id.label("series_id"), *columns).where(*_passing(f, window)).cte("matching")


def counted_conditions(f: CohortFilters, series: Any) -> list[ColumnElement[bool]]:
    """The counted conditions, as the HAVING of `series` (columns of matching series) grouped by subject."""
    conditions: list[ColumnElement[bool]] = []
    if f.min_timepoints is not None:
        conditions.append(func.count(distinct(series.timepoint_id)) >= f.min_timepoints)
    if f.min_followups is not None:
        baseline = func.sum(case((series.timepoint_index == 0, 1), else_=0))
        followups = func.count(distinct(case((series.timepoint_index > 0, series.timepoint_id))))
        conditions += [baseline > 0, followups >= f.min_followups]
    return conditions


def qualifying(f: CohortFilters, found: CTE) -> CTE | None:
    """The subjects whose matching timepoints meet the counted conditions (None: no condition)."""
    conditions = counted_conditions(f, found.c)
    if not conditions:
        return None
    return select(found.c.subject_id).group_by(found.c.subject_id).having(and_(*conditions)).cte("qualifying")


def _in_cohort(f: CohortFilters, window: Window | None = None) -> CTE:
    """The matching series of the subjects in the cohort (in `window`, when given)."""
    found = matching(f, window)
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


def _sort_keys(sort: str | None, level: Level) -> list[str]:
    """The keys of `a,-b` (ascending a, then descending b), each a column of the level's rows."""
    keys = [key.strip() for key in (sort or "").split(",") if key.strip()]
    sortable = ROW_MODELS[level].model_fields
    for key in keys:
        if key.lstrip("-+") not in sortable:
            raise QueryError(f"cannot sort by {key.lstrip('-+')!r}; sortable: {', '.join(sortable)}")
    return keys


def _order(keys: list[str], sortable: dict[str, ColumnElement[Any]], default: list[str]) -> list[ColumnElement[Any]]:
    """The sort keys, then the default order to break ties, so that pages never overlap."""
    order = [
        sortable[key.lstrip("-+")].desc().nulls_last()
        if key.startswith("-")
        else sortable[key.lstrip("+")].asc().nulls_first()
        for key in keys
    ]
    return order + [sortable[name].asc().nulls_first() for name in default]


def _by_subject(keys: list[str]) -> bool:
    """Whether rows are ordered by subject (ascending) first: then a page is a window of subjects."""
    return not keys or keys[0].lstrip("+") == "subject"


def tally(f: CohortFilters, page: Page, by_subject: bool) -> Select[Any]:
    """Per subject of the cohort, its rows at the page's level; their total and, ordered by subject, the page's
    window of subjects (first, last) and the rows before it; and the index's generation they were counted at."""
    # on the series table itself, not on `matching`: SQLite would copy every matching series out first
    rows = {
        Level.SUBJECT: literal(1),
        Level.TIMEPOINT: func.count(distinct(S.timepoint_id)),
        Level.SERIES: func.count(),
    }[page.level]
    per = select(S.subject_id, rows.label("n")).where(*_passing(f)).group_by(S.subject_id)
    if conditions := counted_conditions(f, S):
        per = per.having(and_(*conditions))
    subjects = per.cte("per_subject")
    total = select(func.coalesce(func.sum(subjects.c.n), 0)).scalar_subquery().label("total")
    counted_at = tallies.generation().label("generation")
    if not by_subject:
        return select(total, counted_at)
    # the page lies in the first offset + limit subjects (each has a row at least)
    head = (
        select(P.subject_code, subjects.c.n)
        .join(SUBJECT, P.id == subjects.c.subject_id)
        .order_by(P.subject_code)
        .limit(page.offset + page.limit)
        .subquery("head")
    )
    upto = func.sum(head.c.n).over(order_by=head.c.subject_code)  # rows up to and including the subject's
    ranked = select(head.c.subject_code, head.c.n, upto.label("upto")).subquery("ranked")
    reaches = ranked.c.upto > page.offset  # the subject's last row is at the offset or after
    starts = ranked.c.upto - ranked.c.n  # the subject's first row
    return select(
        total,
        func.min(case((reaches, ranked.c.subject_code))).label("first"),
        func.max(case((starts < page.offset + page.limit, ranked.c.subject_code))).label("last"),
        func.min(case((reaches, starts))).label("before"),
        counted_at,
    )


def run(session: Session, filters: CohortFilters, page: Page = FIRST_PAGE) -> Result:
    """One page of the cohort at `page.level`, with the total number of rows: counted with the page, or, in a
    session that only reads (`Database.reading`), taken from the tally kept for these filters and page while
    the data has not changed since."""
    keys = _sort_keys(page.sort, page.level)
    by_subject = _by_subject(keys)
    shape = _Shape(filters.model_dump_json(), page.level, page.offset, page.limit, page.sort)
    if not session.info.get(READS_ONLY):  # its own writes may yet be rolled back: count, and keep nothing
        counted, rows = _count(session, filters, page, keys, shape)
        return _result(page, counted.total, rows)
    kept_tallies = tallies.of_engine(session.get_bind())  # type: ignore[arg-type]
    key = (shape.filters, page.level, by_subject, page.offset, page.limit)  # the sort beyond the subject aside
    kept = kept_tallies.get(key)
    now = tallies.generation_now(session)  # a stale tally (it only grows) costs no page statement
    if kept is not None and kept.generation == now:
        rows = _kept_rows(session, filters, page, keys, shape, kept)
        if (rows[0]["generation"] if rows else tallies.generation_now(session)) == kept.generation:
            return _result(page, kept.total, rows)
    writing = tallies.writers_in_flight(session)  # after `now`: see tallies' docstring
    counted, rows = _count(session, filters, page, keys, shape)
    if counted.generation == now and not writing:
        kept_tallies.put(key, counted)
    return _result(page, counted.total, rows)


@dataclass(frozen=True)
class _Shape:
    """What a page's statement is built from, besides a kept tally (the filters as JSON)."""

    filters: str
    level: Level
    offset: int
    limit: int
    sort: str | None


# statements already built, by shape and kept tally's window: the same page again (a console re-polling, a saved
# cohort run again) costs no building (~2 ms), and its compiled form is SQLAlchemy's cache's
_BUILT: tallies.Recent[tuple[Select[Any], CTE | None]] = tallies.Recent(128)


def _kept_rows(
    session: Session, filters: CohortFilters, page: Page, keys: list[str], shape: _Shape, kept: tallies.Tally
) -> Sequence[Any]:
    """The page's rows by a kept tally, with the generation (none past the end: nothing to read)."""
    if kept.total <= page.offset:
        return []
    return session.execute(_built(filters, page, keys, shape, kept)[0]).mappings().all()


def _count(
    session: Session, filters: CohortFilters, page: Page, keys: list[str], shape: _Shape
) -> tuple[tallies.Tally, Sequence[Any]]:
    """The page's rows, counted with their tally in the same statement (a page past the end: in a second)."""
    statement, counted = _built(filters, page, keys, shape, None)
    assert counted is not None  # built to count
    rows = session.execute(statement).mappings().all()
    figures = rows[0] if rows else session.execute(select(counted)).mappings().one()
    return tallies.Tally(**{name: figures[name] for name in counted.c.keys()}), rows


def _built(
    filters: CohortFilters, page: Page, keys: list[str], shape: _Shape, kept: tallies.Tally | None
) -> tuple[Select[Any], CTE | None]:
    """The page's statement, with the tally's figures: counted in the same statement (`kept` None: the
    `tally` CTE, returned too), or a kept tally's (then only the generation is read with the rows)."""
    memo = (shape, None if kept is None else (kept.first, kept.last, kept.before))
    found = _BUILT.get(memo)
    if found is not None:
        return found
    counted = None
    if kept is not None:
        figures: dict[str, ColumnElement[Any]] = {"generation": tallies.generation()}
        bounds: tuple[Any, Any, Any] | None = (kept.first, kept.last, kept.before)
    else:
        counted = tally(filters, page, _by_subject(keys)).cte("tally")
        figures = {name: select(column).scalar_subquery() for name, column in counted.c.items()}
        if "first" in figures:
            bounds = (figures["first"], figures["last"], func.coalesce(figures["before"], 0))
        else:
            bounds = None
    window, offset = None, page.offset
    if bounds is not None and bounds[2] is not None:  # ordered by subject: the page is a window of subjects
        window, offset = Window(bounds[0], bounds[1]), page.offset - bounds[2]
    statement, sortable, default = _statement(page.level, _in_cohort(filters, window))
    statement = statement.add_columns(*(column.label(name) for name, column in figures.items()))
    statement = statement.order_by(*_order(keys, sortable, default)).limit(page.limit).offset(offset)
    _BUILT.put(memo, (statement, counted))
    return statement, counted


def _result(page: Page, total: int, rows: Sequence[Any]) -> Result:
    model = ROW_MODELS[page.level]
    return Result(
        level=page.level,
        total=int(total),
        offset=page.offset,
        limit=page.limit,
        rows=[model.model_validate(dict(row)) for row in rows],  # type: ignore[misc]
    )


def each_series(session: Session, filters: CohortFilters, batch: int = 1000) -> Iterable[SeriesRow]:
    """Every series of the cohort, page by page (exports and snapshots)."""
    offset = 0
    while True:
        result = run(session, filters, Page(level=Level.SERIES, limit=batch, offset=offset))
        yield from result.rows  # type: ignore[misc]
        offset += batch
        if offset >= result.total:
            return
