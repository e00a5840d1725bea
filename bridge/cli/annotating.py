"""`pacs-bridge annotations`: masks in, review, agreement, consensus; `pacs-bridge deliveries`: the outbox."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel

from bridge.cli.cohorts import actor
from bridge.cli.common import ConfigOption, load, output
from bridge.cli.filters import fail

if TYPE_CHECKING:
    from bridge.access.users import Principal
    from bridge.annotations.service import AnnotationService
    from storage.db import Database

app = typer.Typer(help="Annotations: segmentations of series, their review and agreement.", no_args_is_help=True)
deliveries_app = typer.Typer(help="Deliveries of approved segmentations (the outbox).", no_args_is_help=False)
JsonOption = Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")]


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


def _service(config: Path | None) -> tuple[AnnotationService, Database]:
    from bridge.annotations.service import AnnotationService
    from bridge.wiring import open_database

    settings = load(config)
    database = open_database(settings)
    service = AnnotationService.of(settings, database)
    return service, database


def _reviewer(database: Database, name: str) -> Principal:
    from bridge.access.users import find_principal

    with database.reading() as session:
        found = find_principal(session, name)
    if found is None:
        fail(f"no active user {name!r}: create it with `pacs-bridge users create {name} --role reviewer`")
    assert found is not None
    return found


def _print(rows: Sequence[BaseModel], fmt: Format, columns: Sequence[str] | None = None) -> None:
    dumped = [row.model_dump(mode="json") for row in rows]
    if fmt is Format.JSON:
        print(json.dumps(dumped, indent=2))
        return
    columns = list(columns or (dumped[0].keys() if dumped else []))
    if fmt is Format.CSV:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows([[row.get(c) for c in columns] for row in dumped])
        return
    from rich.table import Table

    table = Table(*columns)
    for row in dumped:
        table.add_row(*("" if row.get(c) is None else str(row.get(c)) for c in columns))
    output().print(table)


def _run(action: Any) -> Any:
    from bridge.errors import AnnotationError

    try:
        return action()
    except AnnotationError as error:
        fail(str(error))


@app.command("import")
def import_mask(
    series_uid: Annotated[str, typer.Argument(help="The (de-identified) Series Instance UID the mask is drawn on.")],
    mask: Annotated[
        Path, typer.Argument(help=".nii, .nii.gz, .nrrd, .nhdr, .npy or .npz", exists=True, dir_okay=False)
    ],
    label: Annotated[str, typer.Option("--label", "-l", help="The label, or labels of values 1, 2, ...: Tumor,Node")],
    annotator: Annotated[str, typer.Option("--annotator", "-a", help="Who drew it.")],
    project: Annotated[str | None, typer.Option("--project", "-p", help="The series' project.")] = None,
    revise: Annotated[int | None, typer.Option("--revise", help="A new version of this annotation.")] = None,
    task: Annotated[int | None, typer.Option("--task", help="The task it answers.")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Import a mask aligned to a series (NumPy: slices x rows x columns in the series' index order)."""
    service, database = _service(config)
    try:
        view = _run(
            lambda: service.import_mask(
                series_uid=series_uid,
                path=mask,
                labels=label.split(","),
                annotator=annotator,
                actor=actor(),
                project=project,
                revise=revise,
                task_id=task,
            )
        )
    finally:
        database.dispose()
    if as_json:
        print(view.model_dump_json(indent=2))
    else:
        output().print(
            f"annotation {view.id} v{view.version} of {view.series_instance_uid}: {view.state} at {view.stage}"
        )


@app.command("list")
def list_annotations(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    state: Annotated[str | None, typer.Option("--state", help="in-review, rejected or approved")] = None,
    stage: Annotated[str | None, typer.Option("--stage")] = None,
    annotator: Annotated[str | None, typer.Option("--annotator")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.TABLE,
    config: ConfigOption = None,
) -> None:
    """Annotations with where they stand (a review queue: --state in-review --stage review)."""
    from bridge.annotations.listing import listing

    service, database = _service(config)
    try:
        rows = listing(database, project=project, state=state, stage=stage, annotator=annotator)
    finally:
        database.dispose()
    columns = (
        "id",
        "project",
        "subject",
        "timepoint_label",
        "series_instance_uid",
        "annotator",
        "stage",
        "state",
        "version",
        "labels",
    )
    _print(rows, fmt, columns)


@app.command("show")
def show(annotation_id: Annotated[int, typer.Argument(metavar="ID")], config: ConfigOption = None) -> None:
    """One annotation with its versions, decisions and deliveries (JSON)."""
    service, database = _service(config)
    try:
        view = _run(lambda: service.get(annotation_id))
    finally:
        database.dispose()
    print(view.model_dump_json(indent=2))


@app.command("review")
def review(
    annotation_id: Annotated[int, typer.Argument(metavar="ID")],
    reviewer: Annotated[str, typer.Option("--reviewer", "-r", help="A user with the reviewer role.")],
    approve: Annotated[bool, typer.Option("--approve", help="Approve at its stage.")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="Send back to its annotator (needs --comment).")] = False,
    comment: Annotated[str | None, typer.Option("--comment", "-m")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Approve or reject an annotation at the stage it waits at (recorded with who, when and why)."""
    from bridge.annotations.review import review as decide

    if approve == reject:
        fail("give --approve or --reject")
    service, database = _service(config)
    try:
        principal = _reviewer(database, reviewer)
        view = _run(
            lambda: decide(
                database,
                dict(service.projects),
                annotation_id=annotation_id,
                approve=approve,
                reviewer=principal,
                comment=comment,
            )
        )
    finally:
        database.dispose()
    if as_json:
        print(view.model_dump_json(indent=2))
    else:
        output().print(f"annotation {view.id} v{view.version}: {view.state} at {view.stage}")


@app.command("consensus")
def consensus(
    series_uid: Annotated[str, typer.Argument(help="The series whose annotations are combined.")],
    reviewer: Annotated[str, typer.Option("--reviewer", "-r")],
    method: Annotated[str, typer.Option("--method", help="staple or majority")] = "staple",
    ids: Annotated[str | None, typer.Option("--annotations", help="Only these ids (comma-separated).")] = None,
    as_json: JsonOption = False,
    config: ConfigOption = None,
) -> None:
    """Combine several annotators' segmentations of a series (STAPLE or majority) and approve it as final."""
    from bridge.annotations.consensus import combine

    if method not in ("staple", "majority"):
        fail("--method is staple or majority")
    chosen = [int(part) for part in ids.split(",")] if ids else []
    service, database = _service(config)
    try:
        principal = _reviewer(database, reviewer)
        view = _run(
            lambda: combine(
                service,
                series_uid=series_uid,
                method=method,  # type: ignore[arg-type]
                reviewer=principal,
                annotation_ids=chosen,
            )
        )
    finally:
        database.dispose()
    if as_json:
        print(view.model_dump_json(indent=2))
    else:
        output().print(f"annotation {view.id}: {method} of {view.consensus_of}, {view.state}")


@app.command("agreement")
def agreement(
    project: Annotated[str, typer.Option("--project", "-p")],
    task: Annotated[int | None, typer.Option("--task", help="Only this task's annotations.")] = None,
    annotators: Annotated[bool, typer.Option("--annotators", help="Per-annotator figures instead.")] = False,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.TABLE,
    config: ConfigOption = None,
) -> None:
    """Dice and HD95 (mm) per label and pair of annotators; or, with --annotators, review figures."""
    from bridge.annotations import quality

    service, database = _service(config)
    try:
        if annotators:
            _print(_run(lambda: quality.annotators(service, project=project, task_id=task)), fmt)
        else:
            _print(_run(lambda: quality.agreement(service, project=project, task_id=task)), fmt)
    finally:
        database.dispose()


@deliveries_app.callback(invoke_without_command=True)
def deliveries(
    context: typer.Context,
    state: Annotated[str | None, typer.Option("--state", help="pending, sending, delivered or failed")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.TABLE,
    config: ConfigOption = None,
) -> None:
    """Deliveries of approved SEGs with their state and the reason of the last failure."""
    if context.invoked_subcommand is not None:
        return
    from bridge.annotations.records import delivery_view
    from bridge.delivery import outbox

    if state is not None and state not in outbox.STATES:
        fail(f"--state is one of {', '.join(outbox.STATES)}")
    _, database = _service(config)
    try:
        rows = [delivery_view(row) for row in outbox.listing(database, state=state)]
    finally:
        database.dispose()
    _print(rows, fmt, ("id", "annotation", "version", "destination", "mode", "state", "attempts", "last_error"))


@deliveries_app.command("retry")
def retry(delivery_id: Annotated[int, typer.Argument(metavar="ID")], config: ConfigOption = None) -> None:
    """Queue a failed delivery again (a running `serve` sends it)."""
    from bridge.delivery import outbox

    _, database = _service(config)
    try:
        row = _run(lambda: outbox.retry(database, delivery_id, actor=actor()))
    finally:
        database.dispose()
    output().print(f"delivery {row.id} to {row.destination}: pending again")


tasks_app = typer.Typer(
    help="Annotation tasks: a subject's series to segment, assigned to annotators.", no_args_is_help=True
)


@tasks_app.command("create")
def create_tasks(
    cohort: Annotated[str, typer.Option("--cohort", help="A saved cohort: one task per subject.")],
    labels: Annotated[str, typer.Option("--labels", help="The labels wanted: Tumor,Lymph-node")],
    annotators: Annotated[str, typer.Option("--annotators", help="Who annotates: alice,bob")],
    per_task: Annotated[int, typer.Option("--per-task", help="Annotators per task (round-robin).")] = 1,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.TABLE,
    config: ConfigOption = None,
) -> None:
    """A task per subject of the cohort, with its series at every timepoint and the labels wanted."""
    from bridge.annotations.tasks import create_tasks as create

    _, database = _service(config)
    try:
        views = _run(
            lambda: create(
                database,
                cohort=cohort,
                labels=labels.split(","),
                annotators=annotators.split(","),
                per_task=per_task,
                actor=actor(),
            )
        )
    finally:
        database.dispose()
    _task_rows(views, fmt)


@tasks_app.command("list")
def list_tasks(
    project: Annotated[str | None, typer.Option("--project", "-p")] = None,
    annotator: Annotated[str | None, typer.Option("--annotator", help="Only this annotator's tasks.")] = None,
    fmt: Annotated[Format, typer.Option("--format", "-f")] = Format.TABLE,
    config: ConfigOption = None,
) -> None:
    """Tasks with their subject, series, annotators and progress."""
    from bridge.annotations.tasks import list_tasks as listing

    _, database = _service(config)
    try:
        views = listing(database, project=project, annotator=annotator)
    finally:
        database.dispose()
    _task_rows(views, fmt)


def _task_rows(views: Sequence[Any], fmt: Format) -> None:
    if fmt is Format.JSON:
        print(json.dumps([view.model_dump(mode="json") for view in views], indent=2))
        return

    class Row(BaseModel):
        id: int
        project: str
        subject: str
        cohort: str | None
        labels: str
        annotators: str
        series: int
        done: str

    rows = [
        Row(
            id=v.id,
            project=v.project,
            subject=v.subject,
            cohort=v.cohort,
            labels=",".join(v.labels),
            annotators=",".join(v.annotators),
            series=len(v.series),
            done=", ".join(f"{name} {count}" for name, count in sorted(v.annotations.items())),
        )
        for v in views
    ]
    _print(rows, fmt)
