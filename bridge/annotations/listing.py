"""Annotations listed with where they stand: a project's, a stage's queue, an annotator's work."""

from __future__ import annotations

from sqlmodel import col, select

from bridge.annotations.records import AnnotationView, view_of
from storage.db import Database
from storage.models.annotations import Annotation
from storage.models.research import Project, Series, Subject


def listing(
    database: Database,
    *,
    project: str | None = None,
    state: str | None = None,
    stage: str | None = None,
    annotator: str | None = None,
    task_id: int | None = None,
    subject: str | None = None,
    projects: frozenset[str] | None = None,
    limit: int = 1000,
    full: bool = False,
) -> list[AnnotationView]:
    """Annotations matching every filter given, oldest first; `projects`: only these (a token's); `full`: with
    their versions, decisions and deliveries."""
    statement = select(Annotation).join(Project, col(Project.id) == Annotation.project_id)
    if project is not None:
        statement = statement.where(Project.name == project)
    if projects is not None:
        statement = statement.where(col(Project.name).in_(sorted(projects)))
    if state is not None:
        statement = statement.where(Annotation.state == state)
    if stage is not None:
        statement = statement.where(Annotation.stage == stage)
    if annotator is not None:
        statement = statement.where(Annotation.annotator == annotator)
    if task_id is not None:
        statement = statement.where(Annotation.task_id == task_id)
    if subject is not None:
        statement = (
            statement.join(Series, col(Series.id) == Annotation.series_id)
            .join(Subject, col(Subject.id) == Series.subject_id)
            .where(Subject.subject_code == subject)
        )
    with database.reading() as session:
        rows = session.exec(statement.order_by(col(Annotation.id)).limit(limit)).all()
        return [view_of(session, row, full=full) for row in rows]
