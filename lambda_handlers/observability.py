"""Powertools Logger and Metrics for the Lambda handler, each switched on by its own environment.

- `POWERTOOLS_SERVICE_NAME` set: job start/finish lines go through Powertools' Logger
  (JSON, with job id, name, queue and attempt as keys, and the envelope's id as
  correlation id).
- `POWERTOOLS_METRICS_NAMESPACE` set (or SQSJOBS_METRICS): the job metrics every way in emits
  (sqsjobs.metrics: processed, failed, released, runtime, wait per queue and job), plus
  `handed_back` / `held_back` for records the handler gave back without running them (see
  `HandBacks`), written as EMF at the end of each invocation.

Neither is imported unless its variable is set, to keep cold starts light.

A job is named, in lines and in metric dimensions, by its registered name or `unknown`
(`Registry.known_name`): a message cannot choose the dimensions you pay for, nor write a line.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import TYPE_CHECKING, Any

from sqsjobs.app import App
from sqsjobs.events import JobEvent
from sqsjobs.logs import LOGGED_KINDS, escape, log_event
from sqsjobs.registry import Registry, default_registry

if TYPE_CHECKING:
    from sqsjobs.metrics import JobMetrics


#: Apps already wired (the handler installs on first use; a test or a user may have installed first).
_installed: weakref.WeakSet[App] = weakref.WeakSet()


def install(app: App) -> JobMetrics | None:
    """Switch on what the environment asks for (once per app); returns the metrics collector the
    handler flushes."""
    if app in _installed:
        return app.metrics
    _installed.add(app)
    if os.environ.get("POWERTOOLS_SERVICE_NAME"):
        # Powertools' lines replace the plain job log, rather than doubling it.
        app.events.forget(log_event)
        app.events.listen(_powertools_log_listener(app.registry), kinds=LOGGED_KINDS)
    namespace = os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
    if namespace:
        mode = app.settings.metrics if app.settings.metrics != "off" else "emf"
        return app.start_metrics(mode, namespace)
    return app.start_metrics()


def _powertools_log_listener(registry: Registry) -> Any:
    from aws_lambda_powertools import Logger

    logger = Logger(logger_name="sqsjobs.lambda")

    def listen(event: JobEvent) -> None:
        fields = {
            "job_id": event.job_id,
            "job": registry.known_name(event.job_name),
            "queue": event.queue,
            "attempt": event.attempt,
            "dispatched_at": event.dispatched_at,
            "wait_ms": round(event.wait_s * 1000),
        }
        if event.kind == "queued":
            return  # a job this function dispatched: the producer's business, not a line of the job log
        logger.set_correlation_id(event.job_id)
        if event.kind == "processing":
            logger.debug("job started", extra=fields)
        else:
            extra: dict[str, Any] = {**fields, "outcome": event.kind, "runtime_ms": round(event.runtime_s * 1000, 1)}
            if event.error:
                extra["error"] = f"{event.error_type}: {event.error}"
            (logger.warning if event.kind in ("failed", "rejected") else logger.info)(f"job {event.kind}", extra=extra)

    return listen


class HandBacks:
    """The log line and the metric for every record the handler gives back without running it.

    A record handed back in silence looks, from the outside, like a queue that never drains: nothing
    failed, nothing ran. So each one is logged (which job, and why: the time left and the time it
    needed, or the record it waits behind) and counted, per job, so an alarm can watch for it.

    The job a record names is taken from its body, so it is only trusted when `registry` knows it:
    otherwise the line and the metric say `unknown`.
    """

    def __init__(self, registry: Registry | None = None, metrics: JobMetrics | None = None) -> None:
        self._registry = registry if registry is not None else default_registry
        self._metrics = metrics
        self._powertools: Any = None
        if os.environ.get("POWERTOOLS_SERVICE_NAME"):
            from aws_lambda_powertools import Logger

            self._powertools = Logger(logger_name="sqsjobs.lambda")
        self._log = logging.getLogger("sqsjobs.lambda")

    def report(self, metric: str, level: int, text: str, fields: dict[str, Any]) -> None:
        """One line (`fields` as keys: job, queue, message_id, ...) and one count of `metric` for the job.

        Never raises: reporting a record must not change what happens to it."""
        try:
            self._report(metric, level, text, fields)
        except Exception:
            self._log.exception("could not report: %s", escape(text))

    def _report(self, metric: str, level: int, text: str, fields: dict[str, Any]) -> None:
        raw = fields.get("job")
        job = self._registry.known_name(raw)
        if job != raw:
            if isinstance(raw, str) and raw and text.startswith(raw):
                text = job + text[len(raw) :]  # the callers' lines start with the job they name
            fields = {**fields, "job": job}
        text = escape(text)
        if self._powertools is not None:
            (self._powertools.warning if level >= logging.WARNING else self._powertools.info)(text, extra=fields)
        else:
            self._log.log(level, text, extra={"sqsjobs": fields})
        if self._metrics is not None:
            self._metrics.count(metric, str(fields.get("queue") or ""), job)
