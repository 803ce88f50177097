"""Jobs the end-to-end worker subprocesses run (`sqsjobs work --app tests.e2e.e2e_jobs`).

Every job records what happened by appending `<event> <attempt> <unix time>` lines to
`$E2E_DIR/<job_id>.log`, so a test can count runs exactly from outside the worker.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqsjobs import Job
from sqsjobs.triage import discard, retry_later
from tests.helpers import work_for


def e2e_dir() -> Path:
    return Path(os.environ["E2E_DIR"])


def note(job: Job, event: str) -> None:
    with open(e2e_dir() / f"{job.job_id}.log", "a") as f:
        f.write(f"{event} {job.attempts} {time.time():.6f}\n")


class Record(Job, name="e2e.record"):
    """Runs once, optionally slowly; with `order`, appends its tag to `$E2E_DIR/order.log` at start."""

    tag: str = ""
    sleep: float = 0.0
    order: bool = False

    def handle(self) -> None:
        note(self, "start")
        if self.order:
            with open(e2e_dir() / "order.log", "a") as f:
                f.write(f"{self.tag}\n")
        work_for(self.sleep)
        note(self, "end")


class FailTimes(Job, name="e2e.fail-times"):
    """Raises on the first `failures` attempts, then succeeds."""

    tries = 3
    backoff = (1, 2)

    failures: int

    def handle(self) -> None:
        note(self, "start")
        if self.attempts <= self.failures:
            note(self, "fail")
            raise RuntimeError(f"planned failure on attempt {self.attempts}")
        note(self, "end")


class AlwaysFails(Job, name="e2e.always-fails"):
    """Never succeeds; its `failed()` hook leaves a marker."""

    tries = 2
    backoff = 0

    tag: str = ""

    def handle(self) -> None:
        note(self, "start")
        raise RuntimeError(f"boom {self.tag}")

    def failed(self, exc: BaseException) -> None:
        note(self, f"failed:{type(exc).__name__}")


class SlowPastTimeout(Job, name="e2e.slow-past-timeout"):
    """Would run 20 s in small interruptible steps; its timeout is 1 s."""

    tries = 1
    timeout = 1

    def handle(self) -> None:
        note(self, "start")
        work_for(20)
        note(self, "end")

    def failed(self, exc: BaseException) -> None:
        note(self, f"failed:{type(exc).__name__}")


class FailsWhileFlagged(Job, name="e2e.fails-while-flagged"):
    """Fails (no retries) while `$E2E_DIR/flag` exists, succeeds once it is gone."""

    tries = 1

    def handle(self) -> None:
        note(self, "start")
        if (e2e_dir() / "flag").exists():
            note(self, "fail")
            raise RuntimeError("the flag is up")
        note(self, "end")


class AsyncNap(Job, name="e2e.async-nap"):
    """An `async def handle` that awaits; many of them overlap on one event loop under --async."""

    seconds: float = 1.0

    async def handle(self) -> None:
        note(self, "start")
        await asyncio.sleep(self.seconds)
        note(self, "end")


class AsyncHangs(Job, name="e2e.async-hangs"):
    """Awaits far past its timeout: under --async it is cancelled for real."""

    tries = 1
    timeout = 1

    async def handle(self) -> None:
        note(self, "start")
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            note(self, "cancelled")
            raise
        note(self, "end")

    def failed(self, exc: BaseException) -> None:
        note(self, f"failed:{type(exc).__name__}")


class GatewayDown(RuntimeError):
    """A downstream outage: worth retrying later from the DLQ (triage)."""


class RowGone(RuntimeError):
    """What the job was for no longer exists: never worth keeping (triage)."""


class Triaged(Job, name="e2e.triaged"):
    """Fails with `GatewayDown` while `$E2E_DIR/flag` exists (retried from the DLQ by `failed triage`), or
    with `RowGone` when `gone` (discarded); succeeds otherwise."""

    tries = 1
    triage = [discard(RowGone), retry_later(GatewayDown, after=0)]
    gone: bool = False

    def handle(self) -> None:
        note(self, "start")
        if self.gone:
            raise RowGone("order deleted")
        if (e2e_dir() / "flag").exists():
            raise GatewayDown("503")
        note(self, "end")

    def failed(self, exc: BaseException) -> None:
        note(self, f"failed:{type(exc).__name__}")


def sqsjobs_setup(app: object) -> None:
    """Every process that loads these jobs (workers, `sqsjobs monitor`) notes queue events in
    `$E2E_DIR/queue-events.txt` (not `.log`: those are job markers), as a user's Slack listener would send them."""
    from sqsjobs.events import QueueEvent

    events = app.events  # type: ignore[attr-defined]

    @events.on("queue_busy", "worker_starting", "worker_stopping")
    def noted(event: QueueEvent) -> None:
        directory = os.environ.get("E2E_DIR")
        if directory:
            with open(Path(directory) / "queue-events.txt", "a") as f:
                f.write(f"{event.kind} {event.queue} {os.getpid()}\n")


if os.environ.get("E2E_SCHEDULES"):  # only the scheduler's end-to-end test declares one
    from sqsjobs import schedule
    from sqsjobs.cron import every_minute

    schedule(Record(tag="tick"), every_minute(), name="e2e.every-minute", without_overlapping=True)
