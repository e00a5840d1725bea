"""Cohorts over HTTP: the same query model as the command line, saved cohorts, snapshots, hand-set labels."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from sqlmodel import Session

from bridge.api.auth import Curator, Reader, database
from bridge.api.models import CohortOut, CohortParams, Gone, LabelIn, SaveCohort, SnapshotOut, SnapshotRows
from bridge.api.pages import run_in, run_page
from bridge.cohorts import saved
from bridge.cohorts.filters import CohortFilters
from bridge.cohorts.query import Result, TimepointRow
from bridge.export import selection
from bridge.export.folder import Entry, plan
from bridge.export.formats import Format
from bridge.timepoints import LabelError, TimepointError, label_by_hand
from storage.db import Database
from storage.models.cohorts import SavedCohort, Snapshot

router = APIRouter(prefix="/api/v1/projects/{project}", tags=["cohorts"])
Db = Annotated[Database, Depends(database)]


def _cohort_out(project: str, cohort: SavedCohort) -> CohortOut:
    return CohortOut(
        name=cohort.name,
        project=project,
        filters=json.loads(cohort.query),
        created_by=cohort.created_by,
        created_at=cohort.created_at,
        updated_at=cohort.updated_at,
    )


def _snapshot_out(project: str, snapshot: Snapshot) -> SnapshotOut:
    return SnapshotOut(
        name=snapshot.name,
        cohort=snapshot.cohort,
        project=project,
        content_hash=snapshot.content_hash,
        series=snapshot.series_count,
        instances=snapshot.instance_count,
        created_by=snapshot.created_by,
        created_at=snapshot.created_at,
    )


def _found(project: str, name: str, session: Session) -> SavedCohort:
    try:
        return saved.find(session, name, [project])[1]
    except saved.CohortError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/cohort")
def cohort(project: str, caller: Reader, db: Db, params: Annotated[CohortParams, Query()]) -> Result:
    """Run the filters: subjects, timepoints or series (`level`), a page at a time, with the total."""
    return run_page(db, project, params)


@router.get("/cohorts")
def cohorts(project: str, caller: Reader, db: Db) -> list[CohortOut]:
    with db.reading() as session:
        return [_cohort_out(p, c) for p, c in saved.listing(session, [project])]


@router.post("/cohorts", status_code=201)
def save_cohort(project: str, body: SaveCohort, caller: Curator, db: Db) -> CohortOut:
    """Save (or replace) a named cohort of this project."""
    filters = CohortFilters(project=project, **body.filters.model_dump(exclude_defaults=True))
    try:
        with db.session() as session:
            return _cohort_out(project, saved.save(session, body.name, filters, actor=f"api:{caller.name}"))
    except saved.CohortError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/cohorts/{name}")
def saved_cohort(project: str, name: str, caller: Reader, db: Db) -> CohortOut:
    with db.reading() as session:
        return _cohort_out(project, _found(project, name, session))


@router.get("/cohorts/{name}/rows")
def saved_cohort_rows(
    project: str, name: str, caller: Reader, db: Db, params: Annotated[CohortParams, Query()]
) -> Result:
    """Run a saved cohort on today's data (the query string's filters are ignored: the saved ones apply)."""
    with db.reading() as session:
        return run_in(session, saved.filters_of(_found(project, name, session)), params)


@router.get("/cohorts/{name}/snapshots")
def snapshots(project: str, name: str, caller: Reader, db: Db) -> list[SnapshotOut]:
    with db.reading() as session:
        cohort = _found(project, name, session)
        return [_snapshot_out(project, s) for s in saved.snapshots_of(session, cohort.project_id, name)]


@router.post("/cohorts/{name}/snapshots", status_code=201)
def take_snapshot(project: str, name: str, caller: Curator, db: Db) -> SnapshotOut:
    """Freeze the cohort's series and instances as they are now."""
    try:
        with db.session() as session:
            return _snapshot_out(
                project, saved.take_snapshot(session, name, actor=f"api:{caller.name}", projects=[project])
            )
    except saved.CohortError as exc:
        raise HTTPException(404, str(exc)) from None


@router.get("/snapshots/{name}")
def snapshot(project: str, name: str, caller: Reader, db: Db) -> SnapshotRows:
    """A snapshot's frozen series, and what of it the index no longer holds."""
    with db.reading() as session:
        try:
            _, found = saved.find_snapshot(session, name, [project])
        except saved.CohortError as exc:
            raise HTTPException(404, str(exc)) from None
        rows = saved.snapshot_series(session, found)
        gone = saved.gone(session, found)
    out = _snapshot_out(project, found)
    return SnapshotRows(**out.model_dump(), rows=rows, gone=Gone(series=gone.series, instances=gone.instances))


@router.put("/subjects/{subject}/timepoints/{which}/label")
def label(
    request: Request, project: str, subject: str, which: str, body: LabelIn, caller: Curator, db: Db
) -> TimepointRow:
    """Set a timepoint's label by hand (`which`: days from baseline or Study Instance UID); null clears it."""
    settings = request.app.state.settings
    visits = settings.projects[project].visits if project in settings.projects else []
    try:
        with db.session() as session:
            timepoint = label_by_hand(
                session,
                project=project,
                subject_code=subject,
                which=which,
                label=body.label,
                visits=visits,
                actor=f"api:{caller.name}",
            )
    except LabelError as exc:
        raise HTTPException(400, str(exc)) from None
    except TimepointError as exc:
        raise HTTPException(404, str(exc)) from None
    return TimepointRow(
        subject=subject,
        timepoint_label=timepoint.label,
        timepoint_index=timepoint.timepoint_index,
        days_from_baseline=timepoint.days_from_baseline,
        study_date=timepoint.study_date,
        study_instance_uid=timepoint.study_uid,
        modalities=timepoint.modalities,
        series=timepoint.series_count,
        instances=timepoint.instance_count,
    )


@router.get("/cohorts/{name}/manifest")
def cohort_manifest(
    request: Request, project: str, name: str, caller: Reader, db: Db, form: Format = Format.DICOM
) -> list[Entry]:
    """What `pacs-bridge export NAME` would write now: paths and the hashes of the stored files (the hashes of
    the exported files come with the export)."""
    store = request.app.state.settings.storage.store_dir
    with db.reading() as session:
        return plan(selection.of_cohort(session, saved.filters_of(_found(project, name, session)), store), form)


@router.get("/snapshots/{name}/manifest")
def snapshot_manifest(
    request: Request, project: str, name: str, caller: Reader, db: Db, form: Format = Format.DICOM
) -> list[Entry]:
    """What `pacs-bridge export COHORT@N` would write: the snapshot's instances still stored unchanged."""
    store = request.app.state.settings.storage.store_dir
    with db.reading() as session:
        try:
            _, found = saved.find_snapshot(session, name, [project])
        except saved.CohortError as exc:
            raise HTTPException(404, str(exc)) from None
        return plan(selection.of_snapshot(session, found, store), form)
