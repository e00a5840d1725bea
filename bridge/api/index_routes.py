"""Read the index: projects with their counts, subjects with their timepoints, series, instances (metadata
only: files are DICOMweb's)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlmodel import select

from bridge.api.auth import Reader, database
from bridge.api.models import CohortParams, InstanceOut, ProjectOut, SubjectOut
from bridge.api.pages import page_of, run_page
from bridge.cohorts.filters import CohortFilters, Level
from bridge.cohorts.query import Result, TimepointRow, run
from storage import queries
from storage.db import Database
from storage.models.research import Instance, Project, Series

router = APIRouter(prefix="/api/v1", tags=["index"])
Db = Annotated[Database, Depends(database)]


@router.get("/projects")
def projects(request: Request, caller: Reader, db: Db) -> list[ProjectOut]:
    """The projects this token may read (configured, or holding data), with what each holds."""
    with db.reading() as session:
        counts = queries.project_counts(session, list(request.app.state.settings.projects))
    visible = set(caller.visible([c.name for c in counts]))
    return [ProjectOut(**vars(c)) for c in counts if c.name in visible]


@router.get("/projects/{project}")
def project(project: str, caller: Reader, db: Db) -> ProjectOut:
    with db.reading() as session:
        found = [c for c in queries.project_counts(session, []) if c.name == project]
    if not found:
        raise HTTPException(404, "no such project, or it holds no data yet")
    return ProjectOut(**vars(found[0]))


@router.get("/projects/{project}/subjects")
def subjects(project: str, caller: Reader, db: Db, params: Annotated[CohortParams, Query()]) -> Result:
    """The project's subjects (filters narrow them), a page at a time."""
    return run_page(db, project, params, level=Level.SUBJECT)


@router.get("/projects/{project}/subjects/{subject}")
def subject(project: str, subject: str, caller: Reader, db: Db) -> SubjectOut:
    """One subject with all its timepoints, by date."""
    filters = CohortFilters(project=project, subject=[subject])
    with db.reading() as session:
        result = run(session, filters, page_of(Level.TIMEPOINT, limit=10000))
    if not result.rows:
        raise HTTPException(404, "no such subject in this project")
    return SubjectOut(subject=subject, timepoints=[row for row in result.rows if isinstance(row, TimepointRow)])


@router.get("/projects/{project}/timepoints")
def timepoints(project: str, caller: Reader, db: Db, params: Annotated[CohortParams, Query()]) -> Result:
    return run_page(db, project, params, level=Level.TIMEPOINT)


@router.get("/projects/{project}/series")
def series(project: str, caller: Reader, db: Db, params: Annotated[CohortParams, Query()]) -> Result:
    return run_page(db, project, params, level=Level.SERIES)


@router.get("/projects/{project}/series/{series_uid}/instances")
def instances(project: str, series_uid: str, caller: Reader, db: Db) -> list[InstanceOut]:
    """The instances of one series (its de-identified UID), by instance number."""
    statement = (
        select(Instance)
        .join(Series, Series.id == Instance.series_id)  # type: ignore[arg-type]
        .join(Project, Project.id == Series.project_id)  # type: ignore[arg-type]
        .where(Project.name == project, Series.series_uid == series_uid)
        .order_by(Instance.instance_number, Instance.sop_instance_uid)  # type: ignore[arg-type]
    )
    with db.reading() as session:
        found = session.exec(statement).all()
    if not found:
        raise HTTPException(404, "no such series in this project")
    return [InstanceOut.model_validate(row, from_attributes=True) for row in found]
