"""The web console's routes (`/`, served by `serve` beside the API): sign-in and out, the projects overview,
and the pages of `cohort_pages`, `subject_pages`, `review_pages` and `admin_pages`.

A console request that needs a session and has none goes to `/signin?next=...`; an HTTP error on a console
page is a page too (the API's stay JSON).
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, FastAPI, Form, HTTPException, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bridge.access.users import authenticate
from bridge.api.auth import SESSION_COOKIE, database, deny
from bridge.console import admin_pages, cohort_pages, overview, review_pages, subject_pages
from bridge.console.pages import STATIC, back_to, render
from bridge.console.session import SIGN_IN_COOKIE, Csrf, SignInRequired, Visitor
from storage import audit

router = APIRouter(include_in_schema=False)
_NOT_CONSOLE = ("/api/", "/dicomweb", "/viewer", "/healthz", "/metrics", "/docs", "/openapi.json", "/redoc")
_STATIC_FILES = {path.name for path in STATIC.iterdir() if path.is_file()}


def include(app: FastAPI) -> None:
    app.include_router(router)
    for module in (cohort_pages, subject_pages, review_pages, admin_pages):
        app.include_router(module.router)
    app.add_exception_handler(SignInRequired, _to_sign_in)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _error_page)  # type: ignore[arg-type]


def is_console(path: str) -> bool:
    return not path.startswith(_NOT_CONSOLE)


async def _to_sign_in(_request: Request, error: SignInRequired) -> Response:
    return RedirectResponse(f"/signin?next={error.back_to}", status_code=303)


async def _error_page(request: Request, error: StarletteHTTPException) -> Response:
    if not is_console(request.url.path) or error.status_code == 404 and request.url.path.startswith("/console/"):
        return await http_exception_handler(request, error)
    headers = getattr(error, "headers", None)
    page = render(
        request, "error.html", status=error.status_code, title="Error", code=error.status_code, detail=str(error.detail)
    )
    if headers:
        page.headers.update(headers)
    return page


def _safe_next(target: str | None) -> str:
    """Only a path of this console (never another site, nor `//host`)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


@router.get("/signin")
def sign_in_page(request: Request, next: str | None = None) -> Response:
    response: Response = render(request, "signin.html", title="Sign in", next=_safe_next(next), failed=False)
    if SIGN_IN_COOKIE not in request.cookies:  # the form's CSRF token is bound to it: set it and show again
        response = RedirectResponse(request.url.path + (f"?{request.url.query}" if request.url.query else ""), 303)
        _set_cookie(request, response, SIGN_IN_COOKIE, secrets.token_urlsafe(32))
    return response


@router.post("/signin", dependencies=[Csrf])
def sign_in(
    request: Request, token: Annotated[str, Form(max_length=128)], next: Annotated[str, Form()] = "/"
) -> Response:
    with database(request).reading() as session:
        found = authenticate(session, token.strip())
    if found is None:
        deny(request, 401, "anonymous", "console sign-in with an unknown or revoked token")
        return render(request, "signin.html", status=401, title="Sign in", next=_safe_next(next), failed=True)
    with database(request).unit_of_work() as work:
        audit.record_event(work.research, actor=f"console:{found.name}", action="console.signin", object="console")
    response = RedirectResponse(_safe_next(next), status_code=303)
    _set_cookie(request, response, SESSION_COOKIE, token.strip())
    response.delete_cookie(SIGN_IN_COOKIE, path="/")
    return response


@router.post("/signout", dependencies=[Csrf])
def sign_out(request: Request) -> Response:
    response = back_to("/signin", "signed-out")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _set_cookie(request: Request, response: Response, name: str, value: str) -> None:
    """A session cookie (gone when the browser closes): never readable by scripts, never sent cross-site,
    only over HTTPS when the console is reached over HTTPS."""
    public = request.app.state.settings.http.public_url or ""
    secure = request.url.scheme == "https" or public.startswith("https:")
    response.set_cookie(name, value, httponly=True, samesite="strict", secure=secure, path="/")


@router.get("/")
def projects_overview(request: Request, who: Visitor) -> Response:
    rows = overview.projects(request.app.state.settings, database(request), request.app.state.spool, who)
    return render(request, "overview.html", title="Projects", section="projects", overview=rows)


@router.get("/favicon.ico")
def favicon() -> Response:
    return Response(status_code=204)


@router.get("/console/static/{name}")
def static(name: str) -> Response:
    if name not in _STATIC_FILES:
        raise HTTPException(404, "no such file")
    return FileResponse(STATIC / name, headers={"Cache-Control": "public, max-age=86400"})
