"""The persistent outbox of SEG deliveries: queued on final approval (`bridge.annotations.review`), claimed
by workers, marked delivered only on a success status.

A claim is a short transaction: the due row is locked (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so nodes never
take the same one; SQLite's write lock serialises the same statement), marked `sending` with a lease, and
committed before anything is sent. A worker that dies mid-send leaves the lease to run out; the row is then
due again and is sent again, with the same SEG UIDs, so the destination stores it once.
"""

from __future__ import annotations

import datetime as dt

from sqlmodel import col, select

from bridge.errors import AnnotationError, NotFound
from storage.audit import record_event
from storage.db import Database
from storage.models.annotations import Delivery
from storage.models.common import utcnow

PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
STATES = (PENDING, SENDING, DELIVERED, FAILED)


def claim(database: Database, *, owner: str, lease_seconds: float) -> Delivery | None:
    """The next due delivery, now this worker's for `lease_seconds` (None when nothing is due)."""
    now = utcnow()
    with database.unit_of_work() as work:
        due = (
            select(Delivery)
            .where(
                col(Delivery.state).in_((PENDING, SENDING)),  # a sending one: past its lease
                col(Delivery.next_attempt_at) <= now,
            )
            .order_by(col(Delivery.next_attempt_at), col(Delivery.id))
            .limit(1)
            .with_for_update(skip_locked=True)
        )
        row = work.research.exec(due).first()
        if row is None:
            return None
        row.state, row.claimed_by = SENDING, owner[:128]
        row.attempts += 1
        row.next_attempt_at = now + dt.timedelta(seconds=lease_seconds)
        work.research.flush()
        work.research.expunge(row)
        return row


def delivered(database: Database, delivery_id: int, *, seg_series_uid: str, actor: str) -> None:
    with database.unit_of_work() as work:
        row = work.research.get(Delivery, delivery_id)
        assert row is not None
        row.state, row.delivered_at, row.last_error, row.seg_series_uid = DELIVERED, utcnow(), None, seg_series_uid
        record_event(
            work.research,
            actor=actor,
            action="delivery.delivered",
            project_id=row.project_id,
            object=f"delivery {delivery_id}",
            detail=f"annotation {row.annotation_id} v{row.version} to {row.destination} ({row.mode})",
        )


def failed_attempt(database: Database, delivery_id: int, *, error: str, retry_in: float | None, actor: str) -> None:
    """Back to pending, due in `retry_in` seconds; or failed for good when `retry_in` is None."""
    with database.unit_of_work() as work:
        row = work.research.get(Delivery, delivery_id)
        assert row is not None
        row.last_error = error[:1024]
        row.claimed_by = None
        if retry_in is None:
            row.state = FAILED
        else:
            row.state, row.next_attempt_at = PENDING, utcnow() + dt.timedelta(seconds=retry_in)
        record_event(
            work.research,
            actor=actor,
            action="delivery.failed" if retry_in is None else "delivery.retrying",
            project_id=row.project_id,
            object=f"delivery {delivery_id}",
            detail=error[:1024],
        )


def listing(database: Database, *, state: str | None = None, project_id: int | None = None) -> list[Delivery]:
    with database.reading() as session:
        statement = select(Delivery).order_by(col(Delivery.id))
        if state is not None:
            statement = statement.where(Delivery.state == state)
        if project_id is not None:
            statement = statement.where(Delivery.project_id == project_id)
        return list(session.exec(statement))


def retry(database: Database, delivery_id: int, *, actor: str) -> Delivery:
    """A failed delivery queued again, due now, with its attempts counted afresh."""
    with database.unit_of_work() as work:
        row = work.research.get(Delivery, delivery_id)
        if row is None:
            raise NotFound(f"no delivery {delivery_id}")
        if row.state != FAILED:
            raise AnnotationError(f"delivery {delivery_id} is {row.state}: only a failed one is retried")
        row.state, row.attempts, row.next_attempt_at, row.claimed_by = PENDING, 0, utcnow(), None
        record_event(
            work.research,
            actor=actor,
            action="delivery.requeued",
            project_id=row.project_id,
            object=f"delivery {delivery_id}",
        )
        work.research.flush()
        work.research.expunge(row)
        return row
