"""The store in a dict, with the same semantics as DynamoDB's, for tests and the memory connection.

An item is live while its `expires_at` is later than `clock() - skew` (see sqsjobs.stores.base).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from .base import Key


class MemoryStore:
    def __init__(self, clock: Callable[[], float] = time.time, *, skew: float = 0.0) -> None:
        self._clock = clock
        self.skew = float(skew)
        self._items: dict[Key, tuple[dict[str, Any], float]] = {}
        self._lock = threading.Lock()
        self.calls = 0

    def view(self, clock: Callable[[], float]) -> MemoryStore:
        """The same items (and lock), seen by a worker with another clock: two workers sharing one
        table whose clocks disagree, as the clock-skew tests need."""
        other = MemoryStore(clock, skew=self.skew)
        other._items, other._lock = self._items, self._lock
        return other

    def _live(self, key: Key) -> dict[str, Any] | None:
        found = self._items.get(key)
        if found is None or found[1] <= self._clock() - self.skew:
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

    def add_and_count(
        self, marker: Key, attrs: dict[str, Any], counter: Key, deltas: dict[str, int], ttl: float
    ) -> bool:
        with self._lock:
            self.calls += 1
            target = self._live(counter)
            if self._live(marker) is not None or target is None:
                return False
            self._items[marker] = (dict(attrs), self._clock() + ttl)
            for name, by in deltas.items():
                target[name] = int(target.get(name, 0)) + by
            return True

    def update(
        self, key: Key, *, set: dict[str, Any] | None = None, add: dict[str, int] | None = None, unless: str = ""
    ) -> dict[str, Any] | None:
        with self._lock:
            self.calls += 1
            live = self._live(key)
            if live is None or (unless and unless in live):
                return None
            live.update(set or {})
            for name, by in (add or {}).items():
                live[name] = int(live.get(name, 0)) + by
            return dict(live)

    def query(
        self, pk: str, *, limit: int | None = None, newest_first: bool = False, consistent: bool = True
    ) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            self.calls += 1
            keys = sorted((k for k in self._items if k[0] == pk), key=lambda k: k[1], reverse=newest_first)
            # As on DynamoDB, the limit counts items read, expired ones included.
            return [(k[1], dict(live)) for k in keys[:limit] if (live := self._live(k)) is not None]

    def scan_at_most(self, pk_prefix: str, sk: str, items: int) -> tuple[list[tuple[str, dict[str, Any]]], bool]:
        with self._lock:
            self.calls += 1
            keys = list(self._items)
            found = [
                (k[0], dict(live))
                for k in keys[:items]
                if k[0].startswith(pk_prefix) and k[1] == sk and (live := self._live(k)) is not None
            ]
            return found, len(keys) <= items

    def scan(self, pk_prefix: str, sk: str) -> list[tuple[str, dict[str, Any]]]:
        with self._lock:
            self.calls += 1
            return [
                (k[0], dict(live))
                for k in list(self._items)
                if k[0].startswith(pk_prefix) and k[1] == sk and (live := self._live(k)) is not None
            ]
