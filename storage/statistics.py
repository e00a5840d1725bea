"""Planner statistics of the research tables, kept fresh by the service itself.

Cohort and search queries are planned from them: SQLite, which never gathers statistics on its own, reads a
whole table where an index answers in a tenth of the time (measured by `bench/query.py`: 50-60 ms without,
25-35 ms with, at 200,000 series). PostgreSQL's autovacuum analyzes on its own, unless a server runs
without it. So `refresh` analyzes a table that was never analyzed or has grown by half since: a doubling
costs one ANALYZE (0.35 s for 2,000,000 instances on SQLite), a steady trickle almost none.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection, Engine, text

logger = logging.getLogger(__name__)

TABLES = ("subject", "timepoint", "series", "instance")
GROWTH = 0.5  # analyze again once a table has grown by this fraction since its last analysis


def refresh(engine: Engine) -> list[str]:
    """Analyze the research tables whose statistics are missing or stale; their names."""
    with engine.connect() as connection:
        stale = [table for table in TABLES if _is_stale(connection, table)]
        connection.rollback()
    if stale:
        with engine.begin() as connection:
            for table in stale:
                connection.exec_driver_sql(f"ANALYZE {table}")  # names from TABLES, never from input
        logger.info("planner statistics refreshed: %s", ", ".join(stale))
    return stale


def _is_stale(connection: Connection, table: str) -> bool:
    rows, analyzed = _rows_now_and_analyzed(connection, table)
    if not rows:
        return False
    return analyzed is None or rows > analyzed * (1 + GROWTH)


def _rows_now_and_analyzed(connection: Connection, table: str) -> tuple[int, int | None]:
    """The table's rows (estimated where counting would be slow) and how many it had when last analyzed."""
    if connection.dialect.name == "sqlite":
        # ids only grow: the largest is the row count, give or take deletions, found in the primary key
        rows = connection.execute(text(f"SELECT max(rowid) FROM {table}")).scalar() or 0
        has_stats = connection.execute(
            text("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'")
        ).scalar()
        if not has_stats:
            return rows, None
        # each of a table's sqlite_stat1 rows begins with the number of rows it had then
        stat = connection.execute(text("SELECT stat FROM sqlite_stat1 WHERE tbl = :t LIMIT 1"), {"t": table}).scalar()
        return rows, int(stat.split()[0]) if stat else None
    found = connection.execute(
        text(
            "SELECT n_live_tup, n_mod_since_analyze, coalesce(last_analyze, last_autoanalyze) IS NOT NULL "
            "FROM pg_stat_user_tables WHERE relid = to_regclass(:t)"
        ),
        {"t": table},
    ).one_or_none()
    if found is None:
        return 0, None
    live, modified, analyzed = found
    if not analyzed:
        return max(live, modified), None
    return live, max(live - modified, 0)
