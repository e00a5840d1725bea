"""Engines and units of work. Engines are created once at start-up; a unit of work is one transaction.

The vault may live in its own database. When it does, a unit of work commits the vault first: a crash
between the two commits leaves a mapping without research rows (harmless, reused on resend), never research
rows that cannot be re-identified.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlmodel import Session


@dataclass
class UnitOfWork:
    research: Session
    vault: Session


def make_engine(url: str) -> Engine:
    """An engine with the settings each dialect needs for concurrent, durable use."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # transactions are begun by _sqlite_begin_immediate
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.close()


def _sqlite_begin_immediate(connection: Any) -> None:
    """Take SQLite's write lock when a transaction begins: a read that later writes would otherwise fail
    with 'database is locked' when another process wrote in between (WAL snapshot upgrade)."""
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The research engine and the vault engine (the same one unless a vault URL is configured)."""

    def __init__(self, url: str, vault_url: str | None = None) -> None:
        self.research_engine = make_engine(url)
        self.vault_engine = make_engine(vault_url) if vault_url else self.research_engine

    @property
    def vault_is_separate(self) -> bool:
        return self.vault_engine is not self.research_engine

    @contextmanager
    def unit_of_work(self) -> Iterator[UnitOfWork]:
        research = Session(self.research_engine, expire_on_commit=False)
        vault = Session(self.vault_engine, expire_on_commit=False) if self.vault_is_separate else research
        try:
            yield UnitOfWork(research=research, vault=vault)
            if vault is not research:
                vault.commit()
            research.commit()
        except BaseException:
            research.rollback()
            if vault is not research:
                vault.rollback()
            raise
        finally:
            research.close()
            if vault is not research:
                vault.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A read-mostly research session (status, queries); commits if the block succeeds."""
        with self.unit_of_work() as work:
            yield work.research

    def dispose(self) -> None:
        self.research_engine.dispose()
        if self.vault_is_separate:
            self.vault_engine.dispose()
