"""`pacs-bridge pull` and `pacs-bridge remotes check`: studies from a remote PACS, and whether it answers."""

from __future__ import annotations

import functools
import getpass
import json
import sys
import threading
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import Progress, TaskID

from bridge.cli.common import DEFAULT_WORKERS, ConfigOption, console, load, output, progress_bar
from bridge.errors import ConfigError
from bridge.process.signals import interrupt_requests_stop
from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.wiring import Runtime


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


def pull_command(
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
        from bridge.process import forkserver

        forkserver.start()  # its imports run on another core while this process imports the rest
    from bridge.errors import RemoteError
    from bridge.pull.filters import PullFilters, patient_ids_from_csv
    from bridge.pull.job import run_pull
    from bridge.remotes.connect import remote_settings
    from bridge.wiring import Runtime

    settings = load(config)
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
        with (
            Runtime.start(settings) as runtime,
            progress_bar("{task.description}", quiet=as_json) as bar,
            interrupt_requests_stop(stop, announce),
        ):
            report = run_pull(
                settings,
                runtime,
                chosen,
                project,
                filters,
                progress=BarProgress(bar),
                actor=getpass.getuser(),
                workers=workers,
                cancel=stop,
                open_services=functools.partial(Runtime.open, settings),
                receiving=functools.partial(_receiving, settings, runtime),
            )
    except RemoteError as error:
        print(f"error: {error}", file=sys.stderr)
        raise typer.Exit(1) from None
    if as_json:
        print(json.dumps(report.__dict__, indent=2))
    else:
        out = output()
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


def _receiving(settings: Settings, runtime: Runtime, called: str) -> AbstractContextManager[None]:
    """C-MOVE into the running `serve`'s listener, or into one this pull runs (never with the schedules)."""
    from bridge.serve import receiving  # the service's intake: imported only by a C-MOVE pull

    return receiving(settings, runtime, called)


def remotes_check(
    name: Annotated[str, typer.Argument(help="A configured remote: the name of a remotes entry.")],
    config: ConfigOption = None,
) -> None:
    """Say plainly what works: C-ECHO to the DIMSE node, a QIDO-RS probe of the DICOMweb service."""
    from bridge.remotes.check import check_remote

    settings = load(config)
    results = check_remote(settings.remote(name), calling_ae=settings.dimse.ae_title)
    out = output()
    for result in results:
        out.print(f"{'ok  ' if result.ok else 'FAIL'} {result.what}: {result.detail}")
    if not all(result.ok for result in results):
        raise typer.Exit(1)
