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


def record_events(session: Session, events: list[AuditEvent]) -> None:
    """Several events in one statement (ingest of a batch)."""
    if events:
        table = AuditEvent.__table__  # type: ignore[attr-defined]
        session.execute(
            table.insert(), [{c.name: getattr(e, c.name) for c in table.c if c.name != "id"} for e in events]
        )
