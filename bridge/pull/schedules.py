"""Pull schedules inside `serve`: APScheduler runs each configured pull; where each stands is in the database.

A run asks only for studies from the day its last successful run started (less `lookback_days`), so
follow-up timepoints arrive without anyone asking and old studies are not searched again. Runs missed
while the service was down are not replayed one by one: at start-up a schedule that was due runs once.
One run of a schedule at a time; a run still going when the next is due makes that one run late, once.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from bridge.errors import ConfigError, RemoteError
from bridge.ingest.workers import WorkerServices
from bridge.process.metrics import metrics
from bridge.pull.filters import PullFilters, patient_ids_from_csv
from bridge.pull.job import PullServices, run_pull
from bridge.pull.puller import PullReport
from bridge.remotes.connect import remote_settings
from bridge.settings import ScheduleSettings, Settings
from storage.db import Database
from storage.models.common import utcnow
from storage.models.research import ScheduleState

logger = logging.getLogger(__name__)


def trigger_of(schedule: ScheduleSettings) -> Any:
    seconds = schedule.interval_seconds
    if seconds is not None:
        return IntervalTrigger(seconds=seconds)
    assert schedule.cron is not None
    return CronTrigger.from_crontab(schedule.cron)


def next_due(schedule: ScheduleSettings, state: ScheduleState | None, now: dt.datetime) -> dt.datetime:
    """When the schedule runs next: now if it never ran or a run fell due since the last one started."""
    if state is None or state.last_started_at is None:
        return now
    last = _aware(state.last_started_at)
    seconds = schedule.interval_seconds
    if seconds is not None:
        due = last + dt.timedelta(seconds=seconds)
    else:
        due = trigger_of(schedule).get_next_fire_time(None, last.astimezone())
    return max(now, due)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)  # SQLite gives naive UTC back


def filters_for(schedule: ScheduleSettings, watermark: dt.date | None) -> PullFilters:
    """The run's filters: the schedule's, from the watermark (less the lookback) on, else from `since`."""
    since = schedule.since
    if watermark is not None:
        since = (watermark - dt.timedelta(days=schedule.lookback_days)).strftime("%Y%m%d")
    ids = list(schedule.patient_ids)
    if schedule.patient_ids_file is not None:
        ids += patient_ids_from_csv(schedule.patient_ids_file)
    return PullFilters(
        patient_ids=tuple(ids),
        accession_numbers=tuple(schedule.accession_numbers),
        modality=schedule.modality,
        date_from=since,
        description=schedule.description,
    )


def summary(report: PullReport) -> str:
    text = (
        f"studies {report.studies}, fetched {report.fetched}, already present {report.present}, "
        f"quarantined {report.quarantined}, missing {report.missing}"
    )
    if report.failed:
        text += f"; {len(report.failed)} failed, first: {report.failed[0]}"
    return text[:1024]


@dataclass(frozen=True)
class ScheduleStatus:
    name: str
    remote: str
    project: str
    when: str
    runs: int
    last_started_at: str | None
    last_ok: bool | None
    last_result: str | None
    next_due: str


def statuses(settings: Settings, database: Database) -> list[ScheduleStatus]:
    """Each configured schedule with its last result and next run (for `status`)."""
    now = utcnow()
    with database.reading() as session:
        states = {state.name: state for state in session.query(ScheduleState).all()}
    result = []
    for schedule in settings.schedules:
        state = states.get(schedule.name)
        started = (
            _aware(state.last_started_at).isoformat(timespec="seconds") if state and state.last_started_at else None
        )
        result.append(
            ScheduleStatus(
                name=schedule.name,
                remote=schedule.remote,
                project=schedule.project,
                when=f"every {schedule.every}" if schedule.every else f"cron {schedule.cron}",
                runs=state.runs if state else 0,
                last_started_at=started,
                last_ok=state.last_ok if state else None,
                last_result=state.last_result if state else None,
                next_due=next_due(schedule, state, now).isoformat(timespec="seconds"),
            )
        )
    return result


class Schedules:
    """The scheduler of `serve`: started after the listener, stopped before it (a running pull ends after
    its current study; the rest is fetched by the next run)."""

    def __init__(
        self, settings: Settings, services: PullServices, *, open_services: Callable[[], WorkerServices]
    ) -> None:
        self.settings = settings
        self.services = services
        self.database = services.database
        self.open_services = open_services
        self.stopping = threading.Event()
        self.scheduler = BackgroundScheduler(
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
        )

    def start(self) -> None:
        if not self.settings.schedules:
            return
        now = utcnow()
        with self.database.session() as session:
            states = {state.name: state for state in session.query(ScheduleState).all()}
        for schedule in self.settings.schedules:
            due = next_due(schedule, states.get(schedule.name), now)
            self.scheduler.add_job(self.run, trigger_of(schedule), args=[schedule], id=schedule.name, next_run_time=due)
            logger.info("schedule %s: next run %s", schedule.name, due.astimezone().isoformat(timespec="seconds"))
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.stopping.set()
            self.scheduler.shutdown(wait=True)

    def run(self, schedule: ScheduleSettings) -> None:
        """One run: record its start, pull, record the result (and the new watermark when it succeeded)."""
        started, today = utcnow(), dt.date.today()
        with self.database.unit_of_work() as work:
            state = work.research.get(ScheduleState, schedule.name) or ScheduleState(name=schedule.name)
            watermark = state.watermark
            state.runs += 1
            state.last_started_at = started
            work.research.add(state)
        logger.info("schedule %s: run started", schedule.name)
        ok = False
        try:
            filters = filters_for(schedule, watermark)
            remote = remote_settings(self.settings, schedule.remote, schedule.retrieve)
            report = run_pull(
                self.settings,
                self.services,
                remote,
                schedule.project,
                filters,
                actor=f"schedule:{schedule.name}",
                cancel=self.stopping,
                workers=self.settings.dimse.workers,
                open_services=self.open_services,
                receiving=_received_by_serve,
            )
            ok, result = not report.failed and not report.interrupted, summary(report)
        except (RemoteError, ConfigError) as error:  # messages are redacted of original UIDs
            result = str(error)[:1024]
        except Exception:
            logger.exception("schedule %s: run failed", schedule.name)
            result = "internal error: see the service log"
        with self.database.unit_of_work() as work:
            state = work.research.get(ScheduleState, schedule.name) or ScheduleState(name=schedule.name)
            state.last_finished_at = utcnow()
            state.last_ok = ok
            state.last_result = result
            if ok:
                state.watermark = today
            work.research.add(state)
        metrics().pull_runs.labels("ok" if ok else "failed").inc()
        logger.log(logging.INFO if ok else logging.WARNING, "schedule %s: %s", schedule.name, result)


def _received_by_serve(_called: str) -> AbstractContextManager[None]:
    """A schedule's C-MOVE pull is received by the listener of the `serve` it runs in."""
    return nullcontext()
