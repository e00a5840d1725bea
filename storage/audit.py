"""Audit events: the record of who touched what. Callers pass pseudonymous objects only."""

from __future__ import annotations

import datetime as dt
from typing import TypedDict

from sqlmodel import Session

from storage.models.research import AuditEvent


class EventRow(TypedDict):
    """The columns of a new audit event, for inserting many at once without ORM objects."""

    at: dt.datetime
    actor: str
    action: str
    project_id: int | None
    object: str | None
    detail: str | None


def record_event(
    session: Session,
    *,
    actor: str,
    action: str,
    object: str | None = None,
    project_id: int | None = None,
    detail: str | None = None,
) -> AuditEvent:
    event = AuditEvent(actor=actor, action=action, object=object, project_id=project_id, detail=detail)
    session.add(event)
    return event


def record_events(session: Session, events: list[EventRow]) -> None:
    """Several events in one statement (ingest of a batch)."""
    if events:
        session.execute(AuditEvent.__table__.insert(), events)  # type: ignore[attr-defined]
