"""`pacs-bridge import`: folders of DICOM files (CD exports, research shares) into a project."""

from __future__ import annotations

import functools
import getpass
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bridge.cli.common import DEFAULT_WORKERS, ConfigOption, load, output, progress_bar
from bridge.errors import ConfigError

if TYPE_CHECKING:
    from bridge.ingest.importer import ImportSummary

_LISTED = 10  # files listed by name in the human summary


def import_command(
    paths: Annotated[list[Path], typer.Argument(help="Files and folders to import (walked recursively).")],
    project: Annotated[str, typer.Option("--project", "-p", help="Project the studies belong to.")],
    config: ConfigOption = None,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Parallel worker processes.")] = DEFAULT_WORKERS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Import DICOM files from folders: de-identify, store and index them."""
    from bridge.ingest.importer import discover, import_files
    from bridge.wiring import Runtime
    from storage import statistics

    settings = load(config)
    settings.project(project)
    for path in paths:
        if not path.exists():
            raise ConfigError(f"{path}: no such file or folder")
    with Runtime.start(settings) as runtime:
        files = list(discover(paths))
        service = runtime.ingest(f"import:{getpass.getuser()}")
        with progress_bar("importing", quiet=as_json) as bar:
            task = bar.add_task("import", total=len(files))
            summary = import_files(
                service,
                files,
                project=project,
                workers=workers,
                open_services=functools.partial(Runtime.open, settings),
                progress=lambda _result: bar.advance(task),
            )
        statistics.refresh(runtime.database.research_engine)  # a big import would otherwise be planned blind
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
    out = output()
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
