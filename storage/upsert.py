"""Insert-or-ignore, the one dialect-specific statement the storage layer needs.

Resends and parallel workers insert the same row twice; the unique constraint decides, never a prior
SELECT (which races between nodes). Statements carry no values, so SQLAlchemy compiles each one once and
reuses it; rows are passed as execution parameters.
"""

from __future__ import annotations

from functools import cache

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session


def insert_ignore(session: Session, table: Table) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for the session's dialect (SQLite or PostgreSQL)."""
    return _statement(session.get_bind().dialect.name, table)


@cache
def _statement(dialect: str, table: Table) -> Insert:
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"database dialect {dialect!r} is not supported (use SQLite or PostgreSQL)")


def insert_ignore_one(session: Session, table: Table, row: dict[str, object]) -> bool:
    """Insert one row unless its unique key exists; True when this call inserted it."""
    statement = insert_ignore(session, table).returning(table.c[next(iter(table.primary_key.columns)).name])
    return session.execute(statement, row).first() is not None
