"""Audit events: the record of who touched what. Callers pass pseudonymous objects only."""

from __future__ import annotations

from sqlmodel import Session

from storage.models import AuditEvent


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
