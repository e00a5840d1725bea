"""Annotation tasks at patient level: one task per subject of a cohort, with the series to segment at each of
its timepoints (those the cohort selects) and the labels wanted, assigned to annotators in turn.

`per_task` annotators get each task (two or more for agreement figures), taken round-robin from the list, so
the work is spread evenly. Creating tasks for a cohort again adds only the subjects that have none for it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from urllib.parse import urlencode

from pydantic import BaseModel
from sqlmodel import Session, col, select

from bridge.cohorts.query import each_series
from bridge.cohorts.saved import CohortError, filters_of, find
from bridge.errors import AnnotationError, NotFound
from storage.audit import record_event
from storage.db import Database
from storage.models.annotations import Annotation, Task, TaskAssignment, TaskSeries
from storage.models.research import Project, Series, Subject, Timepoint


class TaskSeriesView(BaseModel):
    timepoint_label: str | None
    days_from_baseline: int | None
    study_instance_uid: str
    series_instance_uid: str
    modality: str | None
    description: str | None


class TaskView(BaseModel):
    id: int
    project: str
    subject: str
    cohort: str | None
    labels: list[str]
    annotators: list[str]
    series: list[TaskSeriesView]
    annotations: dict[str, int]  # per annotator, how many they made for this task
    viewer: str  # the viewer on every timepoint of the subject, side by side


def create_tasks(
    database: Database,
    *,
    cohort: str,
    labels: Sequence[str],
    annotators: Sequence[str],
    per_task: int = 1,
    actor: str,
    projects: frozenset[str] | None = None,
) -> list[TaskView]:
    """One task per subject of the saved cohort (those without one for it yet); the tasks created."""
    labels = [label.strip() for label in labels if label.strip()]
    annotators = list(dict.fromkeys(name.strip() for name in annotators if name.strip()))
    if not labels:
        raise AnnotationError("name the labels wanted: --labels Tumor,Lymph-node")
    if not annotators:
        raise AnnotationError("name the annotators: --annotators alice,bob")
    if not 1 <= per_task <= len(annotators):
        raise AnnotationError(f"--per-task {per_task}: between 1 and the {len(annotators)} annotators named")
    created: list[int] = []
    with database.unit_of_work() as work:
        session = work.research
        try:
            project, saved = find(session, cohort, projects)
        except CohortError as error:
            raise NotFound(str(error)) from None
        project_id = saved.project_id
        by_subject: dict[str, list[str]] = defaultdict(list)
        for row in each_series(session, filters_of(saved)):
            by_subject[row.subject].append(row.series_instance_uid)
        done = set(
            session.exec(
                select(Subject.subject_code)
                .join(Task, col(Task.subject_id) == Subject.id)
                .where(Task.project_id == project_id, Task.cohort == cohort)
            )
        )
        turn = 0
        for subject_code in sorted(by_subject):
            if subject_code in done:
                continue
            subject = session.exec(
                select(Subject).where(Subject.project_id == project_id, Subject.subject_code == subject_code)
            ).one()
            assert subject.id is not None
            task = Task(
                project_id=project_id, subject_id=subject.id, labels=",".join(labels), cohort=cohort, created_by=actor
            )
            session.add(task)
            session.flush()
            assert task.id is not None
            series_ids = session.exec(
                select(Series.id).where(
                    Series.project_id == project_id, col(Series.series_uid).in_(by_subject[subject_code])
                )
            ).all()
            for series_id in series_ids:
                assert series_id is not None
                session.add(TaskSeries(task_id=task.id, series_id=series_id))
            for offset in range(per_task):
                session.add(TaskAssignment(task_id=task.id, annotator=annotators[(turn + offset) % len(annotators)]))
            turn += per_task
            created.append(task.id)
        record_event(
            session,
            actor=actor,
            action="tasks.created",
            project_id=project_id,
            object=f"cohort {cohort}",
            detail=f"{len(created)} tasks, labels {', '.join(labels)}, {per_task} annotator(s) each",
        )
        session.flush()
        return [task_view(session, task_id, project) for task_id in created]


def task_view(session: Session, task_id: int, project: str | None = None) -> TaskView:
    task = session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    if project is None:
        found = session.get(Project, task.project_id)
        assert found is not None
        project = found.name
    subject = session.get(Subject, task.subject_id)
    assert subject is not None
    series = session.exec(
        select(Timepoint, Series)
        .join(Series, col(Series.timepoint_id) == Timepoint.id)
        .join(TaskSeries, col(TaskSeries.series_id) == Series.id)
        .where(TaskSeries.task_id == task_id)
        .order_by(col(Timepoint.days_from_baseline), col(Series.series_number))
    ).all()
    annotators = list(session.exec(select(TaskAssignment.annotator).where(TaskAssignment.task_id == task_id)))
    counts: dict[str, int] = {name: 0 for name in annotators}
    for name in session.exec(select(Annotation.annotator).where(Annotation.task_id == task_id)):
        counts[name] = counts.get(name, 0) + 1
    return TaskView(
        id=task_id,
        project=project,
        subject=subject.subject_code,
        cohort=task.cohort,
        labels=task.labels.split(","),
        annotators=sorted(annotators),
        series=[
            TaskSeriesView(
                timepoint_label=timepoint.label,
                days_from_baseline=timepoint.days_from_baseline,
                study_instance_uid=timepoint.study_uid,
                series_instance_uid=one.series_uid,
                modality=one.modality,
                description=one.description,
            )
            for timepoint, one in series
        ],
        annotations=counts,
        viewer=f"/viewer/subject?{urlencode({'project': project, 'subject': subject.subject_code})}",
    )


def list_tasks(
    database: Database,
    *,
    project: str | None = None,
    annotator: str | None = None,
    projects: frozenset[str] | None = None,
) -> list[TaskView]:
    statement = select(Task.id, Project.name).join(Project, col(Project.id) == Task.project_id)
    if project is not None:
        statement = statement.where(Project.name == project)
    if projects is not None:
        statement = statement.where(col(Project.name).in_(sorted(projects)))
    if annotator is not None:
        statement = statement.join(TaskAssignment, col(TaskAssignment.task_id) == Task.id).where(
            TaskAssignment.annotator == annotator
        )
    with database.reading() as session:
        found = session.exec(statement.order_by(col(Task.id))).all()
        return [task_view(session, task_id, name) for task_id, name in found if task_id is not None]
