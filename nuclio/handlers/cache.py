"""A small thread-safe LRU with expiry, for image embeddings and tracker memories."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class ExpiringLRU:
    """At most ``max_items`` entries (and ``max_weight`` in all), each forgotten ``ttl_seconds`` after its last use.

    ``weigh(value)`` gives an entry's weight (e.g. its bytes) when it is put; the
    least recently used entries go first, and the newest one always stays.
    """

    def __init__(
        self,
        max_items: int,
        ttl_seconds: float,
        max_weight: float | None = None,
        weigh: Callable[[Any], float] | None = None,
    ):
        self.max_items, self.ttl = max_items, ttl_seconds
        self.max_weight, self.weigh = max_weight, weigh
        self._items: OrderedDict[str, tuple[float, float, Any]] = OrderedDict()
        self._weight = 0.0
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            self._expire()
            if key not in self._items:
                return None
            _, weight, value = self._items.pop(key)
            self._items[key] = (time.monotonic(), weight, value)
            return value

    def put(self, key: str, value: Any) -> None:
        weight = float(self.weigh(value)) if self.weigh else 0.0
        with self._lock:
            self._pop(key)
            self._items[key] = (time.monotonic(), weight, value)
            self._weight += weight
            while len(self._items) > 1 and (
                len(self._items) > self.max_items or (self.max_weight is not None and self._weight > self.max_weight)
            ):
                self._pop(next(iter(self._items)))

    def __contains__(self, key: str) -> bool:
        """Whether ``key`` is held, without counting as a use."""
        with self._lock:
            self._expire()
            return key in self._items

    @property
    def weight(self) -> float:
        with self._lock:
            return self._weight

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _pop(self, key: str) -> None:
        if key in self._items:
            self._weight -= self._items.pop(key)[1]

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl:
            self._pop(next(iter(self._items)))
