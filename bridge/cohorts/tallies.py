"""Cohort tallies already counted: a page of the same filters (the same page again, a console re-polling,
the next request of an export's pages at the same offset) needs no new count while the data is unchanged.

A tally is kept with the index's generation, which every write to the tables a tally reads moves on, by
database triggers (migration 0008), whichever process or path wrote. A page run with a kept tally reads the
generation in its own statement, after its snapshot is taken, and uses the tally only if it has not moved.

- SQLite: one row that row triggers bump in the writer's transaction. Writers are serialised by the
  database, and the tally's statement reads the row in its own snapshot: a tally is kept with the generation
  of exactly the data it counted.
- PostgreSQL: a sequence that statement triggers advance, taking a shared advisory lock that the writer
  holds until its transaction is over (shared: writers never wait on each other or on readers, so the bump
  adds no lock to an ingest). A sequence is no snapshot: a writer may advance it and commit later. So a
  tally is kept only when the generation read before its statement (`generation_now`) is still the one its
  statement read, and no writer held the lock between the two (`writers_in_flight`, asked after the first
  read): a writer not yet visible to the tally had either not started (then it moves the generation on
  later) or held the lock.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import BigInteger, Engine, select, text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session

V = TypeVar("V")
WRITERS_LOCK_CLASS = 7_062_001  # the first key of the writers' advisory lock; the second is the schema's hash
_WRITERS = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND classid = {WRITERS_LOCK_CLASS}"
    " AND objid::bigint = (hashtext(current_schema())::bigint & 4294967295))"
)


class generation(FunctionElement[int]):  # noqa: N801  (used as a function: `generation()`)
    """The index's generation, as a column of the statement that reads the data."""

    type = BigInteger()
    inherit_cache = True


@compiles(generation, "sqlite")
def _sqlite_generation(_element: generation, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(SELECT value FROM indexgeneration WHERE id = 1)"


@compiles(generation, "postgresql")
def _postgresql_generation(_element: generation, _compiler: SQLCompiler, **_kw: Any) -> str:
    return "(SELECT last_value FROM index_generation)"


def generation_now(session: Session) -> int:
    return int(session.execute(select(generation())).scalar_one())


def writers_in_flight(session: Session) -> bool:
    """Whether a writer holds the lock (PostgreSQL; SQLite's snapshot makes the question moot)."""
    return session.get_bind().dialect.name == "postgresql" and bool(session.execute(text(_WRITERS)).scalar_one())


@dataclass(frozen=True)
class Tally:
    """What a page needs of the whole cohort: the total, and ordered by subject, the subjects (codes) that hold
    the page and how many rows come before the first of them (None when not ordered by subject)."""

    total: int
    generation: int
    first: str | None = None
    last: str | None = None
    before: int | None = None


class Recent(Generic[V]):
    """The most recently used values, by key (thread-safe: the API runs routes on a thread pool)."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._kept: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> V | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: Hashable, value: V) -> None:
        with self._lock:
            self._kept[key] = value
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)


Tallies = Recent[Tally]


_OF_ENGINE: weakref.WeakKeyDictionary[Engine, Tallies] = weakref.WeakKeyDictionary()
_OF_ENGINE_LOCK = threading.Lock()


def of_engine(engine: Engine) -> Tallies:
    """The tallies counted on `engine`'s database (they go with the engine: a new database starts empty,
    even at the same address)."""
    with _OF_ENGINE_LOCK:
        found = _OF_ENGINE.get(engine)
        if found is None:
            found = _OF_ENGINE[engine] = Recent()
        return found
