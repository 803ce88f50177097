"""Which ticks are due, and each one dispatched once, however many runners look (docs/scheduler.md).

A runner — the schedule Lambda every minute, `sqsjobs schedule run`, or `sqsjobs work --schedule` —
calls `Scheduler.run_due()`. For each schedule it reads the run record, takes the ticks since the last
one handled, and dispatches each through `once.dispatch_once` keyed by the schedule and the tick: the
first runner to mark a tick sends it, every other finds it sent. A runner killed between its mark and
its send leaves a mark the next runner takes over after the lease (sqsjobs.once: 60 s plus the store's
clock skew); until then no pass moves the schedule past that tick, so it is never lost, and it is never
sent twice unless a live send outlasts that lease.

Store items (pk `schedule#<name>`): `run` (the record: first seen, last tick handled, last dispatch,
and what `hooks.scheduled` writes when the run starts and ends), `tick#<ms>` (a tick's dispatch-once
mark), `missed#<ms>` (a missed window, so racing runners report it once).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import dispatch_plan, once
from .dispatch_plan import Planned
from .events import QueueEvent
from .schedules import MAX_CATCH_UP, Schedule, Schedules, missed_key, record_key, run_id, tick_key
from .timing import utc_iso

if TYPE_CHECKING:
    from .app import App

log = logging.getLogger("sqsjobs.scheduler")

#: The run record's life from first sight (updates keep its expiry): years, since a schedule is code.
RECORD_TTL_S = 10 * 365 * 86_400
#: A tick's dispatch-once mark: long enough that no runner still looks at the tick, short enough
#: that an every-minute schedule keeps a few thousand of them, not a month's worth.
TICK_TTL_S = 2 * 86_400
#: How far back a runner looks for missed ticks after downtime (older ones are neither run nor counted).
LOOKBACK_S = 7 * 86_400
#: A schedule seen for the first time takes the tick of the minute it was seen in, none before.
_FIRST_LOOK_S = 60
#: What a pass did with a tick that needs no second look.
_SETTLED = frozenset({"dispatched", "sent_elsewhere", "skipped_overlap", "skipped_condition"})
_MS = timedelta(milliseconds=1)


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one runner did with one tick (or, for `missed`, with a window of ticks)."""

    schedule: str
    tick: datetime
    what: str  # dispatched, sent_elsewhere, in_progress, skipped_overlap, skipped_condition, missed, failed
    job_id: str = ""
    detail: str = ""
    #: What made it `failed`, for a caller that wants to raise it (`schedule run --once`).
    error: BaseException | None = field(default=None, repr=False, compare=False)


class Scheduler:
    """Runs the schedules an app knows (its SQSJOBS_APP module's `schedule(...)` calls)."""

    def __init__(self, app: App, schedules: Schedules | None = None, owner: str = "") -> None:
        self.app = app
        self.schedules = schedules if schedules is not None else app.schedules
        self._owner = owner or f"scheduler-{id(self):x}"

    # -- one pass ------------------------------------------------------------------------
    def run_due(self, now: float | None = None, *, log_failures: bool = True) -> list[TickOutcome]:
        """Dispatch every due tick of every schedule. One schedule's failure never stops the others.
        `log_failures=False`: the caller reports the `failed` outcomes itself (`schedule run --once`
        raises the first as its one error line, and a traceback above it would say it twice)."""
        now = self.app.clock() if now is None else now
        outcomes: list[TickOutcome] = []
        for item in self.schedules:
            try:
                outcomes.extend(self._run_schedule(item, now))
            except Exception as exc:
                if log_failures:
                    log.exception("schedule %s: this pass failed; the next one looks again", item.name)
                failed = TickOutcome(item.name, _dt(now), "failed", detail=f"{type(exc).__name__}: {exc}", error=exc)
                outcomes.append(failed)
        return outcomes

    def _run_schedule(self, item: Schedule, now: float) -> list[TickOutcome]:
        record = self.record(item, now)
        start = max(float(record.get("last_tick_ms", 0)) / 1000, now - LOOKBACK_S)
        ticks = item.cron.ticks_between(_dt(start), _dt(now), limit=50_000)
        if not ticks:
            return []
        on_time = [t for t in ticks if now - t.timestamp() <= item.grace_s]
        late = [t for t in ticks if now - t.timestamp() > item.grace_s]
        to_run = sorted(on_time + _catch_up(item, late, bool(on_time)))
        outcomes = [self._tick(item, tick, now) for tick in to_run]
        settled = {o.tick for o in outcomes if o.what in _SETTLED}
        waiting = [o.tick for o in outcomes if o.what == "in_progress"]
        # A late tick that did not go out (not chosen by the catch-up, or its send failed) was missed.
        missed = [t for t in late if t not in settled and t not in waiting]
        if missed:
            outcomes.append(self._missed(item, missed, len(late)))
        # Ticks are handled up to the first one still open: a send that failed, or one another runner
        # marked and may have died in (its lease is taken over later); their marks stop a second send.
        unsettled = [t for t in to_run if t not in settled and t not in missed]
        handled = min(unsettled) - _MS if unsettled else ticks[-1]
        handled_ms = int(handled.timestamp() * 1000)
        if handled_ms > int(record.get("last_tick_ms", 0)):
            self.app.store.update(record_key(item.name), set={"last_tick_ms": handled_ms})
        return outcomes

    def record(self, item: Schedule, now: float) -> dict[str, Any]:
        """The schedule's run record; made on first sight, counting ticks from a minute ago (a new
        schedule has missed nothing, and a deploy must not run the ticks of the last `grace`)."""
        store = self.app.store
        found = store.get(record_key(item.name))
        if found is not None:
            return found
        first = {"since_ms": int(now * 1000), "last_tick_ms": int((now - _FIRST_LOOK_S) * 1000), "missed": 0}
        store.add(record_key(item.name), first, ttl=RECORD_TTL_S)
        return store.get(record_key(item.name)) or first

    def _tick(self, item: Schedule, tick: datetime, now: float) -> TickOutcome:
        tick_ms = int(tick.timestamp() * 1000)
        job_id = run_id(item.name, tick_ms)
        store = self.app.store
        key = tick_key(item.name, tick_ms)
        skipped = self._skip_reason(item, tick_ms, now)
        if skipped is not None:
            what, why = skipped
            # Marked like a sent tick, so no runner (a stale one, or one that judges later) sends it after all.
            store.add(key, {"state": "sent", "owner": f"{what}: {why}"[:300]}, ttl=TICK_TTL_S)
            return TickOutcome(item.name, tick, what, job_id, why)
        planned = Planned(item.job, item.queue, job_id=job_id, extra={"schedule": {"name": item.name, "tick": tick_ms}})

        def send() -> None:
            from .dispatching import send_planned

            with _sending_now():
                send_planned(self.app, [planned])

        try:
            sent = once.dispatch_once(store, self.app.clock, key, self._owner, send, ttl=TICK_TTL_S)
        except once.SendInProgress as exc:
            return TickOutcome(item.name, tick, "in_progress", job_id, str(exc))
        except Exception as exc:
            log.exception(
                "schedule %s: the tick at %s could not be sent; tried again", item.name, utc_iso(tick_ms / 1000)
            )
            return TickOutcome(item.name, tick, "failed", job_id, f"{type(exc).__name__}: {exc}"[:300], exc)
        if not sent:
            return TickOutcome(item.name, tick, "sent_elsewhere", job_id)
        try:
            store.update(
                record_key(item.name),
                set={"last_job_id": job_id, "last_dispatched_tick_ms": tick_ms, "dispatched_ms": int(now * 1000)},
            )
        except Exception:
            log.exception("schedule %s: dispatched %s but could not record it", item.name, job_id)
        log.info("schedule %s: dispatched %s (%s) for %s", item.name, item.job_name, job_id, utc_iso(tick_ms / 1000))
        return TickOutcome(item.name, tick, "dispatched", job_id)

    def _skip_reason(self, item: Schedule, tick_ms: int, now: float) -> tuple[str, str] | None:
        if item.condition is not None:
            try:
                if not item.condition():
                    return ("skipped_condition", "its condition is false")
            except Exception as exc:
                log.exception(
                    "schedule %s: its condition raised; the tick at %s is skipped", item.name, utc_iso(tick_ms / 1000)
                )
                return ("skipped_condition", f"its condition raised {type(exc).__name__}: {exc}")
        if item.without_overlapping:
            going = self._still_going(item, now)
            if going:
                log.info("schedule %s: the tick at %s is skipped: %s", item.name, utc_iso(tick_ms / 1000), going)
                return ("skipped_overlap", going)
        return None

    def _still_going(self, item: Schedule, now: float) -> str:
        """Why the previous run still holds `without_overlapping` ("" when it does not)."""
        record = self.app.store.get(record_key(item.name)) or {}
        job_id = record.get("last_job_id")
        if not job_id or record.get("finished_job_id") == job_id:
            return ""
        skew = self.app.store.skew
        if record.get("started_job_id") == job_id:
            # Until its timeout (or its retry's, after a release) has passed: a live run is interrupted at
            # its timeout, so a run "going" after that died with its worker.
            until = float(record.get("hold_until_ms", 0)) / 1000 + skew
            return f"its run {job_id} is still going" if now < until else ""
        until = float(record.get("dispatched_ms", 0)) / 1000 + item.overlap_expires_s + skew
        return f"its run {job_id} is queued and has not started" if now < until else ""

    def _missed(self, item: Schedule, missed: list[datetime], late: int) -> TickOutcome:
        """Report a window of missed ticks once, whichever runner sees it first."""
        last_ms = int(missed[-1].timestamp() * 1000)
        store = self.app.store
        outcome = TickOutcome(
            item.name, missed[-1], "missed", detail=f"{len(missed)} tick(s) from {utc_iso(missed[0].timestamp())}"
        )
        if not store.add(missed_key(item.name, last_ms), {"n": len(missed)}, ttl=TICK_TTL_S):
            return outcome
        store.update(record_key(item.name), set={"last_missed_ms": last_ms}, add={"missed": len(missed)})
        log.warning(
            "schedule %s: %d tick(s) were missed (%s to %s, no runner ran them in %gs); catch_up=%r ran %d",
            item.name,
            len(missed),
            utc_iso(missed[0].timestamp()),
            utc_iso(missed[-1].timestamp()),
            item.grace_s,
            item.catch_up,
            late - len(missed),
        )
        queue = self.app.queue_for(type(item.job), item.queue)
        detail = {
            "schedule": item.name,
            "job": item.job_name,
            "missed": len(missed),
            "first": utc_iso(missed[0].timestamp()),
            "last": utc_iso(missed[-1].timestamp()),
            "catch_up": item.catch_up,
        }
        self.app.events.emit(QueueEvent("schedule_missed", queue, detail))
        metrics = self.app.metrics
        if metrics is not None:
            metrics.count("schedule_missed", queue, item.job_name, len(missed))
        return outcome

    # -- outside ticks -------------------------------------------------------------------
    def dispatch_now(self, name: str) -> str:
        """`sqsjobs schedule test NAME`: the schedule's job, dispatched now. It is no tick: its run is not
        recorded and does not hold `without_overlapping`. Returns the job id."""
        item = self.schedules.get(name)
        with _sending_now():
            return self.app.dispatch(item.job, queue=item.queue).job_id

    def run_forever(self, stop: threading.Event, offset_s: float = 1.0, flush_metrics: bool = False) -> None:
        """A pass a little after each minute starts (ticks are whole minutes), until `stop` is set.
        `flush_metrics`: this process has no worker flushing the app's metrics (`schedule run`)."""
        while not stop.is_set():
            self.run_due()
            metrics = self.app.metrics
            if flush_metrics and metrics is not None:
                metrics.flush()
            now = time.time()
            stop.wait(max(1.0, 60 - now % 60 + offset_s))


def _catch_up(item: Schedule, late: list[datetime], on_time: bool) -> list[datetime]:
    """Which missed ticks run now: "once" runs the latest (none when an on-time tick runs in this very
    pass: that run is the one run), "skip" none, N the last N."""
    if not late or item.catch_up == "skip":
        return []
    if item.catch_up == "once":
        return [] if on_time else [late[-1]]
    return late[-min(int(item.catch_up), MAX_CATCH_UP) :]


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _sending_now() -> contextlib.AbstractContextManager[None]:
    """A tick is sent now, even inside a database transaction that holds dispatches (sqsjobs.after_commit):
    it is marked sent once, so one dropped by that transaction's rollback would never be sent."""
    if dispatch_plan.holder_for is None:
        return contextlib.nullcontext()  # nothing holds dispatches in this process
    from .after_commit import sending_now

    return sending_now()


def schedule_states(app: App) -> list[dict[str, Any]]:
    """Each declared schedule as `schedule list` and the dashboard show it: when it runs, its next tick,
    its last tick, its last run and how it ended, ticks missed (from its run record; one read each)."""
    now = app.clock()
    rows: list[dict[str, Any]] = []
    for item in app.schedules:
        record = app.store.get(record_key(item.name)) or {}
        last_job = record.get("last_job_id")
        finished = last_job is not None and record.get("finished_job_id") == last_job
        started = last_job is not None and record.get("started_job_id") == last_job
        rows.append(
            {
                "name": item.name,
                "job": item.job_name,
                "when": item.describe(),
                "tz": item.cron.tz,
                "next_ms": int(item.cron.next_after(datetime.fromtimestamp(now, UTC)).timestamp() * 1000),
                "last_tick_ms": record.get("last_dispatched_tick_ms"),
                "last_job_id": last_job,
                "state": (
                    "never run" if last_job is None else "finished" if finished else "running" if started else "queued"
                ),
                "outcome": record.get("outcome") if finished else None,
                "duration_ms": record.get("duration_ms") if finished else None,
                "missed": int(record.get("missed", 0) or 0),
                "last_missed_ms": record.get("last_missed_ms"),
                "without_overlapping": item.without_overlapping,
                "catch_up": item.catch_up,
            }
        )
    return rows
