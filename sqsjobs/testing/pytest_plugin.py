"""Fixtures for users' tests: `sqsjobs_fake` (`fake()` for the whole test), `sqsjobs_run_job` (`run_job`
sharing one store across the test's runs) and `sqsjobs_memory_app` (an app to `run_until_empty` in).

Not registered by default (that would import sqsjobs into every pytest run): enable it with
`pytest_plugins = ["sqsjobs.testing.pytest_plugin"]` in a conftest.py, or `-p sqsjobs.testing.pytest_plugin`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from .fake import FakeDispatches, fake

if TYPE_CHECKING:
    from ..app import App
    from .job_run import JobRun


@pytest.fixture
def sqsjobs_fake() -> Iterator[FakeDispatches]:
    """Every job dispatched during the test is recorded, not sent; the app before is current again after."""
    with fake() as dispatched:
        yield dispatched


@pytest.fixture
def sqsjobs_run_job() -> Callable[..., JobRun]:
    """`run_job` whose runs in this test share one memory store: a rate-limit window, an idempotency key
    or a step the first run used is there for the next (each plain `run_job` starts from nothing)."""
    from ..app import current_app
    from ..stores.memory import MemoryStore
    from .job_run import run_job

    app = current_app()
    return functools.partial(run_job, store=MemoryStore(app.clock, skew=app.settings.clock_skew))


@pytest.fixture
def sqsjobs_memory_app() -> Iterator[App]:
    """A `memory_app()` (memory connection and store, a ManualClock), current for the test, so what the
    test dispatches waits for `run_until_empty()`; the app before is current again after."""
    from .drain import memory_app

    app = memory_app()
    with app.activate():
        yield app
