"""The store in a dict, with the same semantics as DynamoDB's, for tests and the memory connection."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .base import Key


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._items: dict[Key, tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def _live(self, key: Key) -> dict[str, Any] | None:
        found = self._items.get(key)
        if found is None or found[1] <= self._clock():
            return None
        return found[0]

    def add(self, key: Key, attrs: dict[str, Any], ttl: float) -> bool:
        with self._lock:
            self.calls += 1
            if self._live(key) is not None:
                return False
            self._items[key] = (dict(attrs), self._clock() + ttl)
            return True

    def get(self, key: Key) -> dict[str, Any] | None:
        with self._lock:
            self.calls += 1
            live = self._live(key)
            return dict(live) if live is not None else None

    def put(self, key: Key, attrs: dict[str, Any], ttl: float) -> None:
        with self._lock:
            self.calls += 1
            self._items[key] = (dict(attrs), self._clock() + ttl)

    def delete(self, key: Key, *, owner: str | None = None) -> bool:
        with self._lock:
            self.calls += 1
            live = self._live(key)
            if owner is not None and (live is None or live.get("owner") != owner):
                return False
            return self._items.pop(key, None) is not None and live is not None

    def incr(self, key: Key, by: int, ttl: float, *, limit: int | None = None) -> int | None:
        with self._lock:
            self.calls += 1
            live = self._live(key)
            current = int(live.get("count", 0)) if live is not None else 0
            if limit is not None and current + by > limit:
                return None
            if live is None:
                self._items[key] = ({"count": by}, self._clock() + ttl)
            else:
                live["count"] = current + by
            return current + by
