"""API users: a name, a role, the projects it may see, and a token shown once and stored only as its SHA-256.

Tokens are 32 random bytes: a plain SHA-256 is enough to store them (nothing to brute-force, unlike a
password), and it lets a request be authenticated with one indexed lookup.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import bindparam
from sqlmodel import Session, select

from bridge.access.roles import ALL_PROJECTS, GRANTS, Permission, Role
from storage import audit
from storage.models.cohorts import ApiUser
from storage.models.common import utcnow

TOKEN_PREFIX = "pb_"


class UserError(ValueError):
    """A user that cannot be created or found; the message says why."""


@dataclass(frozen=True)
class Principal:
    """Who a request is: the user's name, role and projects (None: every project)."""

    name: str
    role: Role
    projects: frozenset[str] | None

    def may(self, permission: Permission, project: str | None = None) -> bool:
        if permission not in GRANTS[self.role]:
            return False
        return project is None or self.projects is None or project in self.projects

    def visible(self, projects: list[str]) -> list[str]:
        return [p for p in projects if self.projects is None or p in self.projects]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_of(user: ApiUser) -> Principal:
    return _principal(user.name, user.role, user.projects)


def _principal(name: str, role: str, projects: str) -> Principal:
    chosen = None if projects == ALL_PROJECTS else frozenset(filter(None, projects.split(",")))
    return Principal(name=name, role=Role(role), projects=chosen)


def create(session: Session, name: str, role: Role, projects: list[str] | None, *, actor: str) -> tuple[ApiUser, str]:
    """A new user and its token (returned once, never stored). `projects` None: every project."""
    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise UserError(f"user name {name!r}: use letters, digits, '.', '@', '-' and '_' (at most 64)")
    if session.exec(select(ApiUser).where(ApiUser.name == name)).first() is not None:
        raise UserError(f"user {name!r} exists; revoke it first to issue a new token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    scope = ALL_PROJECTS if projects is None else ",".join(sorted(set(projects)))
    user = ApiUser(name=name, role=role.value, projects=scope, token_hash=token_hash(token))
    session.add(user)
    audit.record_event(session, actor=actor, action="user.create", object=f"user:{name}", detail=f"{role} {scope}")
    session.flush()
    return user, token


def listing(session: Session) -> list[ApiUser]:
    return list(session.exec(select(ApiUser).order_by(ApiUser.name)).all())


def revoke(session: Session, name: str, *, actor: str) -> ApiUser:
    """The user's token stops working at once; the user stays listed (and audited) as revoked. Its name is
    free again for a new token."""
    user = session.exec(select(ApiUser).where(ApiUser.name == name, ApiUser.revoked_at.is_(None))).first()  # type: ignore[union-attr]
    if user is None:
        raise UserError(f"no active user {name!r}; `pacs-bridge users list` shows them")
    user.revoked_at = utcnow()
    user.name = f"{name}~{int(user.revoked_at.timestamp())}"[:64]  # frees the name, keeps the record
    session.add(user)
    audit.record_event(session, actor=actor, action="user.revoke", object=f"user:{name}")
    session.flush()
    return user


def find_principal(session: Session, name: str) -> Principal | None:
    """The active (not revoked) user of that name, as a principal: how the command line names a reviewer."""
    active = ApiUser.revoked_at.is_(None)  # type: ignore[union-attr]
    user = session.exec(select(ApiUser).where(ApiUser.name == name, active)).first()
    return principal_of(user) if user is not None else None


# the three columns a principal needs, not the user's row as an object, built once and run on the session's
# connection (no ORM execution): every request comes this way
_ACTIVE_TOKEN = select(ApiUser.name, ApiUser.role, ApiUser.projects).where(
    ApiUser.token_hash == bindparam("token_hash"),
    ApiUser.revoked_at.is_(None),  # type: ignore[union-attr]
)


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of an active token, else None."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    found = session.connection().execute(_ACTIVE_TOKEN, {"token_hash": token_hash(token)}).first()
    if found is None:
        return None
    return _principal(*found)
