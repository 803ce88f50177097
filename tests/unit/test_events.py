"""`sqsjobs_setup(app)` in the jobs module: every app that loads the module gets its listeners."""

from __future__ import annotations

import pytest

from sqsjobs import App
from sqsjobs.events import JobEvent
from sqsjobs.worker import Worker, WorkerOptions
from tests.unit import events_setup_jobs


def test_each_app_that_loads_the_jobs_module_is_set_up(sqs_app: App) -> None:
    events_setup_jobs.HEARD.clear()
    worker_app = App(settings=sqs_app.settings.model_copy(update={"app": "tests.unit.events_setup_jobs"}))
    other_app = App(settings=sqs_app.settings.model_copy(update={"app": "tests.unit.events_setup_jobs"}))
    worker_app.load_jobs()
    other_app.load_jobs()  # the module is imported once; its setup runs for this app too
    with worker_app.activate():
        events_setup_jobs.Noted().dispatch()
        Worker(worker_app, WorkerOptions(queues=["default"], sleep=1, stop_when_empty=True)).run(install_signals=False)
    other_app.events.emit(JobEvent("processed", "id", "events.noted", "default", 1))
    heard = list(events_setup_jobs.HEARD)
    assert heard == [(id(worker_app), "events.noted"), (id(other_app), "events.noted")]


def test_a_lambda_handler_tries_a_failed_setup_again_on_the_next_event(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lambda_handlers.sqs import SqsHandler
    from tests.unit import events_flaky_setup

    events_flaky_setup.CALLS.clear()
    monkeypatch.setenv("SQSJOBS_APP", "tests.unit.events_flaky_setup")
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", sqs_app.settings.queue_prefix)
    handler = SqsHandler()
    with pytest.raises(RuntimeError, match="did not answer"):
        _ = handler.app
    app = handler.app  # the next event: built again, set up this time
    assert app.triage == ["configured"] and len(events_flaky_setup.CALLS) == 2
