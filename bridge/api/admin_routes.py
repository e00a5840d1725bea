"""What went wrong and who did what: quarantine counts by reason class (the reasons and bytes stay local),
audit events (admin only)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from sqlalchemy import func
from sqlmodel import select

from bridge.api.auth import Admin, Reader, database
from bridge.api.models import AuditOut, QuarantineOut
from bridge.process.metrics import reason_class
from storage.db import Database
from storage.models.research import AuditEvent, Project, QuarantineItem

router = APIRouter(prefix="/api/v1", tags=["admin"])
Db = Annotated[Database, Depends(database)]


@router.get("/projects/{project}/quarantine")
def quarantine(project: str, caller: Reader, db: Db) -> list[QuarantineOut]:
    """How many instances of the project were refused, per reason class."""
    statement = (
        select(QuarantineItem.reason, func.count())
        .join(Project, Project.id == QuarantineItem.project_id)  # type: ignore[arg-type]
        .where(Project.name == project)
        .group_by(QuarantineItem.reason)
    )
    counts: Counter[str] = Counter()
    with db.reading() as session:
        for reason, count in session.exec(statement).all():
            counts[reason_class(reason)] += count
    return [QuarantineOut(reason=name, count=count) for name, count in sorted(counts.items())]


@router.get("/audit")
def audit_events(
    caller: Admin,
    db: Db,
    action: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before: Annotated[int | None, Query(ge=1, description="Events older than this id (the next page).")] = None,
) -> list[AuditOut]:
    """The newest audit events first; page back with `before` = the smallest id seen."""
    statement = (
        select(AuditEvent, Project.name)
        .outerjoin(Project, Project.id == AuditEvent.project_id)  # type: ignore[arg-type]
        .order_by(AuditEvent.id.desc())  # type: ignore[union-attr]
        .limit(limit)
    )
    if action:
        statement = statement.where(AuditEvent.action == action)
    if before:
        statement = statement.where(AuditEvent.id < before)  # type: ignore[operator]
    with db.reading() as session:
        rows = session.exec(statement).all()
    return [
        AuditOut(id=e.id or 0, at=e.at, actor=e.actor, action=e.action, project=p, object=e.object, detail=e.detail)
        for e, p in rows
    ]
