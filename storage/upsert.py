"""Insert-or-ignore, the one dialect-specific statement the storage layer needs.

Resends and parallel workers insert the same row twice; the unique constraint decides, never a prior
SELECT (which races between nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert
from sqlmodel import Session


def insert_ignore(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> Insert:
    """INSERT ... ON CONFLICT DO NOTHING for the session's dialect (SQLite or PostgreSQL)."""
    name = session.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert(table).values(list(rows)).on_conflict_do_nothing()
    if name == "sqlite":
        return sqlite.insert(table).values(list(rows)).on_conflict_do_nothing()
    raise NotImplementedError(f"database dialect {name!r} is not supported (use SQLite or PostgreSQL)")
