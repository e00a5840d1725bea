"""The review queue and agreement pages.

An annotator sees their open tasks and their rejected annotations with the reviewers' comments; a reviewer
sees what waits for a review, by stage (never their own work), and approves or rejects it from the page
(the same `bridge.annotations.review.review` as the API and the command line, which checks the role and the
relation again). The agreement page draws a project's per-label Dice matrix as a heatmap and the
per-annotator quality figures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Literal

from fastapi import APIRouter, Form, Request, Response

from bridge.access.roles import Permission
from bridge.annotations import quality
from bridge.annotations.listing import listing
from bridge.annotations.review import review
from bridge.annotations.service import IN_REVIEW, REJECTED
from bridge.annotations.tasks import list_tasks
from bridge.api.annotation_routes import answer, service
from bridge.api.auth import database
from bridge.console.pages import back_to, render
from bridge.console.session import Csrf, Reader, Reviewer, Visitor

router = APIRouter(include_in_schema=False)


@router.get("/review")
def review_queue(request: Request, who: Visitor) -> Response:
    db = database(request)
    mine_to_do = who.may(Permission.CONTRIBUTE)
    assigned = list_tasks(db, annotator=who.name, projects=who.projects) if mine_to_do else []
    tasks = [t for t in assigned if t.annotations.get(who.name, 0) < len(t.series)]  # not every series drawn yet
    rejected = listing(db, state=REJECTED, annotator=who.name, projects=who.projects, full=True) if mine_to_do else []
    waiting: dict[str, list[object]] = defaultdict(list)
    if who.may(Permission.REVIEW):
        for view in listing(db, state=IN_REVIEW, projects=who.projects):
            if view.annotator != who.name and who.may(Permission.REVIEW, view.project):
                waiting[f"{view.project}: {view.stage}"].append(view)
    return render(
        request,
        "review.html",
        title="Review queue",
        section="review",
        tasks=tasks,
        rejected=rejected,
        waiting=dict(sorted(waiting.items())),
        may_review=who.may(Permission.REVIEW),
        may_contribute=mine_to_do,
    )


@router.post("/annotations/{annotation_id}/review", dependencies=[Csrf])
def decide(
    annotation_id: int,
    request: Request,
    who: Reviewer,
    decision: Annotated[Literal["approve", "reject"], Form()],
    comment: Annotated[str, Form(max_length=2048)] = "",
) -> Response:
    answer(
        lambda: review(
            database(request),
            dict(request.app.state.settings.projects),
            annotation_id=annotation_id,
            approve=decision == "approve",
            reviewer=who,
            comment=comment,
        )
    )
    return back_to("/review", "approved" if decision == "approve" else "rejected")


def heat(dice: float | None) -> str:
    """The cell's class: ten steps from red (0) to green (1)."""
    return "" if dice is None else f"heat-{min(int(dice * 10), 9)}"


@router.get("/projects/{project}/agreement")
def agreement(project: str, request: Request, who: Reader) -> Response:
    annotations = service(request)
    rows = answer(lambda: quality.agreement(annotations, project=project))
    annotators = answer(lambda: quality.annotators(annotations, project=project))
    matrices: dict[str, dict[tuple[str, str], quality.AgreementRow]] = defaultdict(dict)
    names: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        matrices[row.label][(row.first, row.second)] = row
        matrices[row.label][(row.second, row.first)] = row
        names[row.label] |= {row.first, row.second}
    return render(
        request,
        "agreement.html",
        title=f"Agreement · {project}",
        section="projects",
        project=project,
        matrices=dict(sorted(matrices.items())),
        names={label: sorted(found) for label, found in names.items()},
        annotators=annotators,
        heat=heat,
    )
