"""Annotations as the research side sees them (no table rows leave the service): what a listing, the CLI's
--json and the API show. Everything here is pseudonymous: subject codes, pseudo UIDs, user names."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel
from sqlmodel import Session, col, select

from bridge.annotations.segments import Segment, from_json
from bridge.annotations.sources import SeriesRecord, series_by_id
from bridge.errors import NotFound
from storage.models.annotations import Annotation, AnnotationVersion, Delivery, ReviewDecision


class SegmentView(BaseModel):
    number: int
    label: str
    category: str
    type: str
    region: str | None
    colour: tuple[int, int, int]
    voxels: int


class VersionView(BaseModel):
    version: int
    source: str
    created_by: str
    created_at: dt.datetime
    sha256: str
    segments: list[SegmentView]


class DecisionView(BaseModel):
    version: int
    stage: str
    decision: str
    reviewer: str
    comment: str | None
    at: dt.datetime


class DeliveryView(BaseModel):
    id: int
    annotation: int
    version: int
    destination: str
    mode: str
    state: str
    attempts: int
    last_error: str | None
    seg_series_uid: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None
    next_attempt_at: dt.datetime


class AnnotationView(BaseModel):
    id: int
    project: str
    subject: str
    timepoint_label: str | None
    days_from_baseline: int | None
    study_instance_uid: str
    series_instance_uid: str
    annotator: str
    task: int | None
    stage: str
    state: str
    version: int
    labels: list[str]
    consensus_of: list[int]
    created_at: dt.datetime
    updated_at: dt.datetime
    versions: list[VersionView] = []
    decisions: list[DecisionView] = []
    deliveries: list[DeliveryView] = []


def segment_views(segments: list[Segment]) -> list[SegmentView]:
    return [SegmentView(**segment.__dict__) for segment in segments]


def delivery_view(row: Delivery) -> DeliveryView:
    assert row.id is not None
    return DeliveryView(
        id=row.id,
        annotation=row.annotation_id,
        version=row.version,
        destination=row.destination,
        mode=row.mode,
        state=row.state,
        attempts=row.attempts,
        last_error=row.last_error,
        seg_series_uid=row.seg_series_uid,
        created_at=row.created_at,
        delivered_at=row.delivered_at,
        next_attempt_at=row.next_attempt_at,
    )


def load_annotation(session: Session, annotation_id: int) -> Annotation:
    row = session.get(Annotation, annotation_id)
    if row is None:
        raise NotFound(f"no annotation {annotation_id}")
    return row


def current_version(session: Session, annotation: Annotation) -> AnnotationVersion:
    statement = select(AnnotationVersion).where(
        AnnotationVersion.annotation_id == annotation.id, AnnotationVersion.version == annotation.version
    )
    return session.exec(statement).one()


def versions_of(session: Session, annotation_id: int) -> list[AnnotationVersion]:
    statement = (
        select(AnnotationVersion)
        .where(AnnotationVersion.annotation_id == annotation_id)
        .order_by(col(AnnotationVersion.version))
    )
    return list(session.exec(statement))


def view_of(
    session: Session, row: Annotation, *, record: SeriesRecord | None = None, full: bool = True
) -> AnnotationView:
    """The annotation as shown; `full` adds its versions, decisions and deliveries."""
    assert row.id is not None
    record = record or series_by_id(session, row.series_id)
    versions = versions_of(session, row.id)
    current = next(v for v in versions if v.version == row.version)
    view = AnnotationView(
        id=row.id,
        project=record.project,
        subject=record.subject_code,
        timepoint_label=record.timepoint_label,
        days_from_baseline=record.days_from_baseline,
        study_instance_uid=record.study_uid,
        series_instance_uid=record.uid,
        annotator=row.annotator,
        task=row.task_id,
        stage=row.stage,
        state=row.state,
        version=row.version,
        labels=[segment.label for segment in from_json(current.segments)],
        consensus_of=[int(part) for part in (row.consensus_of or "").split(",") if part],
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
    if not full:
        return view
    view.versions = [
        VersionView(
            version=v.version,
            source=v.source,
            created_by=v.created_by,
            created_at=v.created_at,
            sha256=v.sha256,
            segments=segment_views(from_json(v.segments)),
        )
        for v in versions
    ]
    decisions = select(ReviewDecision).where(ReviewDecision.annotation_id == row.id).order_by(col(ReviewDecision.id))
    view.decisions = [
        DecisionView(
            version=d.version, stage=d.stage, decision=d.decision, reviewer=d.reviewer, comment=d.comment, at=d.at
        )
        for d in session.exec(decisions)
    ]
    deliveries = select(Delivery).where(Delivery.annotation_id == row.id).order_by(col(Delivery.id))
    view.deliveries = [delivery_view(d) for d in session.exec(deliveries)]
    return view
