"""The projects overview: per project what the index holds, what was refused, how its pulls and deliveries
stand, and the spool's depth (what was received and not yet indexed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func
from sqlmodel import col, select

from bridge.access.users import Principal
from bridge.pull.schedules import ScheduleStatus, statuses
from bridge.settings import Settings
from storage import queries
from storage.db import Database
from storage.models.annotations import Delivery
from storage.models.research import Project
from storage.spool import Spool


@dataclass
class ProjectOverview:
    counts: queries.ProjectCounts
    schedules: list[ScheduleStatus] = field(default_factory=list)
    deliveries: dict[str, int] = field(default_factory=dict)  # state -> count


@dataclass
class Overview:
    projects: list[ProjectOverview]
    spool_depth: int

    @property
    def schedules(self) -> list[ScheduleStatus]:
        return [s for p in self.projects for s in p.schedules]


def deliveries_by_state(database: Database) -> dict[str, dict[str, int]]:
    """Project name -> delivery state -> count."""
    statement = (
        select(Project.name, Delivery.state, func.count())
        .join(Project, col(Project.id) == Delivery.project_id)
        .group_by(Project.name, Delivery.state)
    )
    found: dict[str, dict[str, int]] = {}
    with database.reading() as session:
        for name, state, count in session.exec(statement).all():
            found.setdefault(name, {})[state] = int(count)
    return found


def projects(settings: Settings, database: Database, spool: Spool, who: Principal) -> Overview:
    with database.reading() as session:
        counts = queries.project_counts(session, list(settings.projects))
    visible = set(who.visible([c.name for c in counts]))
    schedules = statuses(settings, database)
    deliveries = deliveries_by_state(database)
    rows = [
        ProjectOverview(
            counts=c,
            schedules=[s for s in schedules if s.project == c.name],
            deliveries=deliveries.get(c.name, {}),
        )
        for c in counts
        if c.name in visible
    ]
    return Overview(projects=rows, spool_depth=spool.backlog())
