"""`sqsjobs failed triage`: the retries `retry_later` rules ask for, from the DLQ (sqsjobs.triage).

A failed job is retried by a rule only on what its copies prove (sqsjobs.failed_filters): the job
named by its body, the reason a worker vouched for (with signing on) and the time SQS took its DLQ copy. Its
exception type is the best copy's `error_type`, which with signing on counts only on a vouched copy
(a copy's attributes are written once, with its tag, by the worker that failed it). A job whose copies
prove less is left for a person, and counted, as is one retried `times` times already (a job that
keeps failing must not loop through the DLQ for ever). Without signing, the DLQ's contents are taken
as they are, as `failed retry --all` takes them: anyone who may send to the DLQ may have a job retried.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .app import App
from .failed_copies import Copy
from .failed_filters import Proof
from .failures import FailedJob
from .triage import Rule, first_recorded_match

#: How long a job's triage retries are counted (longer than any DLQ keeps it: 14 days).
RETRIES_REMEMBERED_S = 15 * 86400


@dataclass
class TriageSelection:
    """Given a job's copies (best first): whether a `retry_later` rule says its time has come."""

    app: App
    proof: Callable[[FailedJob], Proof]
    now: float
    #: Job id -> when its rule lets it be retried (those not due yet), for `--dry-run` and the report.
    waiting: dict[str, float] = field(default_factory=dict)
    #: Job id -> the rule that retries it now.
    due: dict[str, Rule] = field(default_factory=dict)
    #: Jobs a rule might have matched but whose copies do not prove enough.
    unproven: int = 0
    #: Jobs whose rule already retried them `times` times: left for a person.
    exhausted: int = 0
    #: Whether the run acts (False: `--dry-run`, nothing is selected, only noted).
    act: bool = True

    def select(self, group: list[Copy]) -> bool:
        best = group[0][1]
        proofs = [self.proof(job) for _, job in group]
        shown = proofs[0]
        if shown.job is None or shown.reason is None or shown.at is None or not shown.stated:
            self.unproven += 1 if self._rules(best.job) else 0
            return False
        if any(p.job not in (None, shown.job) or p.reason not in (None, shown.reason) for p in proofs[1:]):
            self.unproven += 1  # its copies disagree: a person decides
            return False
        signed = self.app.signing_key is not None
        if signed and not best.vouched:
            self.unproven += 1 if self._rules(shown.job) else 0
            return False
        rule = first_recorded_match(self._rules(shown.job), shown.reason, best.error_type)
        if rule is None or rule.action != "retry_later":
            return False
        # When SQS took the DLQ copy: no sender can set it (a copy's `failed_at` is only its word).
        failed = best.message.sent_at or shown.at
        if failed + rule.after > self.now:
            self.waiting[best.id] = failed + rule.after
            return False
        if not self.act:
            self.due[best.id] = rule
            return False
        done = self.app.store.incr(("triage", f"retried#{best.id}"), 1, ttl=RETRIES_REMEMBERED_S)
        if done is not None and done > rule.times:
            self.exhausted += 1
            return False
        self.due[best.id] = rule
        return True

    def _rules(self, job: str) -> list[Rule]:
        own = self.app.registry.get(job).triage if job in self.app.registry else ()
        return [*own, *self.app.triage]
