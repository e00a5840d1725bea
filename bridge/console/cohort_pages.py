"""The cohort builder: the query model's filters as a form (GET: the URL holds the query, to share), the answer
as a sortable, paginated table at subject, timepoint or series level; save, snapshot and export.

The form's text fields take lists comma-separated (`CT, MR`); empty fields are no filter. The query runs
through the same `bridge.cohorts.query.run` as the API and the command line.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, HTTPException, Request, Response
from pydantic import ValidationError

from bridge.access.roles import Permission
from bridge.api.auth import database
from bridge.api.pages import run_filters
from bridge.cohorts import saved
from bridge.cohorts.filters import CohortFilters, FilterFields, Level, Page
from bridge.cohorts.query import ROW_MODELS
from bridge.console.exports import Exports
from bridge.console.pages import back_to, render
from bridge.console.session import Csrf, Curator, Reader
from bridge.export.formats import Format

router = APIRouter(include_in_schema=False)
PAGE_SIZE = 50
_LISTS = {name for name, f in FilterFields.model_fields.items() if "list" in str(f.annotation)}
# the form's fields, in the model's order, with what a person reads
LABELS = {
    "subject": "Subject codes",
    "label": "Timepoint labels",
    "timepoint_index": "Timepoint index (0 = baseline)",
    "days_min": "Days from baseline, from",
    "days_max": "Days from baseline, to",
    "date_from": "Study date (shifted), from",
    "date_to": "Study date (shifted), to",
    "modality": "Modality",
    "body_part": "Body part",
    "description": "Series description contains",
    "slice_thickness_min": "Slice thickness (mm), from",
    "slice_thickness_max": "Slice thickness (mm), to",
    "pixel_spacing_min": "Pixel spacing (mm), from",
    "pixel_spacing_max": "Pixel spacing (mm), to",
    "manufacturer": "Manufacturer contains",
    "model": "Model contains",
    "kernel": "Convolution kernel contains",
    "contrast": "Contrast (yes, no or agent)",
    "min_instances": "At least N instances",
    "segmented": "Approved segmentation with label",
    "segmented_stage": "... approved at stage",
    "min_timepoints": "At least N matching timepoints",
    "min_followups": "Baseline and at least N follow-ups",
}
_INPUT_TYPES = {"date_from": "date", "date_to": "date"}


def exports(request: Request) -> Exports:
    state = request.app.state
    if getattr(state, "exports", None) is None:
        state.exports = Exports(state.settings, state.database)
    return state.exports  # type: ignore[no-any-return]


def parse_filters(values: dict[str, str]) -> dict[str, Any]:
    """The form's non-empty fields as the query model takes them (lists split at commas)."""
    given: dict[str, Any] = {}
    for name in FilterFields.model_fields:
        text = values.get(name, "").strip()
        if text:
            given[name] = [part.strip() for part in text.split(",") if part.strip()] if name in _LISTS else text
    return given


def form_values(filters: FilterFields) -> dict[str, str]:
    """The filters back as the form's text."""
    values: dict[str, str] = {}
    for name, value in filters.model_dump(exclude_defaults=True).items():
        values[name] = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return values


def _page(values: dict[str, str]) -> Page:
    try:
        return Page(
            level=Level(values.get("level") or Level.SUBJECT),
            sort=values.get("sort") or None,
            limit=int(values.get("limit") or PAGE_SIZE),
            offset=int(values.get("offset") or 0),
        )
    except ValueError:
        raise HTTPException(400, "level is subject, timepoint or series; limit and offset are whole numbers") from None


@router.get("/projects/{project}/cohort")
def cohort_builder(project: str, request: Request, who: Reader) -> Response:
    values = dict(request.query_params)
    page, error, result, filters = _page(values), None, None, None
    try:
        filters = CohortFilters(project=project, **parse_filters(values))
    except ValidationError as exc:
        error = "; ".join(e["msg"] for e in exc.errors())
    if filters is not None:
        try:
            result = run_filters(database(request), filters, page)
        except HTTPException as exc:
            error = str(exc.detail)
    with database(request).reading() as session:
        cohorts = saved.listing(session, [project])
        snapshots = {c.name: saved.snapshots_of(session, c.project_id, c.name) for _, c in cohorts}
    query = {k: v for k, v in values.items() if k in FilterFields.model_fields and v.strip()}

    def link(**changes: Any) -> str:
        """This page with `changes` to its query (sorting, paging, level)."""
        wanted = {**query, "level": page.level.value, "sort": page.sort or "", "offset": page.offset}
        wanted |= {"limit": page.limit if page.limit != PAGE_SIZE else "", **changes}
        return f"/projects/{project}/cohort?" + urlencode({k: v for k, v in wanted.items() if v not in ("", None)})

    return render(
        request,
        "cohort.html",
        title=f"Cohort builder · {project}",
        section="projects",
        project=project,
        labels=LABELS,
        input_types=_INPUT_TYPES,
        values=values,
        page=page,
        levels=list(Level),
        columns=list(ROW_MODELS[page.level].model_fields),
        result=result,
        error=error,
        link=link,
        query_string=urlencode(query),
        cohorts=[c for _, c in cohorts],
        snapshots=snapshots,
        formats=list(Format),
        may_curate=who.may(Permission.CURATE, project),
    )


@router.post("/projects/{project}/cohorts", dependencies=[Csrf])
def save_cohort(
    project: str,
    request: Request,
    who: Curator,
    name: Annotated[str, Form(max_length=64)],
    query: Annotated[str, Form()],
) -> Response:
    """Save the builder's filters (sent as the builder's query string) under `name`."""
    from urllib.parse import parse_qsl

    values = dict(parse_qsl(query))
    try:
        filters = CohortFilters(project=project, **parse_filters(values))
        with database(request).session() as session:
            saved.save(session, name.strip(), filters, actor=f"console:{who.name}")
    except ValidationError as exc:
        raise HTTPException(400, "; ".join(e["msg"] for e in exc.errors())) from None
    except saved.CohortError as exc:
        raise HTTPException(400, str(exc)) from None
    return back_to(
        f"/projects/{project}/cohort?{urlencode({**values, 'level': values.get('level', 'subject')})}", "saved"
    )


@router.post("/projects/{project}/cohorts/{name}/snapshot", dependencies=[Csrf])
def snapshot(project: str, name: str, request: Request, who: Curator) -> Response:
    try:
        with database(request).session() as session:
            saved.take_snapshot(session, name, actor=f"console:{who.name}", projects=[project])
    except saved.CohortError as exc:
        raise HTTPException(404, str(exc)) from None
    return back_to(f"/projects/{project}/cohort?{_saved_query(request, project, name)}", "snapshot")


def _saved_query(request: Request, project: str, name: str) -> str:
    """The builder's query string of a saved cohort (to open it in the form)."""
    with database(request).reading() as session:
        _, cohort = saved.find(session, name, [project])
        return urlencode(form_values(saved.filters_of(cohort)))


@router.get("/projects/{project}/cohorts/{name}")
def open_saved(project: str, name: str, request: Request, who: Reader) -> Response:
    try:
        query = _saved_query(request, project, name)
    except saved.CohortError as exc:
        raise HTTPException(404, str(exc)) from None
    return back_to(f"/projects/{project}/cohort?{query}")


@router.post("/projects/{project}/exports", dependencies=[Csrf])
def start_export(
    project: str,
    request: Request,
    who: Curator,
    name: Annotated[str, Form(max_length=80)],
    form: Annotated[Format, Form(alias="format")] = Format.DICOM,
) -> Response:
    try:
        job = exports(request).start(project=project, name=name, form=form, actor=f"console:{who.name}")
    except saved.CohortError as exc:
        raise HTTPException(404, str(exc)) from None
    return back_to(f"/projects/{project}/exports/{job.id}")


def _job(request: Request, project: str, job_id: int) -> Any:
    job = exports(request).jobs.get(job_id)
    if job is None or job.project != project:
        raise HTTPException(404, "no such export (exports are listed until the service restarts)")
    return job


@router.get("/projects/{project}/exports/{job_id}")
def export_page(project: str, job_id: int, request: Request, who: Reader) -> Response:
    return render(
        request, "export.html", title="Export", section="projects", project=project, job=_job(request, project, job_id)
    )


@router.get("/projects/{project}/exports/{job_id}/progress")
def export_progress(project: str, job_id: int, request: Request, who: Reader) -> Response:
    """The progress fragment the export page polls (htmx), until the job ends."""
    return render(request, "export_progress.html", project=project, job=_job(request, project, job_id))
