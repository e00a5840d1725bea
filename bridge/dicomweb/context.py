"""What every DICOMweb request works out first: the projects it may see, and the base URL its answers
point back to (the per-project base or the one over all projects, as the request came in)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from bridge.access.roles import Permission
from bridge.api.auth import Reader, allowed, database, principal_in
from storage.db import Database

PREFIX = "/dicomweb"
PROJECT_PREFIX = "/dicomweb/projects/{project}"
Db = Annotated[Database, Depends(database)]
_may_read = allowed(Permission.READ)


def projects_of(request: Request, caller: Reader) -> Sequence[str] | None:
    """The request's project (its token was checked for it), or the token's projects (None: all)."""
    project = request.path_params.get("project")
    if project is not None:
        if project not in request.app.state.settings.projects:
            raise HTTPException(404, "no such project")
        return [project]
    return None if caller.projects is None else sorted(caller.projects)


Scope = Annotated[Sequence[str] | None, Depends(projects_of)]


def reading_scope(request: Request, session: Session) -> Sequence[str] | None:
    """`Scope` worked out in one call, as the dependencies would (401 and 403 audited, 404 for an unknown
    project), the token checked in the route's own `session`: for the routes that answer from a single worker
    thread rather than one hop per dependency."""
    return projects_of(request, _may_read(request, principal_in(request, session)))


def base_url(request: Request) -> str:
    """The base URL links in answers (Retrieve URL, BulkDataURI) start with: under `http.public_url` when
    it is set (behind a proxy; and dicomweb-client's STOW-RS sends a Host header without the port), else
    as the request's Host header gave it; then the base the request used (all projects, or its own)."""
    project = request.path_params.get("project")
    path = f"{PREFIX}/projects/{project}" if project is not None else PREFIX
    public = request.app.state.settings.http.public_url
    return (public or str(request.base_url)).rstrip("/") + path
