"""The app a dispatch or a running job works with, seen from below the App.

Jobs, dispatching, chains, batches and middleware need an app's services (its connection,
store, clock, ...) but must not import `sqsjobs.app`, which is the composition root that
imports them. They ask this module: `current()` returns the activated app (or the process
default, which `sqsjobs.app` registers how to build), typed as the `Services` it offers.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from .connections.base import Connection
    from .connections.sqs_async import AsyncSqsSender
    from .dispatched import Dispatched
    from .encryption import Encryptor
    from .events import Events
    from .payloads import PayloadStore
    from .registry import Registry
    from .settings import Settings
    from .signing import SigningKeys
    from .stores.base import Store
    from .triage import Rule


class Services(Protocol):
    """What an App offers the layers below it (sqsjobs.app.App implements it)."""

    settings: Settings
    registry: Registry
    clock: Callable[[], float]
    events: Events
    signing_key: SigningKeys | None
    #: The app's failure triage rules (sqsjobs.triage), after each job's own.
    triage: list[Rule]

    @property
    def connection(self) -> Connection: ...

    @property
    def store(self) -> Store: ...

    @property
    def payloads(self) -> PayloadStore | None: ...

    @property
    def async_sender(self) -> AsyncSqsSender: ...

    @property
    def encryptor(self) -> Encryptor: ...

    def queue_for(self, job_cls: type, queue: str | None) -> str: ...

    def dispatch(self, job: Any, **options: Any) -> Dispatched: ...

    async def dispatch_async(self, job: Any, **options: Any) -> Dispatched: ...

    def dispatch_many(self, jobs: Iterable[Any], **options: Any) -> list[Dispatched]: ...

    async def dispatch_many_async(self, jobs: Iterable[Any], **options: Any) -> list[Dispatched]: ...

    def dispatch_sync(self, job: Any) -> None: ...

    def find_batch(self, batch_id: str, *, caller: Any = None) -> Any: ...


_current: contextvars.ContextVar[Services | None] = contextvars.ContextVar("sqsjobs_app", default=None)
_default: Services | None = None
_default_lock = threading.Lock()
_factory: Callable[[], Services] | None = None


def set_factory(factory: Callable[[], Services]) -> None:
    """How to build the process default on first use (sqsjobs.app registers `App`)."""
    global _factory
    _factory = factory


def set_default(app: Services | None) -> None:
    global _default
    _default = app


def activate(app: Services) -> contextvars.Token[Services | None]:
    return _current.set(app)


def deactivate(token: contextvars.Token[Services | None]) -> None:
    _current.reset(token)


def current() -> Services:
    """The activated app, else the process default (built from the environment on first use)."""
    app = _current.get()
    if app is not None:
        return app
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                if _factory is None:  # pragma: no cover - sqsjobs/__init__ imports sqsjobs.app
                    raise RuntimeError("import sqsjobs before dispatching")
                _default = _factory()
    return _default
