"""The `pacs-bridge` command line. Reads the configuration, configures logging, calls the services.

Each command imports what it uses: the services' imports (pydicom, SQLAlchemy, the remotes) take most of a
command's start-up, and a pull overlaps them with the start of its ingest workers.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
import threading
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from bridge.logs import configure_logging
from bridge.settings import ConfigError, Settings, config_path, load_settings
from bridge.signals import interrupt_requests_stop

if TYPE_CHECKING:
    from bridge.importer import ImportSummary

app = typer.Typer(
    help="pacs-bridge: hospital PACS to research, de-identified and indexed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could print identified values
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
console = Console(stderr=True)
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
_LISTED = 10  # files listed by name in the human summary
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="TOML configuration (default: $PACS_BRIDGE_CONFIG or ./config/bridge.toml)"),
]


def _progress(label: str, *, quiet: bool) -> Progress:
    """A progress bar on stderr, shown only to a person at a terminal (never with --json)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=quiet or not console.is_terminal,
    )


class BarProgress:
    """A pull's progress: one bar for the studies, one for the instances of the study being pulled."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.overall = bar.add_task("studies", total=None)
        self.current: TaskID | None = None

    def studies(self, total: int) -> None:
        self.bar.update(self.overall, total=total)

    def study(self, label: str, instances: int) -> None:
        self.current = self.bar.add_task(f"  {label}", total=instances)

    def advance(self, instances: int) -> None:
        if self.current is not None:
            self.bar.advance(self.current, instances)

    def study_done(self) -> None:
        if self.current is not None:
            self.bar.remove_task(self.current)
            self.current = None
        self.bar.advance(self.overall)


class Retrieval(StrEnum):
    dicomweb = "dicomweb"
    c_move = "c-move"
    c_get = "c-get"


def _settings(config: Path | None) -> Settings:
    settings = load_settings(config_path(config))
    configure_logging(settings.log_level)
    return settings


@app.command("import")
def import_command(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to import (walked recursively).")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project the studies belong to.")],
    config: ConfigOption = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Parallel worker processes.")] = DEFAULT_WORKERS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import DICOM files from folders: de-identify, store and index them."""
    from bridge.importer import discover, import_files
    from bridge.runtime import open_ingest, prepare

    settings = _settings(config)
    settings.project(project)
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file or folder")
    prepare(settings)
    files = list(discover(paths))
    open_service = functools.partial(open_ingest, settings, f"import:{getpass.getuser()}")
    with _progress("importing", quiet=as_json) as bar:
        task = bar.add_task("import", total=len(files))
        summary = import_files(
            open_service, files, project=project, workers=workers, progress=lambda _result: bar.advance(task)
        )
    _print_summary(summary, as_json)
    if summary.failed:
        raise typer.Exit(1)


def _print_summary(summary: ImportSummary, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {
                    "stored": summary.stored,
                    "duplicates": summary.duplicates,
                    "quarantined": summary.quarantined_total,
                    "quarantine_reasons": dict(summary.quarantined),
                    "skipped_non_dicom": summary.skipped_non_dicom,
                    "skipped_dicomdir": summary.skipped_dicomdir,
                    "unreadable": summary.unreadable,
                    "failed": summary.failed,
                },
                indent=2,
            )
        )
        return
    out = Console(soft_wrap=True, highlight=False)
    out.print(
        f"stored {summary.stored}, duplicates {summary.duplicates}, "
        f"quarantined {summary.quarantined_total}, skipped {summary.skipped_non_dicom} non-DICOM "
        f"and {summary.skipped_dicomdir} DICOMDIR, unreadable {len(summary.unreadable)}, "
        f"failed {len(summary.failed)}"
    )
    for reason, count in summary.quarantined.most_common():
        out.print(f"  quarantined {count}: {reason}")
    for label, lines in (("unreadable", summary.unreadable), ("failed (see the log)", summary.failed)):
        for line in lines[:_LISTED]:
            out.print(f"  {label}: {line}")
        if len(lines) > _LISTED:
            out.print(f"  ... and {len(lines) - _LISTED} more {label.split()[0]} (--json lists them all)")


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON for scripts.")] = False,
) -> None:
    """Per project: subjects, timepoints, series, instances, quarantined; each pull schedule and its last run."""
    from bridge.runtime import open_database
    from bridge.schedules import statuses
    from storage import index

    settings = _settings(config)
    database = open_database(settings)
    try:
        with database.session() as session:
            counts = index.project_counts(session, list(settings.projects))
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
    out = Console(soft_wrap=True, highlight=False)
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


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run the DICOM listener (C-ECHO, C-STORE) and the ingest workers until SIGTERM or Ctrl-C."""
    from bridge.serve import serve as run_service

    run_service(_settings(config))


@app.command()
def pull(
    remote: Annotated[str, typer.Argument(help="A configured remote: the name of a remotes entry.")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project the studies belong to.")],
    patient_id: Annotated[list[str], typer.Option("--patient-id", help="Patient ID (repeatable).")] = [],  # noqa: B006
    patient_ids_file: Annotated[
        Path | None, typer.Option("--patient-ids-file", help="CSV file, patient IDs in the first column.")
    ] = None,
    accession: Annotated[list[str], typer.Option("--accession", help="Accession number (repeatable).")] = [],  # noqa: B006
    study_uid: Annotated[list[str], typer.Option("--study-uid", help="Study Instance UID (repeatable).")] = [],  # noqa: B006
    modality: Annotated[str | None, typer.Option(help="Modality in study, e.g. CT.")] = None,
    since: Annotated[str | None, typer.Option(help="Study date from, YYYYMMDD.")] = None,
    until: Annotated[str | None, typer.Option(help="Study date until, YYYYMMDD.")] = None,
    description: Annotated[str | None, typer.Option(help="Study description.")] = None,
    retrieve: Annotated[
        Retrieval | None, typer.Option(help="How to retrieve (default: the remote's `retrieve`).")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes de-identifying and indexing what arrives.")
    ] = DEFAULT_WORKERS,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Pull studies from a remote PACS (DICOMweb, C-MOVE or C-GET): fetch what the index lacks, de-identify,
    index, and check the result against the remote's instance list."""
    if workers > 1:
        from bridge import forkserver

        forkserver.start()  # its imports run on another core while this process imports the rest
    from bridge.pull import PullFilters, patient_ids_from_csv
    from bridge.pull_job import run_pull
    from bridge.remotes.base import RemoteError
    from bridge.remotes.connect import remote_settings

    settings = _settings(config)
    settings.project(project)
    chosen = remote_settings(settings, remote, retrieve.value if retrieve else None)
    for value, name in ((since, "--since"), (until, "--until")):
        if value is not None and not (len(value) == 8 and value.isdigit()):
            raise ConfigError(f"{name} {value!r}: use YYYYMMDD")
    ids = list(patient_id) + (patient_ids_from_csv(patient_ids_file) if patient_ids_file else [])
    filters = PullFilters(tuple(ids), tuple(accession), tuple(study_uid), modality, since, until, description)
    stop = threading.Event()
    announce = functools.partial(console.print, "stopping after the current study (Ctrl-C again: now)")
    try:
        with _progress("{task.description}", quiet=as_json) as bar, interrupt_requests_stop(stop, announce):
            report = run_pull(
                settings,
                chosen,
                project,
                filters,
                progress=BarProgress(bar),
                actor=getpass.getuser(),
                workers=workers,
                cancel=stop,
            )
    except RemoteError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.__dict__, indent=2))
    else:
        out = Console(soft_wrap=True, highlight=False)
        out.print(
            f"studies {report.studies}, series {report.series}, fetched {report.fetched}, "
            f"already present {report.present}, quarantined {report.quarantined}, missing {report.missing}"
        )
        for line in report.failed:
            out.print(f"  failed: {line}")
        if report.interrupted:
            out.print("  interrupted: run the same pull again to fetch the remaining studies")
    if report.interrupted:
        raise typer.Exit(130)  # as a shell reports a command stopped by SIGINT
    if report.failed:
        raise typer.Exit(1)


remotes_app = typer.Typer(help="Configured remote PACS.", no_args_is_help=True)
app.add_typer(remotes_app, name="remotes")


@remotes_app.command("check")
def remotes_check(
    name: Annotated[str, typer.Argument(help="A configured remote: the name of a remotes entry.")],
    config: ConfigOption = None,
) -> None:
    """Say plainly what works: C-ECHO to the DIMSE node, a QIDO-RS probe of the DICOMweb service."""
    from bridge.remotes.check import check_remote

    settings = _settings(config)
    results = check_remote(settings.remote(name), calling_ae=settings.dimse.ae_title)
    out = Console(soft_wrap=True, highlight=False)
    for result in results:
        out.print(f"{'ok  ' if result.ok else 'FAIL'} {result.what}: {result.detail}")
    if not all(result.ok for result in results):
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Create or migrate the research and vault schemas to the current version."""
    from bridge.runtime import database_for
    from storage import migrate

    settings = _settings(config)
    database = database_for(settings)
    try:
        migrate.upgrade(database)
    finally:
        database.dispose()
    Console().print(f"database schema at {migrate.head_revision('research')} (vault {migrate.head_revision('vault')})")


def main() -> None:
    """Entry point: configuration problems are one clear line, not a traceback."""
    try:
        app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
