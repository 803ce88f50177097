"""The function EventBridge invokes every minute to run the schedules (docs/scheduler.md).

Handler `lambda_handlers.schedule.handler`, configured like the SQS function (SQSJOBS_APP names the
module that declares the jobs and their `schedule(...)`). Each invocation is one pass of the runner
(`sqsjobs.scheduling.Scheduler.run_due`): a late, repeated or concurrent invocation dispatches
nothing twice, since every tick is dispatched once across all runners, and a missed invocation is
caught up on the next one by each schedule's policy. The invocation fails (and the function's Errors
alarm sees it) when the app cannot be loaded, declares no schedule, or a tick could not be sent; the
other schedules' ticks are sent first either way.
"""

from __future__ import annotations

import logging
from typing import Any

from sqsjobs.app import App
from sqsjobs.errors import ConfigurationError, SqsJobsError
from sqsjobs.scheduling import Scheduler

from . import observability

__all__ = ["ScheduleHandler", "handler"]

log = logging.getLogger("sqsjobs.scheduler")


class ScheduleHandler:
    """One per container: the App and its schedules are loaded on the first invocation."""

    def __init__(self, app: App | None = None) -> None:
        self._app = app
        self._scheduler: Scheduler | None = None

    @property
    def scheduler(self) -> Scheduler:
        if self._scheduler is None:
            app = self._app
            if app is None:
                app = App(connection="sqs")
                app.load_jobs()
            if not len(app.schedules):
                raise ConfigurationError(
                    f"no schedules are declared in SQSJOBS_APP={app.settings.app!r}: declare them there with "
                    "sqsjobs.schedule(...), or remove the schedule function (Scheduler=none)"
                )
            observability.install(app)
            self._app = app
            self._scheduler = Scheduler(app, owner="lambda")
        return self._scheduler

    def __call__(self, event: dict[str, Any] | None = None, context: Any = None) -> dict[str, Any]:
        scheduler = self.scheduler
        outcomes = scheduler.run_due()
        metrics = scheduler.app.metrics
        if metrics is not None:
            metrics.flush()
        counts: dict[str, int] = {}
        for outcome in outcomes:
            counts[outcome.what] = counts.get(outcome.what, 0) + 1
        failed = [f"{o.schedule} {o.tick:%Y-%m-%d %H:%M}Z: {o.detail}" for o in outcomes if o.what == "failed"]
        if failed:
            # An error for the function's Errors alarm (3 failing minutes in a row page): what could be sent
            # was sent, and what failed is tried again next minute.
            raise SqsJobsError(f"{len(failed)} schedule pass(es) failed: " + "; ".join(failed)[:2000])
        return {"schedules": len(scheduler.schedules), **counts}


handler = ScheduleHandler()
