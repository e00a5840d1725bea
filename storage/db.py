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

READS_ONLY = "reads_only"  # in the `info` of a session from `Database.reading`


@dataclass
class UnitOfWork:
    research: Session
    vault: Session


def make_engine(url: str, *, reads_only: bool = False) -> Engine:
    """An engine with the settings each dialect needs for concurrent, durable use. On SQLite, a reading
    engine begins its transactions deferred: queries then never wait for the write lock ingest holds."""
    if url.startswith("sqlite"):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_deferred if reads_only else _sqlite_begin_immediate)
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


def _sqlite_begin_deferred(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")


class Database:
    """The research engine and the vault engine (the same one unless a vault URL is configured)."""

    def __init__(self, url: str, vault_url: str | None = None) -> None:
        self.research_engine = make_engine(url)
        self.vault_engine = make_engine(vault_url) if vault_url else self.research_engine
        self._url = url
        self._reading_engine: Engine | None = None

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

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """A research session for queries that write nothing (the API, cohorts). Closing it ends its transaction
        (the pool rolls back) and leaves the rows it loaded readable."""
        if self._reading_engine is None:
            url = self._url
            self._reading_engine = (
                make_engine(url, reads_only=True) if url.startswith("sqlite") else self.research_engine
            )
        session = Session(self._reading_engine, info={READS_ONLY: True})
        try:
            yield session
        finally:
            session.close()

    def dispose(self) -> None:
        if self._reading_engine is not None and self._reading_engine is not self.research_engine:
            self._reading_engine.dispose()
        self.research_engine.dispose()
        if self.vault_is_separate:
            self.vault_engine.dispose()
