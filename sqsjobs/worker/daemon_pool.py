"""A thread pool of daemon threads, for the asyncio worker's blocking calls.

`concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, and asyncio.run
waits for the default executor: one sync job stuck in C past its timeout would then hang the
worker forever instead of letting it exit 1. Daemon threads are simply left behind.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

log = logging.getLogger("sqsjobs.worker")

#: A call and where its outcome goes: a Future (`submit`), or nowhere (`call`: errors are logged).
_Item = tuple[Future[Any] | None, Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonPool(Executor):
    """Grows to `max_workers` threads as calls wait; `shutdown` never waits for a thread."""

    def __init__(self, max_workers: int, name: str, initializer: Callable[[], object] = lambda: None) -> None:
        self._max = max(1, max_workers)
        self._name = name
        self._initializer = initializer
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._waiting = 0
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        future: Future[T] = Future()
        self._put((future, fn, args, kwargs))
        return future

    def call(self, fn: Callable[P, object], /, *args: P.args, **kwargs: P.kwargs) -> None:
        """`submit` for a call whose outcome nobody waits for (an error is logged): no Future to build."""
        self._put((None, fn, args, kwargs))

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new calls after shutdown")
            self._queue.put(item)
            self._waiting += 1
            if self._idle < self._waiting and len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, name=f"{self._name}-{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _work(self) -> None:
        self._initializer()
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._waiting -= 1
            if item is None:
                return
            future, fn, args, kwargs = item
            if future is None:
                try:
                    fn(*args, **kwargs)
                except BaseException:
                    log.exception("a call in %s failed", self._name)
                continue
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = False, *, cancel_futures: bool = False) -> None:
        """Let idle threads end; never join (a stuck thread must not hold the process)."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
        for _ in range(count):
            self._queue.put(None)
