"""The `pacs-bridge` command line: one module per command group, each reading the configuration,
configuring logging and calling the services.

Each command imports what it uses: the services' imports (pydicom, SQLAlchemy, the remotes) take most of a
command's start-up, and a pull overlaps them with the start of its ingest workers.
"""

from __future__ import annotations

import sys

import typer

from bridge.cli import annotating, cohorts, db, export, importing, pull, serve, status, timepoints, users
from bridge.errors import ConfigError

app = typer.Typer(
    help="pacs-bridge: hospital PACS to research, de-identified and indexed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # tracebacks with locals could print identified values
)
app.command("import")(importing.import_command)
app.command("status")(status.status)
app.command("serve")(serve.serve_command)
app.command("pull")(pull.pull_command)
app.command("export")(export.export_command)
remotes_app = typer.Typer(help="Configured remote PACS.", no_args_is_help=True)
remotes_app.command("check")(pull.remotes_check)
app.add_typer(remotes_app, name="remotes")
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
db_app.command("upgrade")(db.db_upgrade)
app.add_typer(db_app, name="db")
app.add_typer(cohorts.app, name="cohort")
app.add_typer(timepoints.app, name="timepoints")
app.add_typer(users.app, name="users")
app.add_typer(annotating.app, name="annotations")
app.add_typer(annotating.tasks_app, name="tasks")
app.add_typer(annotating.deliveries_app, name="deliveries")


def main() -> None:
    """Entry point: configuration problems are one clear line, not a traceback."""
    try:
        app()
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
