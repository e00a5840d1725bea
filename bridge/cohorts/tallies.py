"""Cohort tallies already counted: a page of the same filters (the same page again, a console re-polling,
the next request of an export's pages at the same offset) needs no new count while the data is unchanged.

A tally is kept with the index's generation (`storage.models.research.IndexGeneration`, bumped by database
triggers on every write to the tables a tally reads) read in the tally's own statement; a page run with a
kept tally reads the generation again in its own statement and is used only if the two match. So a kept
tally is never used on data it did not count, whichever process or path wrote it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, ScalarSelect, select

from storage.models.research import IndexGeneration

GENERATION = IndexGeneration.__table__.c.value  # type: ignore[attr-defined]


def generation() -> ScalarSelect[Any]:
    """The index's generation, as a column of the statement that reads the data (the same snapshot)."""
    return select(GENERATION).where(IndexGeneration.__table__.c.id == 1).scalar_subquery()  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Tally:
    """What a page needs of the whole cohort: the total, and ordered by subject, the subjects (codes) that hold
    the page and how many rows come before the first of them (None when not ordered by subject)."""

    total: int
    generation: int
    first: str | None = None
    last: str | None = None
    before: int | None = None


class Tallies:
    """The most recently used tallies, by key (thread-safe: the API runs routes on a thread pool)."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._kept: OrderedDict[tuple[Any, ...], Tally] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[Any, ...]) -> Tally | None:
        with self._lock:
            found = self._kept.get(key)
            if found is not None:
                self._kept.move_to_end(key)
            return found

    def put(self, key: tuple[Any, ...], tally: Tally) -> None:
        with self._lock:
            self._kept[key] = tally
            self._kept.move_to_end(key)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)


_OF_ENGINE: weakref.WeakKeyDictionary[Engine, Tallies] = weakref.WeakKeyDictionary()
_OF_ENGINE_LOCK = threading.Lock()


def of_engine(engine: Engine) -> Tallies:
    """The tallies counted on `engine`'s database (they go with the engine: a new database starts empty,
    even at the same address)."""
    with _OF_ENGINE_LOCK:
        found = _OF_ENGINE.get(engine)
        if found is None:
            found = _OF_ENGINE[engine] = Tallies()
        return found
