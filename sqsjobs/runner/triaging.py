"""The runner's side of failure triage (sqsjobs.triage): which rule a failure meets, and `new_failure`.

A job in a chain or a batch is never discarded: its workflow counts on its DLQ copy (a batch's
`failed` count, a chain's `catch`), so a `discard` rule leaves it to the DLQ like any failure.
"""

from __future__ import annotations

import logging

from ..context import Services
from ..envelope import involved
from ..errors import type_name
from ..triage import REMEMBER_S, Rule, first_match
from .hook import Delivery

log = logging.getLogger("sqsjobs.runner")


def triage_rule(app: Services, d: Delivery, kind: str, error: BaseException, raised: bool = False) -> Rule | None:
    """The first rule (the job's own, then the app's) this failure meets; `raised`: the job's code raised it."""
    rules = [*(d.job_cls.triage if d.job_cls is not None else ()), *app.triage]
    if not rules:
        return None
    rule = first_match(rules, kind, error, raised)
    if rule is not None and rule.action == "discard" and involved(d.envelope):
        return None
    return rule


def after_triage(app: Services, d: Delivery, rule: Rule | None, kind: str, error: BaseException) -> str:
    """What the rule does once the failure is decided; returns the Fail kind (`discarded` for a discard)."""
    if rule is None:
        return kind
    if rule.action == "discard":
        log.info(
            "%s %s failed (%s: %s) and was discarded by a triage rule; it is not in the DLQ",
            d.job_cls.job_name if d.job_cls is not None else "unknown",
            d.envelope.id if d.envelope is not None else d.message.message_id,
            kind,
            type(error).__name__,
        )
        return "discarded"
    if rule.action == "alert_new":
        alert_if_new(app, d, error)
    return kind


def alert_if_new(app: Services, d: Delivery, error: BaseException) -> None:
    """`new_failure`, once per job and exception type (per REMEMBER_S). Never raises: the job is in
    the DLQ already; a store error only costs the alert."""
    job = d.job_cls.job_name if d.job_cls is not None else app.registry.known_name(d.envelope.job if d.envelope else "")
    error_type = type_name(error)
    try:
        first = app.store.add(("triage", f"new#{job}#{error_type}"), {"job": job, "error_type": error_type}, REMEMBER_S)
    except Exception:
        log.exception("could not check whether %s failing with %s is new; no new_failure event", job, error_type)
        return
    if first:
        app.events.emit(d.event("new_failure", error=error))
