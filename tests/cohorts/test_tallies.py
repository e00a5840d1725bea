"""Kept tallies, on SQLite and PostgreSQL: the same page again is answered without counting the cohort again,
and any write to the data the tally counted (through the ingest, or by hand in SQL on another connection)
makes the next page count afresh, even one that was in flight while the tally was counted; and writers do not
wait on each other to say that they wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, create_engine, event, text
from sqlalchemy.sql import visitors

from bridge.cohorts.filters import CohortFilters, Level, Page
from bridge.cohorts.query import Result, run, tally
from bridge.wiring import Runtime
from tests import factory
from tests.cohorts import population
from tests.conftest import postgres_schema_url

COUNTING = "tally AS"  # the tally's CTE, in a page's statement
EXAMPLE = {"modality": ["CT"], "body_part": ["CHEST"], "slice_thickness_max": 2.5, "min_followups": 2}


@pytest.fixture(params=["sqlite", "postgresql"])
def trial(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Runtime]:
    urls = iter([f"sqlite:///{tmp_path / 'bridge.db'}"]) if request.param == "sqlite" else postgres_schema_url()
    for url in urls:
        with population.ingested(tmp_path, url) as runtime:
            yield runtime


def statements_of(action: Any) -> tuple[Any, list[str]]:
    """What `action` returned, and the SQL statements it sent to the database."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)  # every engine: SQLite reads on an engine of their own
    try:
        return action(), sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def example(runtime: Runtime, level: Level = Level.SUBJECT, **page: Any) -> Result:
    with runtime.database.reading() as session:
        return run(session, CohortFilters(project="lung", **EXAMPLE), Page(level=level, **page))  # type: ignore[arg-type]


def test_the_same_page_again_is_answered_without_counting(trial: Runtime) -> None:
    for level in Level:
        first, counting = statements_of(lambda at=level: example(trial, at, limit=1, offset=1))
        again, kept = statements_of(lambda at=level: example(trial, at, limit=1, offset=1))
        assert again == first and first.total > 1 and len(first.rows) == 1
        assert any(COUNTING in sql for sql in counting)  # the tally, counted with the page
        assert kept and not any(COUNTING in sql for sql in kept)  # the page alone, and the generation
    past_end, _ = statements_of(lambda: example(trial, limit=5, offset=50))
    again, kept = statements_of(lambda: example(trial, limit=5, offset=50))
    assert again == past_end and again.rows == [] and again.total == 2
    assert not any(COUNTING in sql for sql in kept)


def test_an_ingested_subject_is_counted_on_the_next_page(trial: Runtime, tmp_path: Path) -> None:
    before = example(trial)
    assert {row.subject for row in before.rows} == population.IN_EXAMPLE  # type: ignore[union-attr]
    newcomer = {7: [population.Scan(0), population.Scan(56), population.Scan(112)]}
    service = trial.ingest("test")
    for path in factory.write_files(population.datasets(newcomer), tmp_path / "more"):  # type: ignore[arg-type]
        service.ingest(path, project="lung", source="test")
    after = example(trial)
    assert after.total == before.total + 1
    assert {row.subject for row in after.rows} == population.IN_EXAMPLE | {"LUNG-0007"}  # type: ignore[union-attr]


def test_a_change_made_by_hand_on_another_connection_is_counted(trial: Runtime) -> None:
    assert example(trial, Level.SERIES).total == 6
    outside = create_engine(trial.database.research_engine.url)  # a data manager's SQL session, not the bridge's
    try:
        with outside.begin() as connection:
            connection.execute(text("UPDATE series SET slice_thickness = 5.0 WHERE slice_thickness = 2.5"))
        assert example(trial, Level.SERIES).total == 3  # subject 1's last follow-up is too thick now
    finally:
        outside.dispose()


def test_every_table_a_tally_reads_bumps_the_generation(trial: Runtime) -> None:
    every_kind = CohortFilters(project="lung", subject=["LUNG-0001"], segmented=["liver"], min_timepoints=1)
    read: set[str] = set()
    for by_subject in (True, False):
        statement = tally(every_kind, Page(level=Level.TIMEPOINT), by_subject)
        read |= {t.name for t in visitors.iterate(statement) if isinstance(t, Table)}
    assert {"series", "subject", "project", "timepoint", "annotation"} <= read
    engine = trial.database.research_engine
    with engine.connect() as connection:
        catalog = (
            "SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger WHERE tgname LIKE '%bumps_generation'"
            if engine.dialect.name == "postgresql"
            else "SELECT DISTINCT tbl_name FROM sqlite_master WHERE type = 'trigger' AND name LIKE '%bumps_generation'"
        )
        rows = connection.execute(text(catalog))
        bumping = {str(name).rsplit(".", 1)[-1].strip('"') for (name,) in rows}
    assert read <= bumping, read - bumping


def test_a_tally_counted_while_a_write_is_in_flight_is_not_kept(trial: Runtime) -> None:
    assert example(trial, Level.SERIES).total == 6
    outside = create_engine(trial.database.research_engine.url)
    try:
        with outside.connect() as connection:
            writing = connection.begin()
            connection.execute(text("UPDATE series SET slice_thickness = 5.0 WHERE slice_thickness = 2.5"))
            assert example(trial, Level.SERIES).total == 6  # the write is not committed: not seen, not counted
            writing.commit()
        assert example(trial, Level.SERIES).total == 3  # counted afresh: the tally of the moment before was not kept
    finally:
        outside.dispose()


def test_writers_do_not_wait_on_each_other_to_move_the_generation(trial: Runtime) -> None:
    if trial.database.research_engine.dialect.name != "postgresql":
        pytest.skip("SQLite serialises every writer anyway")
    outside = create_engine(trial.database.research_engine.url)
    try:
        with outside.connect() as first, outside.connect() as second:
            first.begin(), second.begin()
            touch = "UPDATE series SET instance_count = instance_count WHERE id = (SELECT {}(id) FROM series)"
            first.execute(text(touch.format("min")))
            second.execute(text("SET LOCAL lock_timeout = '2s'"))  # a wait on the first writer fails, not hangs
            second.execute(text(touch.format("max")))
            second.commit()
            first.commit()
        assert example(trial, Level.SERIES).total == 6
    finally:
        outside.dispose()


def test_a_session_that_writes_counts_afresh_and_keeps_nothing(trial: Runtime) -> None:
    """Its own writes are in what it counts, and may yet be rolled back: a tally of them is never kept."""
    filters, page = CohortFilters(project="lung", **EXAMPLE), Page(level=Level.SERIES)
    with trial.database.session() as session:
        session.execute(text("UPDATE series SET slice_thickness = 5.0 WHERE slice_thickness = 2.5"))
        own, counting = statements_of(lambda: run(session, filters, page))
        assert own.total == 3 and any(COUNTING in sql for sql in counting)
        session.rollback()
    with trial.database.session() as session:  # one write later, the generation is the rolled-back one's again
        session.execute(
            text("UPDATE series SET instance_count = instance_count WHERE id = (SELECT min(id) FROM series)")
        )
        session.commit()
    with trial.database.session() as session:
        again, counting = statements_of(lambda: run(session, filters, page))
    assert again.total == 6 and any(COUNTING in sql for sql in counting)  # counted again: nothing was kept
    assert example(trial, Level.SERIES).total == 6
