"""A small thread-safe LRU with expiry, for image embeddings and tracker memories."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any


class ExpiringLRU:
    """At most ``max_items`` entries, each forgotten ``ttl_seconds`` after its last use."""

    def __init__(self, max_items: int, ttl_seconds: float):
        self.max_items, self.ttl = max_items, ttl_seconds
        self._items: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Any | None:
        with self._lock:
            self._expire()
            if key not in self._items:
                return None
            _, value = self._items.pop(key)
            self._items[key] = (time.monotonic(), value)
            return value

    def put(self, key: str, value: Any) -> None:
        with self._lock:
            self._items.pop(key, None)
            self._items[key] = (time.monotonic(), value)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)

    def _expire(self) -> None:
        now = time.monotonic()
        while self._items and now - next(iter(self._items.values()))[0] > self.ttl:
            self._items.popitem(last=False)
