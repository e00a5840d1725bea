"""Small bounded caches (least recently used first out) for values that never change once written."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)


class BoundedSet(Generic[K]):
    def __init__(self, capacity: int) -> None:
        self._cache: BoundedCache[K, bool] = BoundedCache(capacity)

    def __contains__(self, key: object) -> bool:
        return self._cache.get(key) is not None  # type: ignore[arg-type]

    def update(self, keys: Iterable[K]) -> None:
        for key in keys:
            self._cache[key] = True
