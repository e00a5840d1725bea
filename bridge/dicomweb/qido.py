"""QIDO-RS (PS3.18 10.6): studies, series and instances searched in the index, never in the files.

Query parameters other than the reserved ones are matching keys, by keyword or tag (`PatientID=X`,
`00100020=X`). `limit` is capped at `http.dicomweb_max_results`; a truncated answer says so in a
`Warning: 299` header, as does a `fuzzymatching=true` request (answered with literal matching).

Searches are the requests viewers send most: a point lookup (one patient, study or series) is answered on
the event loop, any other search in one worker thread (the token, the scope, the SQL and the encoding
together, not one thread per dependency); both encoded with orjson.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from bridge.access.roles import Permission
from bridge.api.auth import database, known_caller
from bridge.dicomweb.context import base_url, projects_of, reading_scope
from bridge.dicomweb.dicomjson import element, search_results
from bridge.search.attributes import Level
from bridge.search.matching import MatchError
from bridge.search.query import Search, search

router = APIRouter(tags=["dicomweb"])
MEDIA_TYPE = "application/dicom+json"
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching"}
_RETRIEVE_URL = 0x00081190


# an exact value of one of these finds a handful of studies or series through an index
_POINT_KEYS = frozenset(
    key.lower() for key in ("PatientID", "00100020", "StudyInstanceUID", "0020000D", "SeriesInstanceUID", "0020000E")
)


async def _answer(request: Request, level: Level, study: str | None = None, series: str | None = None) -> Response:
    """A point lookup of a known caller is answered on the event loop: a worker thread's round trip costs it
    more than the search itself. Anything else (a search that may scan, a caller to refuse, which is
    audited) runs in a worker thread, so that it never holds up the other requests."""
    if _point_lookup(request, level, study):
        with database(request).reading() as session:
            caller = known_caller(request, session, Permission.READ)
            if caller is not None:
                return _answered(request, session, projects_of(request, caller), level, study, series)
    return await run_in_threadpool(_search, request, level, study, series)


def _point_lookup(request: Request, level: Level, study: str | None) -> bool:
    """Whether the search reads a handful of rows: studies or series of one patient, study or series
    (instances may be thousands)."""
    if level is Level.IMAGE:
        return False
    if study is not None:
        return True
    return any(
        name.lower() in _POINT_KEYS and value and not any(sign in value for sign in "*?,\\")
        for name, value in request.query_params.multi_items()
    )


def _search(request: Request, level: Level, study: str | None, series: str | None) -> Response:
    with database(request).reading() as session:
        return _answered(request, session, reading_scope(request, session), level, study, series)


def _answered(
    request: Request,
    session: Session,
    projects: Sequence[str] | None,
    level: Level,
    study: str | None,
    series: str | None,
) -> Response:
    params = request.query_params
    keys = {name: value for name, value in params.items() if name.lower() not in _RESERVED}
    include = [field.strip() for value in params.getlist("includefield") for field in value.split(",") if field.strip()]
    maximum = request.app.state.settings.http.dicomweb_max_results
    try:
        limit = min(int(params.get("limit", maximum)), maximum)
        offset = int(params.get("offset", 0))
    except ValueError:
        raise HTTPException(400, "limit and offset: whole numbers") from None
    if limit < 0 or offset < 0:
        raise HTTPException(400, "limit and offset: zero or more")
    query = Search(
        level=level,
        keys=keys,
        projects=projects,
        study_uid=study,
        series_uid=series,
        include=[name for name in include if name.lower() != "all"],
        include_all=any(name.lower() == "all" for name in include),
        limit=limit,
        offset=offset,
    )
    try:
        found = search(session, query)
    except MatchError as error:
        raise HTTPException(400, str(error)) from None
    base = base_url(request)
    body = search_results(found, lambda row: _retrieve_url(base, level, row))
    warnings, host = [], request.url.netloc or "pacs-bridge"
    if params.get("fuzzymatching", "").lower() == "true":
        text = "The fuzzymatching parameter is not supported. Only literal matching has been performed."
        warnings.append(f'299 {host} "{text}"')
    if found.truncated:  # the wording PS3.18 gives
        warnings.append(f'299 {host} "There are additional results that can be requested"')
    headers = {"Warning": ", ".join(warnings)} if warnings else None
    return Response(orjson.dumps(body), media_type=MEDIA_TYPE, headers=headers)


def _retrieve_url(base: str, level: Level, row: dict[str, Any]) -> dict[str, Any]:
    url = f"{base}/studies/{row['StudyInstanceUID']}"
    if level is not Level.STUDY:
        url += f"/series/{row['SeriesInstanceUID']}"
    if level is Level.IMAGE:
        url += f"/instances/{row['SOPInstanceUID']}"
    return {f"{_RETRIEVE_URL:08X}": element(_RETRIEVE_URL, "UR", [url])}


@router.get("/studies")
async def studies(request: Request) -> Response:
    return await _answer(request, Level.STUDY)


@router.get("/series")
async def all_series(request: Request) -> Response:
    return await _answer(request, Level.SERIES)


@router.get("/studies/{study}/series")
async def series_of_study(study: str, request: Request) -> Response:
    return await _answer(request, Level.SERIES, study)


@router.get("/instances")
async def all_instances(request: Request) -> Response:
    return await _answer(request, Level.IMAGE)


@router.get("/studies/{study}/instances")
async def instances_of_study(study: str, request: Request) -> Response:
    return await _answer(request, Level.IMAGE, study)


@router.get("/studies/{study}/series/{series}/instances")
async def instances_of_series(study: str, series: str, request: Request) -> Response:
    return await _answer(request, Level.IMAGE, study, series)
