"""One page of a cohort for a request: the filters from the query string, the page within the limits."""

from __future__ import annotations

from fastapi import HTTPException
from pydantic import ValidationError
from sqlmodel import Session

from bridge.api.models import CohortParams
from bridge.cohorts.filters import CohortFilters, FilterFields, Level, Page
from bridge.cohorts.query import QueryError, Result, run
from storage.db import Database

FILTER_NAMES = tuple(FilterFields.model_fields)
PAGE_NAMES = tuple(Page.model_fields)


def page_of(level: Level, limit: int = 100, offset: int = 0, sort: str | None = None) -> Page:
    return Page(level=level, limit=limit, offset=offset, sort=sort)


def run_page(db: Database, project: str, params: CohortParams, *, level: Level | None = None) -> Result:
    """Run the filters of `params` in `project`; 400 naming the problem when they cannot be answered."""
    values = params.model_dump(include=set(FILTER_NAMES))
    try:
        filters = CohortFilters(project=project, **values)
    except ValidationError as exc:
        raise HTTPException(400, "; ".join(e["msg"] for e in exc.errors())) from None
    return run_filters(db, filters, params, level=level)


def run_filters(db: Database, filters: CohortFilters, params: Page, *, level: Level | None = None) -> Result:
    with db.reading() as session:
        return run_in(session, filters, params, level=level)


def run_in(session: Session, filters: CohortFilters, params: Page, *, level: Level | None = None) -> Result:
    """The page in a reading session the route already holds (one connection for the whole request)."""
    try:
        return run(session, filters, page_of(level or params.level, params.limit, params.offset, params.sort))
    except QueryError as exc:
        raise HTTPException(400, str(exc)) from None
