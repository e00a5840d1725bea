"""`pacs-bridge status`: what the index holds per project, and where each pull schedule stands."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from bridge.cli.common import ConfigOption, load, output


def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")] = False,
) -> None:
    """Per project: subjects, timepoints, series, instances, quarantined; each pull schedule and its last run."""
    from bridge.pull.schedules import statuses
    from bridge.wiring import open_database
    from storage import queries

    settings = load(config)
    database = open_database(settings)
    try:
        with database.session() as session:
            counts = queries.project_counts(session, list(settings.projects))
        schedules = statuses(settings, database)
    finally:
        database.dispose()
    if as_json:
        print(
            json.dumps(
                {"projects": [c.__dict__ for c in counts], "schedules": [s.__dict__ for s in schedules]}, indent=2
            )
        )
        return
    table = Table("project", "subjects", "timepoints", "series", "instances", "quarantined")
    for c in counts:
        table.add_row(c.name, *(str(n) for n in (c.subjects, c.timepoints, c.series, c.instances, c.quarantined)))
    out = output()
    out.print(table)
    if schedules:
        runs = Table("schedule", "pulls", "when", "runs", "last started", "last result", "next")
        for s in schedules:
            outcome = "-" if s.last_ok is None else ("ok: " if s.last_ok else "FAILED: ") + (s.last_result or "")
            runs.add_row(
                s.name,
                f"{s.remote} -> {s.project}",
                s.when,
                str(s.runs),
                s.last_started_at or "never",
                outcome,
                s.next_due,
            )
        out.print(runs)
