"""The service keeps the planner statistics of the research tables fresh itself (`storage.statistics`): a table
never analyzed, or grown by half since, is analyzed; one that has not grown is left alone. On SQLite (which
never analyzes on its own) and PostgreSQL (whose test server runs without autovacuum, like some real ones)."""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import Engine, insert, text

from storage import migrate, statistics
from storage.db import Database
from storage.models.research import Project, Subject


def add_subjects(engine: Engine, first: int, count: int) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"id": n, "project_id": 1, "subject_code": f"LUNG-{n:05d}", "created_at": now}
        for n in range(first, first + count)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Subject), rows)


def refreshed(engine: Engine, wanted: list[str]) -> list[str]:
    """`refresh`, waiting (PostgreSQL) until the server's activity counters include the last inserts: a
    backend reports them within a second or so of its commit."""
    deadline = time.monotonic() + 10
    while True:
        found = statistics.refresh(engine)
        if found == wanted or time.monotonic() > deadline or engine.dialect.name == "sqlite":
            return found
        time.sleep(0.2)


def analyzed_rows(engine: Engine) -> int:
    """How many subjects the planner believes there are."""
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            stat = connection.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = 'subject' LIMIT 1")).scalar()
            return int(stat.split()[0])
        return int(connection.execute(text("SELECT reltuples FROM pg_class WHERE oid = 'subject'::regclass")).scalar())


def test_tables_are_analyzed_when_new_or_grown_by_half(database_url: str) -> None:
    database = Database(database_url)
    migrate.upgrade(database)
    engine = database.research_engine
    try:
        assert statistics.refresh(engine) == []  # empty tables: nothing to plan for
        with engine.begin() as connection:
            connection.execute(insert(Project), [{"id": 1, "name": "lung", "created_at": dt.datetime.now(dt.UTC)}])
        add_subjects(engine, 1, 400)
        assert refreshed(engine, ["subject"]) == ["subject"]
        assert analyzed_rows(engine) == 400
        assert statistics.refresh(engine) == []  # analyzed and not grown: left alone

        add_subjects(engine, 401, 100)  # a quarter more
        time.sleep(1.5 if engine.dialect.name == "postgresql" else 0)  # counters reported, still not stale
        assert statistics.refresh(engine) == []
        assert analyzed_rows(engine) == 400

        add_subjects(engine, 501, 200)  # now 700: grown by more than half
        assert refreshed(engine, ["subject"]) == ["subject"]
        assert analyzed_rows(engine) == 700
    finally:
        database.dispose()
