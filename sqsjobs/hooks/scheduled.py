"""A schedule's runs in the runner: when a tick's job starts and how it ends, on the schedule's record.

`sqsjobs schedule list` shows it, and `without_overlapping` reads it: a tick is skipped while the
last tick's job is dispatched and not finished. Only the schedule's latest run is recorded, and only a
message whose job id is the one the scheduler derives for that schedule and tick (`schedules.run_id`):
an older run delivered again changes nothing, and a run that starts before the scheduler has recorded
its tick (a fast worker) records it itself if a scheduler claimed that tick. The id is derived,
not secret — anyone who can send to the queue could forge it, which signing (SQSJOBS_SIGNING_KEY)
prevents. Other jobs pay one dictionary lookup and import nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..decisions import Ack, Decision, Fail, Release
from ..runner import Delivery, Hook

if TYPE_CHECKING:
    from ..schedules import Schedules
    from ..stores.base import Store

log = logging.getLogger("sqsjobs.scheduler")

#: A started run holds `without_overlapping` until its timeout has passed by this much more.
_HOLD_MARGIN_S = 60


class ScheduledRuns(Hook):
    name = "scheduled"
    features_only = True  # the schedule's mark (`extra`)

    def __init__(
        self, store: Callable[[], Store], clock: Callable[[], float], schedules: Callable[[], Schedules]
    ) -> None:
        self._store = store
        self._clock = clock
        self._schedules = schedules

    def quiet(self, delivery: Delivery) -> bool:
        return self._schedule_of(delivery) is None

    def on_start(self, delivery: Delivery) -> Decision | None:
        name = self._schedule_of(delivery)
        if name is not None:
            delivery.notes[self.name] = now = self._clock()
            assert delivery.envelope is not None
            self._record(
                name,
                delivery,
                {
                    "started_job_id": delivery.envelope.id,
                    "started_ms": int(now * 1000),
                    "hold_until_ms": int((now + delivery.timeout + _HOLD_MARGIN_S) * 1000),
                },
            )
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        name = self._schedule_of(delivery)
        if name is None:
            return None
        assert delivery.envelope is not None
        now = self._clock()
        if isinstance(decision, Release):
            # A retry later is the same run: it holds `without_overlapping` until the retry's own timeout.
            hold = now + decision.delay + delivery.timeout + _HOLD_MARGIN_S
            self._record(name, delivery, {"hold_until_ms": int(hold * 1000)})
            return None
        if not isinstance(decision, Ack | Fail):
            return None  # postponed before it ran: its message comes back
        started = delivery.notes.get(self.name)
        changes: dict[str, Any] = {
            "finished_job_id": delivery.envelope.id,
            "finished_ms": int(now * 1000),
            "outcome": (
                ("ok" if decision.outcome == "done" else decision.outcome)
                if isinstance(decision, Ack)
                else f"failed: {decision.reason}"[:200]
            ),
        }
        if isinstance(started, float):
            changes["duration_ms"] = int((now - started) * 1000)
        self._record(name, delivery, changes)
        return None

    def _schedule_of(self, delivery: Delivery) -> str | None:
        envelope = delivery.envelope
        if envelope is None or not envelope.extra:
            return None
        mark = envelope.extra.get("schedule")
        if not isinstance(mark, dict):
            return None
        name, tick = mark.get("name"), mark.get("tick")
        if not isinstance(name, str) or type(tick) is not int:
            return None
        schedules = self._schedules()
        if name not in schedules:
            return None
        from ..schedules import run_id  # only scheduled jobs load the schedule modules (Lambda cold starts)

        if schedules.get(name).job_name != envelope.job or run_id(name, tick) != envelope.id:
            return None
        return name

    def _record(self, name: str, delivery: Delivery, changes: dict[str, Any]) -> None:
        """Only for the schedule's latest run: an older run delivered again (an SQS duplicate, a `failed
        retry`) must not make the latest look unfinished. Only what `list` shows and `without_overlapping`
        reads: a failure here must not touch the job.

        The scheduler records a tick's job as the latest only after sending it, so a fast worker can start
        (even finish) it first: a tick newer than the recorded one, which a scheduler claimed to send, is
        this run's to record as the latest. Dropping its marks instead would leave it "queued" for good,
        and `without_overlapping` would skip every later tick until the hold expired."""
        from ..schedules import record_key

        assert delivery.envelope is not None
        job_id, tick = delivery.envelope.id, delivery.envelope.extra["schedule"]["tick"]
        try:
            store = self._store()
            record = store.get(record_key(name)) or {}
            if record.get("last_job_id") == job_id:
                store.update(record_key(name), set=changes)
            elif int(record.get("last_dispatched_tick_ms") or 0) < tick and _claimed(store, name, tick):
                store.update(record_key(name), set={"last_job_id": job_id, "last_dispatched_tick_ms": tick, **changes})
        except Exception:
            log.exception("schedule %s: could not record its run (%s)", name, ", ".join(changes))


def _claimed(store: Store, name: str, tick: int) -> bool:
    """Whether a scheduler claimed `tick` to send it (its mark is written before the send). A run of a tick
    no scheduler claimed, or one it skipped, came from another sender: it must not become the latest run,
    or its start would hold `without_overlapping` against the real tick."""
    from ..schedules import tick_key

    mark = store.get(tick_key(name, tick)) or {}
    return mark.get("state") in ("sending", "sent") and not str(mark.get("owner", "")).startswith("skipped_")
