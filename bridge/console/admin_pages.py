"""What went wrong: quarantine reasons and counts per project (an admin also sees the items, and that view
is audited: a reason may name what was wrong with an identified file), and the SEG deliveries with their
errors and a retry button for a failed one (data managers and admins)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request, Response
from sqlmodel import col, select

from bridge.access.roles import Permission
from bridge.access.users import Principal
from bridge.annotations.records import DeliveryView, delivery_view
from bridge.api.admin_routes import quarantine
from bridge.api.annotation_routes import answer
from bridge.api.auth import database
from bridge.console.pages import back_to, render
from bridge.console.session import Csrf, Curator, Visitor
from bridge.delivery import outbox
from storage import audit
from storage.db import Database
from storage.models.annotations import Delivery
from storage.models.research import Project, QuarantineItem

router = APIRouter(include_in_schema=False)
ITEMS_SHOWN = 200


def _projects(request: Request, who: Principal) -> list[str]:
    with database(request).reading() as session:
        names = {p.name for p in session.exec(select(Project)).all()} | set(request.app.state.settings.projects)
    return [name for name in sorted(names) if who.may(Permission.READ, name)]


def _items(db: Database, who: Principal) -> list[tuple[str | None, QuarantineItem]]:
    """The newest quarantined items, for an admin; the look is audited."""
    statement = (
        select(Project.name, QuarantineItem)
        .outerjoin(Project, col(Project.id) == QuarantineItem.project_id)
        .order_by(col(QuarantineItem.id).desc())
        .limit(ITEMS_SHOWN)
    )
    with db.reading() as session:
        rows: list[tuple[str | None, QuarantineItem]] = [(n, i) for n, i in session.exec(statement).all()]
    with db.unit_of_work() as work:
        audit.record_event(
            work.research,
            actor=f"console:{who.name}",
            action="quarantine.view",
            object="quarantine",
            detail=f"{len(rows)} items listed",
        )
    return rows


def _deliveries(db: Database, who: Principal) -> list[tuple[str, DeliveryView]]:
    with db.reading() as session:
        names = {p.id: p.name for p in session.exec(select(Project)).all()}
    return [
        (names[row.project_id], delivery_view(row))
        for row in reversed(outbox.listing(db))
        if who.may(Permission.READ, names[row.project_id])
    ]


@router.get("/quarantine")
def quarantine_page(request: Request, who: Visitor) -> Response:
    db = database(request)
    counts = {project: quarantine(project, who, db) for project in _projects(request, who)}
    is_admin = who.may(Permission.ADMINISTER)
    return render(
        request,
        "quarantine.html",
        title="Quarantine and deliveries",
        section="quarantine",
        counts=counts,
        items=_items(db, who) if is_admin else [],
        is_admin=is_admin,
        deliveries=_deliveries(db, who),
        may_retry=who.may(Permission.CURATE),
    )


@router.post("/deliveries/{delivery_id}/retry", dependencies=[Csrf])
def retry(delivery_id: int, request: Request, who: Curator) -> Response:
    with database(request).reading() as session:
        row = session.get(Delivery, delivery_id)
        project = session.get(Project, row.project_id) if row is not None else None
    if project is None or not who.may(Permission.CURATE, project.name):
        raise HTTPException(404, f"no delivery {delivery_id} in a project of this token")
    answer(lambda: outbox.retry(database(request), delivery_id, actor=f"console:{who.name}"))
    return back_to("/quarantine", "retried")
