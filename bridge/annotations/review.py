"""The review workflow: an annotation waits at a stage, moves forward on approval and back to its annotator
on rejection (with a comment); approval at the last stage makes it final and queues its deliveries.

The project's `review.stages` name the steps: the first is the annotator's (where a rejected annotation
waits for its correction), each later one a review. Every decision is a row (who, when, stage, version,
comment) and an audit event. Who may decide is the access-control work's: the REVIEW permission on the
project, and never on one's own annotation.
"""

from __future__ import annotations

import logging

from sqlmodel import Session, select

from bridge.access.roles import Permission
from bridge.access.users import Principal
from bridge.annotations.records import AnnotationView, load_annotation, view_of
from bridge.annotations.service import APPROVED, IN_REVIEW, REJECTED
from bridge.annotations.sources import series_by_id
from bridge.errors import AnnotationError, Forbidden
from bridge.settings import ProjectSettings
from storage.audit import record_event
from storage.db import Database
from storage.models.annotations import Annotation, Delivery, ReviewDecision
from storage.models.common import utcnow

logger = logging.getLogger(__name__)


def check_reviewer(reviewer: Principal, annotation: Annotation, project: str) -> None:
    if not reviewer.may(Permission.REVIEW, project):
        why = f"project {project!r}" if reviewer.may(Permission.REVIEW) else "review rights"
        raise Forbidden(f"{reviewer.name} ({reviewer.role.value}) has no {why}: annotators cannot approve or reject")
    if reviewer.name == annotation.annotator:
        raise Forbidden(f"annotation {annotation.id} is {reviewer.name}'s own work: another reviewer decides")


def review(
    database: Database,
    projects: dict[str, ProjectSettings],
    *,
    annotation_id: int,
    approve: bool,
    reviewer: Principal,
    comment: str | None,
) -> AnnotationView:
    """Record the decision at the annotation's stage and move it; a rejection needs a comment."""
    comment = (comment or "").strip() or None
    if not approve and comment is None:
        raise AnnotationError("a rejection needs a comment saying what to correct (--comment)")
    with database.unit_of_work() as work:
        session = work.research
        row = load_annotation(session, annotation_id)
        record = series_by_id(session, row.series_id)
        settings = projects.get(record.project)
        if settings is None:
            raise AnnotationError(f"project {record.project!r} is not configured")
        check_reviewer(reviewer, row, record.project)
        if row.state != IN_REVIEW:
            raise AnnotationError(f"annotation {annotation_id} is {row.state}, not waiting for a review")
        stages = settings.review.stages
        stage = row.stage if row.stage in stages else stages[1]
        session.add(
            ReviewDecision(
                annotation_id=annotation_id,
                version=row.version,
                stage=stage,
                decision="approve" if approve else "reject",
                reviewer=reviewer.name,
                comment=comment,
            )
        )
        position = stages.index(stage)
        if not approve:
            row.stage, row.state = stages[0], REJECTED
        elif position + 1 < len(stages):
            row.stage = stages[position + 1]
        else:
            row.state = APPROVED
            queue_deliveries(session, row, settings)
        row.updated_at = utcnow()
        record_event(
            session,
            actor=reviewer.name,
            action="annotation.approved" if approve else "annotation.rejected",
            project_id=row.project_id,
            object=f"annotation {annotation_id} v{row.version}",
            detail=f"stage {stage}" + (", final" if row.state == APPROVED else ""),
        )
        session.flush()
        view = view_of(session, row, record=record)
    logger.info("annotation %d v%d %s at stage %s", annotation_id, view.version, view.state, stage)
    return view


def queue_deliveries(session: Session, row: Annotation, settings: ProjectSettings) -> None:
    """One pending delivery per SEG destination of the project; a version is queued once per destination."""
    assert row.id is not None
    queued = set(
        session.exec(
            select(Delivery.destination).where(Delivery.annotation_id == row.id, Delivery.version == row.version)
        )
    )
    for destination in settings.seg_destinations:
        if destination.remote in queued:
            continue
        session.add(
            Delivery(
                project_id=row.project_id,
                annotation_id=row.id,
                version=row.version,
                destination=destination.remote,
                mode=destination.mode,
                state="pending",
            )
        )
