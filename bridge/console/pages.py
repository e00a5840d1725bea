"""Rendering a console page: Jinja2 templates (autoescaped), the visitor and their CSRF token in every page,
and a Content-Security-Policy that admits only this origin's own script and styles (no inline script)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from bridge.console.session import csrf_token, form_secret

_HERE = Path(__file__).parent
STATIC = _HERE / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# what a redirect after a form may say (a code in the URL, never free text)
MESSAGES = {
    "saved": "Cohort saved.",
    "snapshot": "Snapshot taken.",
    "approved": "Approved.",
    "rejected": "Rejected, with your comment for the annotator.",
    "retried": "Delivery queued again.",
    "signed-out": "Signed out.",
}

_environment = Environment(
    loader=FileSystemLoader(_HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)



def _when(value: dt.datetime | None) -> str:
    """A time as a person reads it, to the minute, in UTC (SQLite hands times back without their zone: UTC)."""
    if value is None:
        return ""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


_environment.filters["when"] = _when


def render(request: Request, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """The page `template` with `context`, the visitor (`who`), their CSRF token and the redirect's message."""
    message = MESSAGES.get(request.query_params.get("done", ""))
    html = _environment.get_template(template).render(
        who=getattr(request.state, "principal", None),
        csrf=csrf_token(request, form_secret(request)),
        messages=[message] if message else [],
        section=context.pop("section", ""),
        **context,
    )
    return HTMLResponse(html, status_code=status, headers={"Content-Security-Policy": CSP})


def back_to(path: str, done: str | None = None) -> RedirectResponse:
    """See Other: the page to show after a form (`done`: a key of MESSAGES)."""
    separator = "&" if "?" in path else "?"
    return RedirectResponse(f"{path}{separator}done={done}" if done else path, status_code=303)
