"""Annotations, review, agreement, tasks and deliveries over HTTP: the command line's operations, with the
caller's token as the annotator or reviewer (the same role checks, in the services).

A mask is uploaded as the request body (`application/octet-stream`), its format named by `format`
(nii, nii.gz, nrrd, npy, npz); the labels of its values by `labels`. Errors: 404 for what does not exist,
403 for what the role or relation forbids, 422 for what cannot be done as asked (a mask that does not fit).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from bridge.access.roles import Permission
from bridge.access.users import Principal
from bridge.annotations import quality
from bridge.annotations.listing import listing
from bridge.annotations.records import AnnotationView, DeliveryView, delivery_view
from bridge.annotations.service import AnnotationService
from bridge.annotations.tasks import TaskView, create_tasks, list_tasks, task_view
from bridge.api.auth import Caller, Curator, Reader, allowed, database
from bridge.errors import AnnotationError, Forbidden, NotFound
from bridge.settings import Settings
from storage.db import Database

router = APIRouter(prefix="/api/v1", tags=["annotations"])
Db = Annotated[Database, Depends(database)]
Contributor = Annotated[Principal, Depends(allowed(Permission.CONTRIBUTE))]
Reviewer = Annotated[Principal, Depends(allowed(Permission.REVIEW))]
MASK_FORMATS = {"nii": ".nii", "nii.gz": ".nii.gz", "nrrd": ".nrrd", "npy": ".npy", "npz": ".npz"}
UPLOAD_PATH = r"/api/v1/projects/[^/]+/series/[^/]+/annotations"
T = TypeVar("T")


def service(request: Request) -> AnnotationService:
    """One annotation service per application (made on first use)."""
    state = request.app.state
    if getattr(state, "annotations", None) is None:
        state.annotations = AnnotationService.of(state.settings, state.database)
    return state.annotations  # type: ignore[no-any-return]


Service = Annotated[AnnotationService, Depends(service)]


def answer(action: Callable[[], T]) -> T:
    """`action`'s result, its domain errors as HTTP errors (404, 403, 422); the console's pages too."""
    try:
        return action()
    except NotFound as error:
        raise HTTPException(404, str(error)) from None
    except Forbidden as error:
        raise HTTPException(403, str(error)) from None
    except AnnotationError as error:
        raise HTTPException(422, str(error)) from None


def _visible(caller: Principal, project: str) -> None:
    if not caller.may(Permission.READ, project):
        raise HTTPException(404, f"no project {project!r} for this token")


@router.get("/annotations")
def list_annotations(
    caller: Reader,
    db: Db,
    project: str | None = None,
    state: Literal["in-review", "rejected", "approved"] | None = None,
    stage: str | None = None,
    annotator: str | None = None,
    task: int | None = None,
) -> list[AnnotationView]:
    """Annotations the token may see, with where they stand (a review queue: state=in-review&stage=...)."""
    return listing(
        db, project=project, state=state, stage=stage, annotator=annotator, task_id=task, projects=caller.projects
    )


@router.get("/annotations/{annotation_id}")
def annotation(annotation_id: int, caller: Reader, annotations: Service) -> AnnotationView:
    view = answer(lambda: annotations.get(annotation_id))
    _visible(caller, view.project)
    return view


@router.post("/projects/{project}/series/{series_uid}/annotations", status_code=201)
async def upload_mask(
    project: str,
    series_uid: str,
    request: Request,
    caller: Contributor,
    annotations: Service,
    labels: Annotated[str, Query(description="The label, or the labels of values 1, 2, ... comma-separated")],
    format: Annotated[str, Query(description="nii, nii.gz, nrrd, npy or npz")] = "nii.gz",
    revise: int | None = None,
    task: int | None = None,
) -> AnnotationView:
    """A mask drawn by the caller on the series (the body), as a new annotation or a new version."""
    suffix = MASK_FORMATS.get(format)
    if suffix is None:
        raise HTTPException(422, f"format is one of {', '.join(MASK_FORMATS)}")
    with tempfile.TemporaryDirectory(prefix="mask-") as folder:
        path = Path(folder) / f"upload{suffix}"
        with path.open("wb") as out:
            async for chunk in request.stream():
                out.write(chunk)
        return await run_in_threadpool(
            answer,
            lambda: annotations.import_mask(
                series_uid=series_uid,
                path=path,
                labels=labels.split(","),
                annotator=caller.name,
                actor=f"api:{caller.name}",
                project=project,
                revise=revise,
                task_id=task,
            ),
        )


class ReviewIn(BaseModel):
    decision: Literal["approve", "reject"]
    comment: str | None = Field(default=None, max_length=2048)


@router.post("/annotations/{annotation_id}/review")
def review_annotation(annotation_id: int, body: ReviewIn, caller: Reviewer, request: Request) -> AnnotationView:
    """Approve or reject at the annotation's stage, as the caller (never one's own work)."""
    from bridge.annotations.review import review

    settings: Settings = request.app.state.settings
    db: Database = request.app.state.database
    return answer(
        lambda: review(
            db,
            dict(settings.projects),
            annotation_id=annotation_id,
            approve=body.decision == "approve",
            reviewer=caller,
            comment=body.comment,
        )
    )


class ConsensusIn(BaseModel):
    method: Literal["staple", "majority"] = "staple"
    annotations: list[int] = []


@router.post("/projects/{project}/series/{series_uid}/consensus", status_code=201)
def consensus(
    project: str, series_uid: str, body: ConsensusIn, caller: Reviewer, annotations: Service
) -> AnnotationView:
    """Combine the series' annotations (STAPLE or majority vote) and approve the result as final."""
    from bridge.annotations.consensus import combine

    return answer(
        lambda: combine(
            annotations,
            series_uid=series_uid,
            method=body.method,
            reviewer=caller,
            annotation_ids=body.annotations,
            project=project,
        )
    )


@router.get("/projects/{project}/agreement")
def agreement(
    project: str, caller: Reader, annotations: Service, task: int | None = None
) -> list[quality.AgreementRow]:
    """Dice and HD95 (mm) per label and pair of annotators, over the series both annotated."""
    return answer(lambda: quality.agreement(annotations, project=project, task_id=task))


@router.get("/projects/{project}/agreement/annotators")
def annotator_quality(
    project: str, caller: Reader, annotations: Service, task: int | None = None
) -> list[quality.AnnotatorRow]:
    """Per annotator: share approved at first review, revisions, mean Dice with the final version."""
    return answer(lambda: quality.annotators(annotations, project=project, task_id=task))


class TasksIn(BaseModel):
    cohort: str = Field(max_length=64)
    labels: list[str] = Field(min_length=1)
    annotators: list[str] = Field(min_length=1)
    per_task: int = Field(default=1, ge=1)


@router.post("/projects/{project}/tasks", status_code=201)
def new_tasks(project: str, body: TasksIn, caller: Curator, db: Db) -> list[TaskView]:
    """One task per subject of the saved cohort, assigned round-robin."""
    return answer(
        lambda: create_tasks(
            db,
            cohort=body.cohort,
            labels=body.labels,
            annotators=body.annotators,
            per_task=body.per_task,
            actor=f"api:{caller.name}",
            projects=frozenset({project}),
        )
    )


@router.get("/projects/{project}/tasks")
def tasks(project: str, caller: Reader, db: Db, annotator: str | None = None) -> list[TaskView]:
    return list_tasks(db, project=project, annotator=annotator)


@router.get("/tasks/{task_id}")
def task(task_id: int, caller: Reader, db: Db) -> TaskView:
    with db.reading() as session:
        view = answer(lambda: task_view(session, task_id))
    _visible(caller, view.project)
    return view


@router.get("/deliveries")
def deliveries(
    caller: Reader, db: Db, state: Literal["pending", "sending", "delivered", "failed"] | None = None
) -> list[DeliveryView]:
    """Deliveries of approved SEGs with their state and the last failure's reason."""
    from bridge.delivery import outbox
    from storage import queries

    rows = outbox.listing(db, state=state)
    with db.reading() as session:
        names = {row.project_id: queries.project_name_of(session, row.project_id) for row in rows}
    return [delivery_view(row) for row in rows if caller.may(Permission.READ, names[row.project_id])]


@router.post("/deliveries/{delivery_id}/retry")
def retry_delivery(delivery_id: int, caller: Caller, db: Db) -> DeliveryView:
    """Queue a failed delivery again (data managers and admins)."""
    from bridge.delivery import outbox

    if not caller.may(Permission.CURATE):
        raise HTTPException(403, "this token has no curate rights")
    return delivery_view(answer(lambda: outbox.retry(db, delivery_id, actor=f"api:{caller.name}")))
