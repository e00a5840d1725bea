"""Who is asking, and may they: bearer tokens checked against the users' table, one place for every route.
HTTP basic is taken too, for DICOMweb clients that only do basic: the user is the token's name, the
password the token. A reading request without either may carry the web console's session cookie (the
viewer opened from the console).

No token or an unknown one is 401; a role or project the token lacks is 403. Both are audited (the user's
name or "anonymous", the route's template, never its values).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from bridge.access.roles import Permission
from bridge.access.users import Principal, authenticate
from storage import audit
from storage.db import Database


def database(request: Request) -> Database:
    return request.app.state.database  # type: ignore[no-any-return]


def deny(request: Request, status: int, who: str, why: str) -> HTTPException:
    route = getattr(request.scope.get("route"), "path", "?")
    with database(request).unit_of_work() as work:
        audit.record_event(
            work.research, actor=f"api:{who}", action="api.denied", object=f"{request.method} {route}"[:128], detail=why
        )
    # basic is offered where DICOMweb clients that know only basic come (a browser would prompt elsewhere)
    challenge = 'Bearer, Basic realm="pacs-bridge"' if request.url.path.startswith("/dicomweb") else "Bearer"
    headers = {"WWW-Authenticate": challenge} if status == 401 else None
    return HTTPException(status, detail=why, headers=headers)


SESSION_COOKIE = "pacs_bridge_session"  # the web console's sign-in (bridge.console.session)
_READS = frozenset({"GET", "HEAD"})


def principal(request: Request) -> Principal:
    """The caller (a dependency); 401, audited, for a missing, unknown or revoked token."""
    return principal_in(request, None)


def principal_in(request: Request, session: Session | None) -> Principal:
    """The caller, its token checked in `session` when the route has one open already (one connection per
    request), else in a session of its own."""
    name, token = _credentials(request)
    if not token:
        raise deny(request, 401, "anonymous", "a bearer token (or basic: token name and token) is required")
    if session is None:
        with database(request).reading() as own:
            found = _holder(own, name, token)
    else:
        found = _holder(session, name, token)
    if found is None:
        raise deny(request, 401, "anonymous", "unknown or revoked token")
    return found


def known_caller(request: Request, session: Session, permission: Permission) -> Principal | None:
    """The caller, if its token is valid and holds `permission` on the route's project; else None, with nothing
    written: for a fast path that leaves every refusal to the audited check (`principal_in`, `require`)."""
    name, token = _credentials(request)
    found = _holder(session, name, token) if token else None
    return found if found is not None and found.may(permission, request.path_params.get("project")) else None


def _credentials(request: Request) -> tuple[str | None, str]:
    """(the name basic gave, or None; the token, or "")."""
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":
        return _basic(credentials.strip())
    if scheme.lower() == "bearer":
        return None, credentials.strip()
    # a reading request of a browser signed in to the console (the viewer opened from it): its session
    # cookie, never sent cross-site (SameSite=Strict); never for a write, which has no CSRF token here
    return None, request.cookies.get(SESSION_COOKIE, "") if request.method in _READS else ""


def _holder(session: Session, name: str | None, token: str) -> Principal | None:
    """The token's principal, if the token is active and (with basic) carries its own name."""
    found = authenticate(session, token)
    return None if found is None or (name is not None and name != found.name) else found


def _basic(credentials: str) -> tuple[str, str]:
    try:
        name, _, token = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return name, token


Caller = Annotated[Principal, Depends(principal)]


def require(request: Request, caller: Principal, permission: Permission) -> Principal:
    """`caller`, if it holds `permission` (on the route's `project`, when it has one); the API's and the
    console's one check."""
    project = request.path_params.get("project")
    if not caller.may(permission, project):
        what = f"project {project!r}" if project and caller.may(permission) else f"{permission.value} rights"
        raise deny(request, 403, caller.name, f"this token has no {what}")
    return caller


def allowed(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the caller, if it holds `permission` (on the route's `project`, when it has one)."""

    def check(request: Request, caller: Caller) -> Principal:
        return require(request, caller, permission)

    return check


Reader = Annotated[Principal, Depends(allowed(Permission.READ))]
Curator = Annotated[Principal, Depends(allowed(Permission.CURATE))]
Admin = Annotated[Principal, Depends(allowed(Permission.ADMINISTER))]
