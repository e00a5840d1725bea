"""`pacs-bridge export`: a saved cohort (as it answers now) or a snapshot (as frozen) into a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bridge.cli.cohorts import actor
from bridge.cli.common import ConfigOption, load, output, progress_bar
from bridge.cli.filters import fail
from bridge.export.formats import Format


def export_command(
    name: Annotated[str, typer.Argument(help="A saved cohort, or a snapshot (COHORT@N).")],
    to: Annotated[Path, typer.Option("--to", help="The folder to write (created; an earlier export there resumes).")],
    form: Annotated[
        Format, typer.Option("--format", "-f", help="dicom files, or one NIfTI volume per series.")
    ] = Format.DICOM,
    project: Annotated[str | None, typer.Option("--project", "-p", help="Where the name is in several.")] = None,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Write the de-identified files (SUBJECT/LABEL_DAYS/NUMBER_MODALITY/) and manifest.csv/.json; run again to
    resume: only what is missing or differs by SHA-256 is written."""
    from bridge.cohorts import saved
    from bridge.export import selection
    from bridge.export.folder import export
    from bridge.wiring import open_database
    from storage import audit

    settings = load(config)
    database = open_database(settings)
    store, masks = settings.storage.store_dir, settings.storage.annotations_dir
    projects = [project] if project else None
    try:
        with database.reading() as session:
            if "@" in name:
                project_name, snapshot = saved.find_snapshot(session, name, projects)
                chosen, project_id = selection.of_snapshot(session, snapshot, store, masks), snapshot.project_id
            else:
                project_name, cohort = saved.find(session, name, projects)
                chosen = selection.of_cohort(session, saved.filters_of(cohort), store, masks)
                project_id = cohort.project_id
        with progress_bar("exporting", quiet=as_json) as bar:
            task = bar.add_task("export", total=chosen.instances)
            report = export(chosen, to, form, progress=lambda n: bar.advance(task, n))
        with database.session() as session:
            detail = f"{form} {report.written} written, {report.unchanged} unchanged, {len(report.failed)} failed"
            audit.record_event(
                session, actor=actor(), action="export", object=f"cohort:{name}", project_id=project_id, detail=detail
            )
    except saved.CohortError as exc:
        fail(str(exc))
    finally:
        database.dispose()
    summary = {
        "name": name,
        "project": project_name,
        "to": str(to),
        "format": form.value,
        "files": len(report.entries),
        "written": report.written,
        "unchanged": report.unchanged,
        "failed": report.failed,
        "missing": report.missing,
    }
    if as_json:
        print(json.dumps(summary))
    else:
        out = output()
        out.print(
            f"{name} -> {to}: {len(report.entries)} files ({report.written} written, {report.unchanged} unchanged)"
        )
        for line in report.failed:
            out.print(f"failed: {line}")
        if report.missing:
            out.print(f"{len(report.missing)} instances of the snapshot are no longer stored (listed in manifest.json)")
    if report.failed:
        raise typer.Exit(1)
