"""`pacs-bridge cohort`: ask the index (filters -> subjects, timepoints or series), save the question, freeze
its answer as a snapshot."""

from __future__ import annotations

import csv
import getpass
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bridge.cli.common import ConfigOption, load, output
from bridge.cli.filters import fail, with_filters
from bridge.cohorts.filters import CohortFilters, Level, Page

if TYPE_CHECKING:
    from pydantic import BaseModel

    from bridge.settings import Settings
    from storage.db import Database


class Format(StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


LevelOption = Annotated[Level, typer.Option("--level", help="What one row is.")]
FormatOption = Annotated[Format, typer.Option("--format", "-f", help="table, csv or json.")]
SortOption = Annotated[
    str | None, typer.Option("--sort", help="Columns, '-' for descending: subject,-days_from_baseline")
]
LimitOption = Annotated[int, typer.Option("--limit", help="Rows at most (a page).", min=1, max=100000)]
OffsetOption = Annotated[int, typer.Option("--offset", help="Rows to skip.", min=0)]

app = typer.Typer(help="Cohorts: query the index, save queries, freeze snapshots.", invoke_without_command=True)


def actor() -> str:
    return f"cli:{getpass.getuser()}"[:128]


def _open(config: Any) -> tuple[Settings, Database]:
    from bridge.wiring import open_database

    settings = load(config)
    return settings, open_database(settings)


def print_rows(rows: Sequence[BaseModel], form: Format, header: dict[str, Any]) -> None:
    """Rows as a table (people), CSV (spreadsheets) or JSON (`header` and the rows, for scripts)."""
    dumped = [row.model_dump(mode="json") for row in rows]
    if form is Format.JSON:
        print(json.dumps({**header, "rows": dumped}, indent=2))
        return
    columns = list(dumped[0]) if dumped else []
    if form is Format.CSV:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in row.values()] for row in dumped])
        return
    table = Table(*columns)
    for row in dumped:
        table.add_row(*("" if v is None else str(v) for v in row.values()))
    out = output()
    out.print(table)
    out.print(", ".join(f"{key} {value}" for key, value in header.items() if not isinstance(value, dict)))


def _run_query(database: Database, filters: CohortFilters, page: Page, form: Format) -> None:
    from bridge.cohorts.query import QueryError, run

    with database.reading() as session:
        try:
            result = run(session, filters, page)
        except QueryError as exc:
            fail(str(exc))
    header = {"level": result.level.value, "total": result.total, "offset": result.offset, "limit": result.limit}
    print_rows(result.rows, form, header)


@app.callback()
@with_filters
def cohort(
    ctx: typer.Context,
    config: ConfigOption = None,
    level: LevelOption = Level.SERIES,
    form: FormatOption = Format.TABLE,
    sort: SortOption = None,
    limit: LimitOption = 100,
    offset: OffsetOption = 0,
    filters: CohortFilters | None = None,
) -> None:
    """Run the filters given: `pacs-bridge cohort --project P --modality CT --min-followups 2 --level subject`."""
    if ctx.invoked_subcommand is not None:
        if filters is not None:
            fail(f"give the filters after `{ctx.invoked_subcommand}`")
        return
    if filters is None:
        fail("give --project and filters, or a command (save, run, list, snapshot); see --help")
    assert filters is not None
    _, database = _open(config)
    try:
        _run_query(database, filters, Page(level=level, sort=sort, limit=limit, offset=offset), form)
    finally:
        database.dispose()


@app.command("save")
@with_filters
def save(
    name: Annotated[str, typer.Argument(help="The cohort's name (unique in its project).")],
    config: ConfigOption = None,
    filters: CohortFilters | None = None,
) -> None:
    """Save the filters as a named cohort (replacing the filters of one that exists)."""
    from bridge.cohorts.saved import CohortError
    from bridge.cohorts.saved import save as save_cohort

    if filters is None:
        fail("give --project and the filters to save")
    assert filters is not None
    _, database = _open(config)
    try:
        with database.session() as session:
            save_cohort(session, name, filters, actor=actor())
    except CohortError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    output().print(f"saved cohort {name} ({filters.project}): {filters.saved()}")


@app.command("run")
def run_saved(
    name: Annotated[str, typer.Argument(help="A saved cohort, or a snapshot (COHORT@N).")],
    config: ConfigOption = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Where the name is in several.")] = None,
    level: LevelOption = Level.SERIES,
    form: FormatOption = Format.TABLE,
    sort: SortOption = None,
    limit: LimitOption = 100,
    offset: OffsetOption = 0,
) -> None:
    """Run a saved cohort on today's data, or list a snapshot's frozen series (and what is gone since)."""
    from bridge.cohorts import saved

    _, database = _open(config)
    projects = [project] if project else None
    try:
        if "@" in name:
            with database.reading() as session:
                _, snapshot = saved.find_snapshot(session, name, projects)
                rows = saved.snapshot_series(session, snapshot)
                gone = saved.gone(session, snapshot)
            header = {"snapshot": snapshot.name, "content_hash": snapshot.content_hash, "total": len(rows)}
            print_rows(rows, form, {**header, "gone": {"series": gone.series, "instances": gone.instances}})
            if gone and form is not Format.JSON:
                print(f"gone since: {len(gone.series)} series, {len(gone.instances)} instances", file=sys.stderr)
            return
        with database.reading() as session:
            _, cohort = saved.find(session, name, projects)
        _run_query(database, saved.filters_of(cohort), Page(level=level, sort=sort, limit=limit, offset=offset), form)
    except saved.CohortError as exc:
        fail(str(exc))
    finally:
        database.dispose()


@app.command("list")
def list_cohorts(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")] = False,
) -> None:
    """The saved cohorts, their filters and their snapshots."""
    from bridge.cohorts import saved

    _, database = _open(config)
    try:
        with database.reading() as session:
            found = [
                {
                    "project": project,
                    "name": cohort.name,
                    "filters": json.loads(cohort.query),
                    "snapshots": [
                        {
                            "name": s.name,
                            "content_hash": s.content_hash,
                            "series": s.series_count,
                            "at": str(s.created_at),
                        }
                        for s in saved.snapshots_of(session, cohort.project_id, cohort.name)
                    ],
                }
                for project, cohort in saved.listing(session)
            ]
    finally:
        database.dispose()
    if as_json:
        print(json.dumps(found, indent=2))
        return
    table = Table("project", "cohort", "filters", "snapshots")
    for item in found:
        table.add_row(
            item["project"], item["name"], json.dumps(item["filters"]), ", ".join(s["name"] for s in item["snapshots"])
        )
    output().print(table)


@app.command("snapshot")
def snapshot(
    name: Annotated[str, typer.Argument(help="A saved cohort.")],
    config: ConfigOption = None,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Where the name is in several.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")] = False,
) -> None:
    """Freeze the cohort's series and instances as they are now, as COHORT@N with a content hash."""
    from bridge.cohorts import saved

    _, database = _open(config)
    try:
        with database.session() as session:
            taken = saved.take_snapshot(session, name, actor=actor(), projects=[project] if project else None)
    except saved.CohortError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    summary = {
        "name": taken.name,
        "content_hash": taken.content_hash,
        "series": taken.series_count,
        "instances": taken.instance_count,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        counts = f"{taken.series_count} series, {taken.instance_count} instances"
        output().print(f"snapshot {taken.name}: {counts}, sha256 {taken.content_hash}")
