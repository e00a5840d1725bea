"""Exports started from the console: each runs in a thread of the HTTP process, into
`storage.exports_dir/PROJECT/NAME/` (a second export of the same name resumes it), and reports its progress
to the page that polls it. The same `bridge.export` code as `pacs-bridge export`, audited the same way."""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from bridge.cohorts import saved
from bridge.export import selection
from bridge.export.folder import export
from bridge.export.formats import Format
from bridge.settings import Settings
from storage import audit
from storage.db import Database

logger = logging.getLogger(__name__)


@dataclass
class ExportJob:
    id: int
    project: str
    name: str  # a saved cohort, or a snapshot COHORT@N
    form: Format
    target: Path
    started_by: str
    total: int = 0  # instances to write (known once the selection is made)
    done: int = 0
    state: str = "running"  # running | finished | failed
    summary: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def percent(self) -> int:
        return 100 if self.state != "running" else int(100 * self.done / self.total) if self.total else 0


class Exports:
    """The console's export jobs of this process (kept until it stops; the files stay)."""

    def __init__(self, settings: Settings, database: Database) -> None:
        self.settings = settings
        self.database = database
        self.jobs: dict[int, ExportJob] = {}
        self._ids = itertools.count(1)

    def start(self, *, project: str, name: str, form: Format, actor: str) -> ExportJob:
        """Check the name now (a clear error on the page), then export in the background."""
        with self.database.reading() as session:
            if "@" in name:
                saved.find_snapshot(session, name, [project])
            else:
                saved.find(session, name, [project])
        target = self.settings.storage.exports_dir / project / name.replace("@", "_snapshot_")
        job = ExportJob(id=next(self._ids), project=project, name=name, form=form, target=target, started_by=actor)
        self.jobs[job.id] = job
        threading.Thread(target=self._run, args=(job,), name=f"export-{job.id}", daemon=True).start()
        return job

    def _run(self, job: ExportJob) -> None:
        store, masks = self.settings.storage.store_dir, self.settings.storage.annotations_dir
        try:
            with self.database.reading() as session:
                if "@" in job.name:
                    _, snapshot = saved.find_snapshot(session, job.name, [job.project])
                    chosen, project_id = selection.of_snapshot(session, snapshot, store, masks), snapshot.project_id
                else:
                    _, cohort = saved.find(session, job.name, [job.project])
                    chosen = selection.of_cohort(session, saved.filters_of(cohort), store, masks)
                    project_id = cohort.project_id
            job.total = chosen.instances

            def advance(n: int) -> None:
                with job.lock:
                    job.done += n

            report = export(chosen, job.target, job.form, progress=advance)
            detail = f"{job.form} {report.written} written, {report.unchanged} unchanged, {len(report.failed)} failed"
            with self.database.session() as session:
                audit.record_event(
                    session,
                    actor=job.started_by,
                    action="export",
                    object=f"cohort:{job.name}",
                    project_id=project_id,
                    detail=detail,
                )
            job.summary = f"{len(report.entries)} files: {detail}" + (
                f"; {len(report.missing)} no longer in the index" if report.missing else ""
            )
            job.state = "failed" if report.failed else "finished"
        except Exception:  # the page says it failed; the log has why (de-identified paths only)
            logger.exception("console export %d of %s failed", job.id, job.name)
            job.state, job.summary = "failed", "the export failed: see the service log"
