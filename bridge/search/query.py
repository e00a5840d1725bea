"""One search, one SQL statement: the rows of a level that match the keys, within the projects a caller may
read, a page at a time. Shared by QIDO-RS and C-FIND; neither opens a file to answer.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from operator import itemgetter
from typing import Any

from pydicom.datadict import tag_for_keyword
from sqlalchemy import ColumnElement, FromClause, func, select
from sqlmodel import Session

from bridge.search.attributes import (
    ATTRIBUTES,
    IMG,
    INSTANCE,
    OWN,
    PAT,
    PROJECT,
    SER,
    SERIES,
    STU,
    SUBJECT,
    TIMEPOINT,
    Attribute,
    Level,
    find,
)
from bridge.search.matching import MatchError, condition

_ABOVE = {Level.PATIENT: (), Level.STUDY: (), Level.SERIES: (Level.STUDY,), Level.IMAGE: (Level.STUDY, Level.SERIES)}
_UID_OF = {Level.STUDY: "StudyInstanceUID", Level.SERIES: "SeriesInstanceUID"}
# a total order (stable pages); instances by their number within a series, whatever order the workers indexed
# them in (coalesce: SQLite and PostgreSQL sort NULL at opposite ends)
_ORDER = {
    Level.PATIENT: (PAT.id,),
    Level.STUDY: (STU.id,),
    Level.SERIES: (SER.id,),
    Level.IMAGE: (IMG.series_id, func.coalesce(IMG.instance_number, 0), IMG.id),
}


@dataclass(frozen=True)
class Search:
    """What to find. `keys`: keyword (or tag in hex) -> matching key; `projects` None: every project;
    `study_uid`/`series_uid`: the study or series the search is within (the path of a QIDO-RS request);
    `include`: further attributes to return, `include_all` every one the level has."""

    level: Level
    keys: Mapping[str, str] = field(default_factory=dict)
    projects: Sequence[str] | None = None
    study_uid: str | None = None
    series_uid: str | None = None
    include: Sequence[str] = ()
    include_all: bool = False
    limit: int = 100
    offset: int = 0


@dataclass(frozen=True)
class Found:
    attributes: tuple[Attribute, ...]  # the columns of every row, in this order
    rows: list[tuple[Any, ...]]
    truncated: bool  # more rows match than were returned


def search(session: Session, query: Search) -> Found:
    """The matching rows; MatchError for a key the level cannot match (naming it, never its value)."""
    conditions = _conditions(query)
    returned = _returned(query)
    columns = [a.column for a in returned if a.column is not None]
    statement = select(*columns).select_from(_joined(query.level))
    if query.projects is not None:
        statement = statement.where(PROJECT.c.name.in_(list(query.projects)))
    statement = statement.where(*conditions).order_by(*_ORDER[query.level]).offset(query.offset).limit(query.limit + 1)
    fetched = session.connection().execute(statement).all()  # rows, not objects: no ORM execution
    # each row as the returned attributes, None for those always empty: the selected columns in their
    # order, then a None that every empty attribute picks (itemgetter: no Python loop per cell)
    positions, selected = [], 0
    for attribute in returned:
        positions.append(selected if attribute.expression is not None else len(columns))
        selected += attribute.expression is not None
    pick = itemgetter(*positions)
    if len(positions) == 1:
        rows = [(pick((*row, None)),) for row in fetched[: query.limit]]
    else:
        rows = [pick((*row, None)) for row in fetched[: query.limit]]
    return Found(attributes=returned, rows=rows, truncated=len(fetched) > query.limit)


def _conditions(query: Search) -> list[ColumnElement[bool]]:
    conditions = []
    keys = dict(query.keys)
    if query.study_uid is not None:
        keys["StudyInstanceUID"] = query.study_uid
    if query.series_uid is not None:
        keys["SeriesInstanceUID"] = query.series_uid
    for key, value in keys.items():
        attribute = find(query.level, key)
        if attribute is None:
            named = key if tag_for_keyword(key) is not None or re.fullmatch(r"[0-9A-Fa-f]{8}", key) else "a key"
            raise MatchError(f"{named}: not an attribute this search can match at {query.level.value} level")
        found = condition(attribute, value)
        if found is not None:
            conditions.append(found)
    return conditions


def _returned(query: Search) -> tuple[Attribute, ...]:
    """The level's required attributes, the UIDs of the levels above, those of the levels above when the
    search is not within one of them (all series, all instances), the matched keys and those asked for."""
    level = query.level
    if query.include_all:
        return ATTRIBUTES[level]
    wanted: set[str] = {a.keyword for a in OWN[level] if a.default}
    for above in _ABOVE[level]:
        wanted.add(_UID_OF[above])
        if query.study_uid is None or (above is Level.SERIES and query.series_uid is None):
            wanted.update(a.keyword for a in OWN[above] if a.default)
    for key in (*query.keys, *query.include):
        attribute = find(level, key)
        if attribute is not None:  # an attribute the level lacks is left out of the answer, as PS3.18 allows
            wanted.add(attribute.keyword)
    return tuple(a for a in ATTRIBUTES[level] if a.keyword in wanted)


@cache  # the same joins for every search of a level
def _joined(level: Level) -> FromClause:
    joined: FromClause
    if level is Level.PATIENT:
        joined = SUBJECT.join(PROJECT, PROJECT.c.id == PAT.project_id)
        return joined
    joined = TIMEPOINT.join(SUBJECT, PAT.id == STU.subject_id).join(PROJECT, PROJECT.c.id == STU.project_id)
    if level in (Level.SERIES, Level.IMAGE):
        joined = SERIES.join(joined, STU.id == SER.timepoint_id)
    if level is Level.IMAGE:
        joined = INSTANCE.join(joined, SER.id == IMG.series_id)
    return joined


def dicom_values(attribute: Attribute, value: Any) -> list[Any]:
    """A column's value as the values of its DICOM attribute: DA as YYYYMMDD, Modalities in Study as its
    codes, numbers as numbers; [] for an empty one."""
    return values_of(attribute)(value)


def values_of(attribute: Attribute) -> Callable[[Any], list[Any]]:
    """`dicom_values` of one attribute as a function of the value, chosen once for the cells of an answer."""
    if attribute.keyword == "ModalitiesInStudy":
        return _codes
    if attribute.vr in ("IS", "US", "UL", "SS", "SL"):
        return _integer
    if attribute.vr in ("DS", "FL", "FD"):
        return _decimal
    return _text


def _text(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, dt.date):
        return [f"{value.year:04d}{value.month:02d}{value.day:02d}"]
    return [value]


def _codes(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return [code for code in str(value).split(",") if code]


def _integer(value: Any) -> list[Any]:
    return [] if value is None or value == "" else [int(value)]


def _decimal(value: Any) -> list[Any]:
    return [] if value is None or value == "" else [float(value)]
