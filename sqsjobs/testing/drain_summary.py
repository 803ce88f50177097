"""What `run_until_empty` ran: one record per delivery, counts per job, and assertions that list them.

Kept apart from the drain loop so each module has one job: these are values and the words for them.
A failed assertion prints every delivery in order (job, attempt, what came of it), then the traceback
of the first exception that matters, so a test shows what ran instead of what was expected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..decisions import Decision, Fail
from .outcomes import ErrorMatcher, Outcome, describe, error_of, expected_error, matches, traceback_text

if TYPE_CHECKING:
    from ..job_class import Job

#: How many deliveries a failure message lists before "... and N more".
MAX_LISTED = 40


@dataclass(frozen=True, slots=True)
class Record:
    """One delivery the drain made."""

    job_name: str
    job_id: str
    queue: str
    attempt: int
    #: `completed`, `skipped`, `released`, `retried`, `held_back`, `failed` or `deferred`.
    outcome: Outcome
    decision: Decision
    #: Whether `handle()` was entered.
    ran: bool
    #: What `handle()` raised (None when it returned or did not run).
    exception: Exception | None
    #: The job that ran (None when the runner decided without building one: a bad message, a hop).
    job: Job | None
    #: The app's clock when the delivery was decided (it moves as delays are fast-forwarded).
    at: float
    #: The tries the job has (None for a message that named no job this app knows).
    tries: int | None = None

    @property
    def error(self) -> BaseException | None:
        """What `handle()` raised, or why the job was given up."""
        return error_of(self.decision, self.exception)

    def describe(self) -> str:
        happened = describe(self.decision, self.ran, self.exception, self.attempt, self.tries)
        return f"{self.job_name} on {self.queue!r} {happened}"


def _name(job: type[Job] | str) -> str:
    return job if isinstance(job, str) else job.job_name


@dataclass
class Drained:
    """Every delivery of one `run_until_empty`, in order, and what was left."""

    records: list[Record] = field(default_factory=list)
    #: Messages still on a queue at the end (with `delays="report"`: those not due yet), by queue.
    waiting: dict[str, int] = field(default_factory=dict)
    #: Messages in each queue's dead-letter list at the end (failed jobs, bad messages), by queue.
    dead_letters: dict[str, int] = field(default_factory=dict)

    # -- counts ---------------------------------------------------------------------------------
    def count(self, outcome: Outcome, job: type[Job] | str | None = None) -> int:
        return sum(1 for r in self.of(job) if r.outcome == outcome)

    @property
    def ran(self) -> int:
        """Deliveries whose `handle()` ran (each retry counts)."""
        return sum(1 for r in self.records if r.ran)

    @property
    def completed(self) -> int:
        return self.count("completed")

    @property
    def failed(self) -> int:
        return self.count("failed")

    @property
    def released(self) -> int:
        """Deliveries put back to run again: released by the job, or retried after an exception."""
        return self.count("released") + self.count("retried")

    @property
    def held_back(self) -> int:
        return self.count("held_back")

    @property
    def by_job(self) -> dict[str, Counter[str]]:
        """Outcome counts per job name, e.g. `{"billing.charge": Counter({"retried": 2, "completed": 1})}`."""
        out: dict[str, Counter[str]] = {}
        for record in self.records:
            out.setdefault(record.job_name, Counter())[record.outcome] += 1
        return out

    def of(self, job: type[Job] | str | None = None) -> list[Record]:
        """The deliveries of one job class (or registered name), in order; all of them without one."""
        return [r for r in self.records if job is None or r.job_name == _name(job)]

    def jobs(self, job: type[Job] | str | None = None) -> list[Any]:
        """The job instances that ran (of one class), in order, for asserts of your own."""
        return [r.job for r in self.of(job) if r.ran and r.job is not None]

    # -- assertions -----------------------------------------------------------------------------
    def assert_ran(
        self, job: type[Job] | str, predicate: Callable[[Any], bool] | None = None, *, times: int | None = None
    ) -> None:
        """`handle()` of `job` ran (for a job matching `predicate`): at least once, or exactly `times`."""
        __tracebackhide__ = True
        runs = [r for r in self.of(job) if r.ran and (predicate is None or predicate(r.job))]
        self._count(runs, f"{_name(job)}{_matching(predicate)} to run", times)

    def assert_completed(
        self, job: type[Job] | str, predicate: Callable[[Any], bool] | None = None, *, times: int | None = None
    ) -> None:
        """A `job` (matching `predicate`) ran to completion: at least once, or exactly `times`."""
        __tracebackhide__ = True
        done = [r for r in self.of(job) if r.outcome == "completed" and (predicate is None or predicate(r.job))]
        self._count(done, f"{_name(job)}{_matching(predicate)} to complete", times)

    def assert_failed(self, job: type[Job] | str, with_: ErrorMatcher | None = None) -> None:
        """A `job` was given up (to its DLQ, `failed()` called), for the reason `with_` describes."""
        __tracebackhide__ = True
        if not any(isinstance(r.decision, Fail) and matches(r.error, with_) for r in self.of(job)):
            self._fail(f"expected {_name(job)} to fail{expected_error(with_)}")

    def assert_not_ran(self, job: type[Job] | str) -> None:
        __tracebackhide__ = True
        self._count([r for r in self.of(job) if r.ran], f"{_name(job)} to run", 0)

    def assert_nothing_failed(self) -> None:
        """No delivery was given up (nothing went to a DLQ, no chain's or batch's failure path ran)."""
        __tracebackhide__ = True
        if self.failed:
            self._fail(f"expected nothing to fail; {_deliveries(self.failed)} failed")

    def _count(self, found: list[Record], wanted: str, times: int | None) -> None:
        __tracebackhide__ = True
        if times is None and not found:
            self._fail(f"expected {wanted}")
        elif times is not None and len(found) != times:
            self._fail(f"expected {wanted} {times} time(s), it did {len(found)} time(s)")

    def _fail(self, headline: str) -> None:
        __tracebackhide__ = True
        raise AssertionError(f"{headline}\n{self.summary()}")

    # -- what a failure prints ------------------------------------------------------------------
    def summary(self) -> str:
        """Every delivery, one a line, then what was left and the first failure's traceback."""
        if not self.records:
            lines = ["nothing ran"]
        else:
            lines = [f"ran ({_deliveries(len(self.records))}):"]
            lines += [f"  {i}. {r.describe()}" for i, r in enumerate(self.records[:MAX_LISTED], 1)]
            if len(self.records) > MAX_LISTED:
                lines.append(f"  ... and {len(self.records) - MAX_LISTED} more")
        if self.waiting:
            lines.append(f"still waiting: {self.waiting}")
        if self.dead_letters:
            lines.append(f"dead letters: {self.dead_letters}")
        failing = next((r for r in self.records if r.outcome in ("failed", "retried") and r.error), None)
        trace = traceback_text(failing.error) if failing else ""
        if failing is not None and trace:
            lines += ["", f"first error ({failing.job_name}, attempt {failing.attempt}):", trace]
        return "\n".join(lines)

    def runaway(self, max_jobs: int, hops: bool = False) -> str:
        """Why the drain stopped early (too many deliveries, or with `hops` too many delay hops): the
        jobs that did it most, a hint, and the deliveries."""
        if hops:
            busiest = Counter(r.job_name for r in self.records if r.outcome == "deferred").most_common(3)
            top = ", ".join(f"{name} {n} time(s)" for name, n in busiest)
            return (
                f"run_until_empty stopped after {max_jobs} delay hops with messages still queued ({top}): a "
                "long delay takes one hop here, so a job keeps dispatching delayed work? Pass max_jobs= if the "
                f"test really needs more.\n{self.summary()}"
            )
        busiest = Counter(r.job_name for r in self.records if r.outcome != "deferred").most_common(3)
        top = ", ".join(f"{name} {n} time(s)" for name, n in busiest)
        return (
            f"run_until_empty stopped after {max_jobs} deliveries with messages still queued ({top}): a job "
            "that dispatches, releases or holds back itself forever? Pass max_jobs= if the test really needs "
            f"more.\n{self.summary()}"
        )

    def __str__(self) -> str:
        return self.summary()


def _deliveries(count: int) -> str:
    return f"{count} delivery" if count == 1 else f"{count} deliveries"


def _matching(predicate: Callable[..., Any] | None) -> str:
    return "" if predicate is None else " matching the predicate"
