"""Who is looking at a console page, and may they: the API token, kept in an HttpOnly, SameSite=Strict session
cookie after sign-in, checked by the API's own `authenticate` and `Principal.may` (one place for both).

Every form carries a CSRF token (and htmx sends it as a header): an HMAC of the session cookie (before
sign-in, of a random sign-in cookie) under a key of this HTTP process, so a page of another site can
neither read nor forge it. A missing or unknown cookie
sends the browser to the sign-in page; a role or project the token lacks is 403, audited as the API's are.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, HTTPException, Request

from bridge.access.roles import Permission
from bridge.access.users import Principal, authenticate
from bridge.api.auth import SESSION_COOKIE, database, require

SIGN_IN_COOKIE = "pacs_bridge_sign_in"  # before a session: what the sign-in form's CSRF token is bound to
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


class SignInRequired(Exception):
    """No session, or its token is unknown or revoked: the browser goes to the sign-in page."""

    def __init__(self, back_to: str) -> None:
        super().__init__("sign in")
        self.back_to = back_to


def csrf_key(request: Request) -> bytes:
    state = request.app.state
    if getattr(state, "csrf_key", None) is None:
        state.csrf_key = secrets.token_bytes(32)
    return state.csrf_key  # type: ignore[no-any-return]


def csrf_token(request: Request, session_token: str) -> str:
    return hmac.new(csrf_key(request), session_token.encode(), hashlib.sha256).hexdigest()


def session_token(request: Request) -> str:
    return request.cookies.get(SESSION_COOKIE, "")


def form_secret(request: Request) -> str:
    """What the page's CSRF token is bound to: the session, or before it the sign-in cookie."""
    return session_token(request) or request.cookies.get(SIGN_IN_COOKIE, "")


def visitor(request: Request) -> Principal:
    """The signed-in principal of the page's request."""
    token = session_token(request)
    found = None
    if token:
        with database(request).reading() as session:
            found = authenticate(session, token)
    if found is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(quote(target, safe=""))
    request.state.principal = found
    return found


Visitor = Annotated[Principal, Depends(visitor)]


def may(permission: Permission) -> Callable[..., Principal]:
    """A dependency: the visitor, if they hold `permission` (on the route's `project`, when it has one)."""

    def check(request: Request, who: Visitor) -> Principal:
        return require(request, who, permission)

    return check


async def check_csrf(request: Request) -> None:
    """Every state-changing request of the console: the CSRF token of its session, as a form field or header."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    secret = form_secret(request)
    if not secret or not sent or not hmac.compare_digest(sent, csrf_token(request, secret)):
        raise HTTPException(403, "the form has expired or did not come from this console: reload the page")


Reader = Annotated[Principal, Depends(may(Permission.READ))]
Curator = Annotated[Principal, Depends(may(Permission.CURATE))]
Reviewer = Annotated[Principal, Depends(may(Permission.REVIEW))]
Csrf = Depends(check_csrf)
