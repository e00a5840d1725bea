"""A series carries a copy of its timepoint's subject, date and place on the clock (the cohort query filters and
counts on them without a join): the copies are written with the series, follow every new placement and label,
and are filled in for series indexed before they existed. On SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from bridge.cohorts.filters import CohortFilters, Level, Page
from bridge.cohorts.query import run
from bridge.settings import VisitSettings
from bridge.timepoints import label_by_hand, relabel
from bridge.wiring import Runtime
from storage import migrate, queries
from storage.db import Database
from storage.models.research import Series, Timepoint
from tests.cohorts import population
from tests.conftest import make_settings

S, T = Series.__table__.c, Timepoint.__table__.c  # type: ignore[attr-defined]
COPIES = [
    (S.subject_id, T.subject_id),
    (S.study_date, T.study_date),
    (S.days_from_baseline, T.days_from_baseline),
    (S.timepoint_index, T.timepoint_index),
    (S.timepoint_label, T.label),
]


@pytest.fixture
def trial(tmp_path: Path, database_url: str) -> Iterator[Runtime]:
    with population.ingested(tmp_path, database_url) as runtime:
        yield runtime


def copies_and_originals(database: Database) -> list[tuple[tuple[object, ...], tuple[object, ...]]]:
    """Per series, (its copies, its timepoint's columns)."""
    statement = select(*(c for c, _ in COPIES), *(o for _, o in COPIES)).join_from(
        Series.__table__,  # type: ignore[attr-defined]
        Timepoint.__table__,  # type: ignore[attr-defined]
        S.timepoint_id == T.id,
    )
    with database.reading() as session:
        rows = session.execute(statement).all()
    return [(tuple(row[: len(COPIES)]), tuple(row[len(COPIES) :])) for row in rows]


def assert_in_step(database: Database) -> list[tuple[object, ...]]:
    pairs = copies_and_originals(database)
    assert pairs and all(copy == original for copy, original in pairs)
    return [copy for copy, _ in pairs]


def labels(runtime: Runtime, **filters: object) -> list[tuple[str, str | None, int | None]]:
    with runtime.database.reading() as session:
        result = run(session, CohortFilters(project="lung", **filters), Page(level=Level.SERIES, limit=1000))  # type: ignore[arg-type]
    return [(r.subject, r.timepoint_label, r.days_from_baseline) for r in result.rows]  # type: ignore[union-attr]


def test_ingest_writes_the_copies_with_each_series(trial: Runtime) -> None:
    copies = assert_in_step(trial.database)
    assert len(copies) == 16 and all(subject is not None and date is not None for subject, date, *_ in copies)


def test_an_earlier_study_arriving_later_moves_the_copies_too(tmp_path: Path, database_url: str) -> None:
    runtime = Runtime.start(make_settings(tmp_path, database_url, lung=population.PROJECT))
    try:
        service = runtime.ingest("test")
        late, early = (
            population.write(tmp_path / n, trial={7: [population.Scan(d)]}) for n, d in (("a", 56), ("b", 0))
        )
        for path in late:
            service.ingest(path, project="lung", source="test")
        assert [(label, days) for _, _, days, _, label in assert_in_step(runtime.database)] == [("baseline", 0)]
        for path in early:
            service.ingest(path, project="lung", source="test")
        moved = sorted((days, index, label) for _, _, days, index, label in assert_in_step(runtime.database))
        assert moved == [(0, 0, "baseline"), (56, 1, "week8")]
        assert [days for _, _, days in labels(runtime, label=["week8"])] == [56]
    finally:
        runtime.close()


def test_a_new_schedule_and_a_hand_set_label_reach_the_copies(trial: Runtime) -> None:
    late = next(subject for subject, label, _ in labels(trial) if label == "unscheduled")  # the day-200 scan
    schedule = [VisitSettings(**v) for v in population.VISITS] + [
        VisitSettings(label="week28", from_day=190, to_day=210)
    ]
    with trial.database.session() as session:
        project_id = queries.project_id_of(session, "lung")
        assert project_id is not None
        relabel(session, project_id=project_id, visits=schedule)
    assert_in_step(trial.database)
    assert [(s, days) for s, _, days in labels(trial, label=["week28"])] == [(late, 200)]
    assert labels(trial, label=["unscheduled"]) == []

    with trial.database.session() as session:
        label_by_hand(session, project="lung", subject_code=late, which="60", label="V3", visits=schedule, actor="test")
    assert_in_step(trial.database)
    assert labels(trial, label=["V3"]) == [(late, "V3", 60)]
    with trial.database.session() as session:  # handed back to the rules
        label_by_hand(session, project="lung", subject_code=late, which="60", label=None, visits=schedule, actor="t")
    assert_in_step(trial.database)
    assert labels(trial, label=["V3"]) == [] and (late, "week8", 60) in labels(trial, label=["week8"])


def test_the_migration_fills_the_copies_of_series_indexed_before(tmp_path: Path, database_url: str) -> None:
    from alembic import command

    database = Database(database_url)
    try:
        for target, engine, revision in (
            ("research", database.research_engine, "0006_annotations"),
            ("vault", database.vault_engine, "head"),
        ):
            config = migrate._config(target)  # type: ignore[arg-type]
            with engine.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, revision)
        now = dt.datetime.now(dt.UTC)
        with database.research_engine.begin() as connection:
            connection.execute(
                text("INSERT INTO project (id, name, created_at) VALUES (1, 'lung', :now)"), {"now": now}
            )
            connection.execute(
                text("INSERT INTO subject (id, project_id, subject_code, created_at) VALUES (5, 1, 'LUNG-0005', :now)"),
                {"now": now},
            )
            for tid, days, index, label in ((10, 0, 0, "baseline"), (11, 60, 1, None)):
                connection.execute(
                    text(
                        "INSERT INTO timepoint (id, project_id, subject_id, study_uid, study_date, days_from_baseline,"
                        " timepoint_index, label, modalities, series_count, instance_count, created_at)"
                        " VALUES (:id, 1, 5, :uid, :date, :days, :index, :label, 'CT', 1, 0, :now)"
                    ),
                    {
                        "id": tid,
                        "uid": f"2.25.{tid}",
                        "date": dt.date(2024, 1, 1) + dt.timedelta(days=days),
                        "days": days,
                        "index": index,
                        "label": label,
                        "now": now,
                    },
                )
                connection.execute(
                    text(
                        "INSERT INTO series (project_id, timepoint_id, series_uid, modality, instance_count,"
                        " created_at) VALUES (1, :tid, :uid, 'CT', 0, :now)"
                    ),
                    {"tid": tid, "uid": f"2.25.9{tid}", "now": now},
                )
        wanted = [(5, dt.date(2024, 1, 1), 0, 0, "baseline"), (5, dt.date(2024, 3, 1), 60, 1, None)]
        migrate.upgrade(database)
        assert sorted(assert_in_step(database), key=lambda copy: str(copy[2])) == wanted
        config = migrate._config("research")
        with database.research_engine.begin() as connection:  # and back, and up again
            config.attributes["connection"] = connection
            command.downgrade(config, "0006_annotations")
        assert "timepoint_label" not in {c["name"] for c in inspect(database.research_engine).get_columns("series")}
        migrate.upgrade(database)
        assert sorted(assert_in_step(database), key=lambda copy: str(copy[2])) == wanted
    finally:
        database.dispose()
