"""What every job's path through the runner keeps doing now that it is cheaper: the job's context lives in a
slot of Job's own (no pydantic private attribute) and the snapshot counters are tallied inline
(docs/performance.md, "The job's own path, counted")."""

from __future__ import annotations

import copy
import pickle
import weakref
from typing import ClassVar

import pytest
from pydantic import ConfigDict, PrivateAttr

from sqsjobs import ConfigurationError, Job
from sqsjobs.events import JobEvent
from sqsjobs.metric_snapshots import Snapshots, bucket_ms
from sqsjobs.policy import NOT_BEFORE_ATTRIBUTE, not_before
from sqsjobs.testing import run_job

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60


class Frozen(Job, name="hot.frozen"):
    model_config = ConfigDict(frozen=True)
    n: int
    seen: ClassVar[list[tuple[int, str | None]]] = []  # what each run knew

    def handle(self) -> None:
        type(self).seen.append((self.attempts, self.job_id))
        if self.attempts < 2:
            self.release(5)


class WithClient(Job, name="hot.with_client"):
    n: int
    _calls: list[int] = PrivateAttr(default_factory=list)

    def handle(self) -> None:
        self._calls.append(self.attempts)


def test_a_frozen_job_knows_its_attempt_and_id_and_can_release_itself() -> None:
    Frozen.seen = []
    first = run_job(Frozen(n=1))
    second = run_job(Frozen(n=1), attempt=2)
    assert first.outcome == "released" and first.delay == 5
    assert second.outcome == "completed"
    assert [attempt for attempt, _ in Frozen.seen] == [1, 2] and all(job_id for _, job_id in Frozen.seen)


def test_a_jobs_own_private_attributes_still_start_from_their_defaults() -> None:
    built = WithClient.model_validate({"n": 1})
    assert built._calls == [] and built._ctx is None and built.attempts == 0
    ran = run_job(WithClient(n=1), attempt=3)
    assert ran.outcome == "completed" and ran.job._calls == [3]


def test_a_copy_or_an_unpickled_job_is_a_new_job_without_the_runs_context() -> None:
    """A copy made inside `handle()` (to dispatch a variant) must not release or fail the run it came from."""
    ran = run_job(WithClient(n=1), attempt=2)
    running = ran.job
    assert running.attempts == 2
    for other in (running.model_copy(), copy.deepcopy(running), pickle.loads(pickle.dumps(running))):
        assert other.attempts == 0 and other.job_id is None
        other.release(30)  # no context: nothing to release
        assert other == running  # equality is the payload's: the context is not part of it
    assert running._ctx is not None and not running._ctx.released


def test_snapshot_tallies_are_exact_for_every_kind() -> None:
    written: list[tuple[tuple[str, str], dict[str, int], int]] = []
    snapshots = Snapshots(lambda key, counts, most, ttl: written.append((key, counts, most)), clock=lambda: T0 + 5)

    def event(kind: str, runtime: float, wait: float, dispatched: str = "2026-01-01T00:00:00Z") -> JobEvent:
        return JobEvent(kind, "id", "hot.frozen", "q", 1, dispatched, wait_s=wait, runtime_s=runtime)

    for sent in (
        event("processed", 0.25, 2.0),
        event("processed", 0.0004, 0.0),  # rounds to 0 ms
        event("failed", 1.5, 0.5),
        event("released", 0.1, 0.0, dispatched=""),  # no dispatch time: no wait counted
        event("rejected", 9.0, 9.0),  # never ran: a failure with no runtime and no wait
        event("processing", 1.0, 1.0),  # not counted
        event("processed", -1.0, -3.0),  # a clock step back counts as 0, never negative
    ):
        snapshots.listen(sent)
    snapshots.flush()
    ((_, counts, most),) = written
    assert {k: counts.get(k, 0) for k in ("processed", "failed", "released", "runs", "waits")} == {
        "processed": 3,
        "failed": 2,
        "released": 1,
        "runs": 5,
        "waits": 4,
    }
    assert counts.get("runtime_ms") == 250 + 1500 + 100 and most == bucket_ms(1500)
    assert counts.get("wait_ms") == 2000 + 500


def test_not_before_is_zero_when_absent_and_for_garbage() -> None:
    assert not_before({}, T0) == 0.0
    assert not_before({NOT_BEFORE_ATTRIBUTE: ""}, T0) == 0.0
    assert not_before({NOT_BEFORE_ATTRIBUTE: "soon"}, T0) == 0.0
    assert not_before({NOT_BEFORE_ATTRIBUTE: "nan"}, T0) == 0.0
    assert not_before({NOT_BEFORE_ATTRIBUTE: str(T0 + 30)}, T0) == 30.0


def test_a_job_class_may_not_take_the_contexts_name_and_stays_weakly_referable() -> None:
    with pytest.raises(ConfigurationError, match="_ctx, which Job keeps for itself"):

        class Taken(Job, name="hot.taken"):
            _ctx: int = PrivateAttr(default=1)

            def handle(self) -> None: ...

    class Slotted(Job, name="hot.slotted"):
        __slots__ = ()
        n: int = 1

        def handle(self) -> None: ...

    job = Slotted()
    assert weakref.ref(job)() is job
