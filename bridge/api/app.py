"""The FastAPI application: routes, the checks every request passes, health and metrics.

Every response carries security headers and no-store; bodies larger than `http.max_request_bytes` are
refused before they are read (413); validation errors name the parameter and the rule, never the value sent
(which could be an identifier typed into the wrong field).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy import text
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.api import admin_routes, annotation_routes, cohort_routes, index_routes, viewer
from bridge.console import routes as console_routes
from bridge.dicomweb import routes as dicomweb_routes
from bridge.settings import Settings
from storage.db import Database
from storage.spool import Spool

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Resource-Policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"
STOW_PATH = re.compile(r"/dicomweb(/projects/[^/]+)?/studies(/[^/]+)?")
MASK_UPLOAD_PATH = re.compile(annotation_routes.UPLOAD_PATH)


def create_app(settings: Settings, database: Database) -> FastAPI:
    app = FastAPI(
        title="pacs-bridge",
        version="1",
        summary="The de-identified index of the research side: projects, subjects, timepoints, series, cohorts.",
    )
    app.state.settings = settings
    app.state.database = database
    app.state.spool = Spool(settings.storage.spool_dir)
    for module in (index_routes, cohort_routes, annotation_routes, admin_routes):
        app.include_router(module.router)
    dicomweb_routes.include(app)
    app.include_router(viewer.router)
    console_routes.include(app)  # `/`: the web console's pages
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_middleware(SecurityHeaders)
    app.add_api_route("/healthz", _healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/metrics", _metrics, methods=["GET"], include_in_schema=False)
    if settings.http.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.http.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Accept", "Content-Type"],
            expose_headers=["Warning", "Content-Type", "Content-Length"],
            max_age=600,
        )
    limits = {STOW_PATH: settings.http.max_stow_bytes, MASK_UPLOAD_PATH: settings.http.max_stow_bytes}
    return BodyLimit(app, settings.http.max_request_bytes, limits)  # type: ignore[return-value]


async def _validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
    problems = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")} for e in error.errors()
    ]
    return JSONResponse({"detail": problems}, status_code=422)


class SecurityHeaders:
    """The headers every answer carries (unless it sets its own: the viewer's files their caching and
    policy), added as the answer starts: plain ASGI, no task or copy per request as `BaseHTTPMiddleware`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        docs = scope.get("path", "").startswith(("/docs", "/redoc"))

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
                if not docs:
                    headers.setdefault("Content-Security-Policy", API_CSP)
            await send(message)

        await self.app(scope, receive, with_headers)


def _healthz(request: Request) -> JSONResponse:
    """200 when the database answers and the spool folder is there and writable; 503 naming what is not."""
    problems = []
    try:
        with request.app.state.database.reading() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        problems.append("database unreachable")
    spool: Spool = request.app.state.spool
    if not spool.writable():
        problems.append("spool not writable")
    body: dict[str, Any] = {"status": "ok" if not problems else "unavailable", "problems": problems}
    return JSONResponse(body, status_code=200 if not problems else 503)


def _metrics(request: Request) -> PlainTextResponse:
    from bridge.api.exposition import exposition

    content, content_type = exposition(request.app.state.spool)
    return PlainTextResponse(content, media_type=content_type)


class BodyLimit:
    """Refuse request bodies over `limit` bytes (over `limits[pattern]` for POSTs to paths that match it):
    by Content-Length at once, else while they stream in."""

    def __init__(self, app: ASGIApp, limit: int, limits: dict[re.Pattern[str], int]) -> None:
        self.app = app
        self.default = limit
        self.limits = limits
        self.state = getattr(app, "state", None)

    def limit_of(self, scope: Scope) -> int:
        if scope.get("method") == "POST":
            for pattern, limit in self.limits.items():
                if pattern.fullmatch(scope.get("path", "")):
                    return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_of(scope)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await PlainTextResponse("request body too large", status_code=413)(scope, receive, send)


class _TooLarge(Exception):
    pass
