"""`pacs-bridge timepoints`: a subject's visits, labelled by hand where the rules got it wrong."""

from __future__ import annotations

from typing import Annotated

import typer

from bridge.cli.cohorts import actor
from bridge.cli.common import ConfigOption, load, output
from bridge.cli.filters import fail

app = typer.Typer(help="Timepoints: labels of the trial's visits.", no_args_is_help=True)
ProjectOption = Annotated[str, typer.Option("--project", "-p", help="The subject's project.")]


@app.command("label")
def label(
    subject: Annotated[str, typer.Argument(help="Subject code, e.g. LUNG-0007.")],
    which: Annotated[str, typer.Argument(help="The timepoint: its days from baseline, or its Study Instance UID.")],
    new_label: Annotated[str | None, typer.Argument(metavar="LABEL", help="The label (omit with --clear).")] = None,
    project: ProjectOption = "",
    clear: Annotated[bool, typer.Option("--clear", help="Hand the label back to the rules.")] = False,
    config: ConfigOption = None,
) -> None:
    """Set a timepoint's label by hand: the visit rules never overwrite it (audited)."""
    from bridge.timepoints import LabelError, TimepointError, label_by_hand
    from bridge.wiring import open_database

    if (new_label is None) != clear:
        fail("give a LABEL, or --clear to hand it back to the rules")
    settings = load(config)
    visits = settings.project(project).visits
    database = open_database(settings)
    try:
        with database.session() as session:
            timepoint = label_by_hand(
                session,
                project=project,
                subject_code=subject,
                which=which,
                label=new_label,
                visits=visits,
                actor=actor(),
            )
            shown = f"{subject} day {timepoint.days_from_baseline}: {timepoint.label} ({timepoint.label_source})"
    except (TimepointError, LabelError) as exc:
        fail(str(exc))
    finally:
        database.dispose()
    output().print(shown)


@app.command("relabel")
def relabel(project: ProjectOption = "", config: ConfigOption = None) -> None:
    """Apply the project's visit schedule again to every subject (after it changed in the configuration)."""
    from bridge.timepoints import relabel as relabel_project
    from bridge.wiring import open_database
    from storage import audit, queries

    settings = load(config)
    visits = settings.project(project).visits
    database = open_database(settings)
    try:
        with database.session() as session:
            project_id = queries.project_id_of(session, project)
            count = relabel_project(session, project_id=project_id, visits=visits) if project_id is not None else 0
            audit.record_event(
                session, actor=actor(), action="timepoint.relabel", project_id=project_id, detail=f"{count} subjects"
            )
    finally:
        database.dispose()
    output().print(f"{project}: {count} subjects relabelled by the visit schedule")
