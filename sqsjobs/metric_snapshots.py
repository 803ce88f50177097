"""Per-queue, per-minute job counters in the coordination table, so `sqsjobs dashboard` draws its charts
without CloudWatch (the role of Horizon's `horizon:snapshot`).

A poller and the Lambda handler listen to the job events (as `sqsjobs.metrics` does) and add them up in
memory by queue and minute: processed, failed, released, the runtimes' sum and maximum, the waits' sum.
Nothing is written per job. A poller flushes once a minute (the minutes that have ended) and when it
stops; the Lambda handler at the end of each invocation (a frozen container may never flush later). A
flush is one UpdateItem with ADD per queue and minute, so writers never read, never conflict, and any
number of them add into the same counters.

Items: pk `snapshot#<queue>#<hour start>#<shard>`, sk `<minute start>` (epoch seconds), living
SNAPSHOT_TTL_S. A writer picks one of SHARDS partition keys for its life, so the writes of many Lambda
containers in one minute spread over several partitions (docs/scaling.md: a hot key is spread over
several keys and read back together); a reader queries each hour's shards. Counts are sums, so a reader
adds the shards up; the maximum runtime is kept as a number set (ADD of one value per flush) whose
largest member is the minute's maximum.

A failed write is logged and dropped: these counters are for people looking at charts, never a reason
to change what happens to a job.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .events import Events, JobEvent
from .settings import Settings
from .stores.base import Store

log = logging.getLogger("sqsjobs.snapshots")

#: Snapshots live two days: the dashboard shows at most the last 48 hours.
SNAPSHOT_TTL_S = 48 * 3600
#: Partition keys a queue's writers spread over (each writer keeps one for its life).
SHARDS = 4
#: Counters added per queue and minute.
COUNTS = ("processed", "failed", "released", "runs", "runtime_ms", "waits", "wait_ms")
_PK = "snapshot#"


def minute_of(moment: float) -> int:
    return int(moment // 60) * 60


def partition(queue: str, hour: int, shard: int) -> str:
    return f"{_PK}{queue}#{hour}#{shard}"


@dataclass
class Minute:
    """One queue's counters for one minute (from one writer, or summed over all of them)."""

    queue: str
    at: int
    processed: int = 0
    failed: int = 0
    released: int = 0
    #: Runs that ended (processed, failed or released after running): what the runtime sum is over.
    runs: int = 0
    runtime_ms: int = 0
    runtime_max_ms: int = 0
    #: Runs whose wait is known (they carried a dispatch time), and the waits' sum.
    waits: int = 0
    wait_ms: int = 0

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in COUNTS}

    def merge(self, other: Minute) -> None:
        for name in COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.runtime_max_ms = max(self.runtime_max_ms, other.runtime_max_ms)


#: A writer: (key, counters to add, the runtime maximum, ttl) -> None.
Write = Callable[[tuple[str, str], dict[str, int], int, float], None]


@dataclass
class Snapshots:
    """Adds job events up by queue and minute; `tick()` flushes the minutes that ended, `flush()` all."""

    write: Write
    clock: Callable[[], float] = time.time
    shard: int = field(default_factory=lambda: random.randrange(SHARDS))
    _minutes: dict[tuple[str, int], Minute] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    #: Writes made (one per queue and minute flushed): what a test or a cost estimate counts.
    writes: int = field(default=0, init=False)

    def listen(self, event: JobEvent) -> None:
        """The events listener (`app.events.listen(snapshots.listen)`)."""
        kind = event.kind
        if kind not in ("processed", "failed", "released", "rejected"):
            return
        at = minute_of(self.clock())
        with self._lock:
            tally = self._minutes.get((event.queue, at))
            if tally is None:
                tally = self._minutes[(event.queue, at)] = Minute(event.queue, at)
            if kind == "rejected":  # it never ran: a failure with no runtime and no wait
                tally.failed += 1
                return
            setattr(tally, kind, getattr(tally, kind) + 1)
            runtime = max(0, round(event.runtime_s * 1000))
            tally.runs += 1
            tally.runtime_ms += runtime
            tally.runtime_max_ms = max(tally.runtime_max_ms, runtime)
            if event.dispatched_at:
                tally.waits += 1
                tally.wait_ms += max(0, round(event.wait_s * 1000))

    def tick(self) -> int:
        """Flush the minutes that have ended (call it as often as you like: a minute is written once)."""
        return self._flush(before=minute_of(self.clock()))

    def flush(self) -> int:
        """Flush everything collected, the current minute too (a poller stopping, a Lambda invocation
        ending); a later flush of the same minute adds to it."""
        return self._flush(before=None)

    def _flush(self, before: int | None) -> int:
        with self._lock:
            due = [key for key in self._minutes if before is None or key[1] < before]
            taken = [self._minutes.pop(key) for key in due]
        written = 0
        for minute in taken:
            key = (partition(minute.queue, minute.at - minute.at % 3600, self.shard), str(minute.at))
            try:
                self.write(key, minute.counts(), minute.runtime_max_ms, SNAPSHOT_TTL_S)
            except Exception as exc:
                log.warning(
                    "could not write the dashboard's snapshot of %s at %s (%s: %s); dropped "
                    "(SQSJOBS_SNAPSHOTS=false turns snapshots off)",
                    minute.queue,
                    minute.at,
                    type(exc).__name__,
                    exc,
                )
                continue
            written += 1
        self.writes += written
        return written


# -- writers ---------------------------------------------------------------------------------------


class DynamoDbWrite:
    """One UpdateItem per queue and minute: ADD the counters (and the runtime maximum to a number set),
    SET the expiry once. It creates the item if absent, so no writer ever reads or races another."""

    def __init__(self, table: str, clock: Callable[[], float] = time.time) -> None:
        self.table = table
        self._clock = clock

    def __call__(self, key: tuple[str, str], counts: dict[str, int], runtime_max: int, ttl: float) -> None:
        names = {f"#{name}": name for name in counts}
        values: dict[str, Any] = {f":{name}": {"N": str(value)} for name, value in counts.items()}
        adds = [f"#{name} :{name}" for name in counts]
        if counts.get("runs"):
            names["#runtime_max"] = "runtime_max"
            values[":runtime_max"] = {"NS": [str(runtime_max)]}
            adds.append("#runtime_max :runtime_max")
        values[":expires"] = {"N": str(math.ceil(self._clock() + ttl))}
        from . import aws  # boto3 loads on the first flush, not with the Lambda handler's module

        aws.client("dynamodb").update_item(
            TableName=self.table,
            Key={"pk": {"S": key[0]}, "sk": {"S": key[1]}},
            UpdateExpression=f"ADD {', '.join(adds)} SET expires_at = if_not_exists(expires_at, :expires)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )


class StoreWrite:
    """The same counters through the store protocol (the memory store: tests, one process)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()

    def __call__(self, key: tuple[str, str], counts: dict[str, int], runtime_max: int, ttl: float) -> None:
        with self._lock:
            found = self.store.update(key, add=counts)
            if found is None:
                self.store.add(key, {**counts, "runtime_max": runtime_max}, ttl)
            elif runtime_max > _largest(found.get("runtime_max")):
                self.store.update(key, set={"runtime_max": runtime_max})


# -- reading ---------------------------------------------------------------------------------------


def read(store: Store, queues: Iterable[str], since: float, until: float) -> dict[str, list[Minute]]:
    """Queue -> its minutes from `since` to `until`, oldest first, summed over the writers' shards; a
    minute nobody wrote is absent (nothing ran then, or no writer had snapshots on)."""
    out: dict[str, list[Minute]] = {}
    first, last = minute_of(since), minute_of(until)
    for queue in queues:
        minutes: dict[int, Minute] = {}
        for hour in range(first - first % 3600, last + 1, 3600):
            for shard in range(SHARDS):
                for sk, attrs in store.query(partition(queue, hour, shard)):
                    at = int(sk) if sk.isdigit() else -1
                    if first <= at <= last:
                        minutes.setdefault(at, Minute(queue, at)).merge(_minute(queue, at, attrs))
        out[queue] = [minutes[at] for at in sorted(minutes)]
    return out


def _minute(queue: str, at: int, attrs: dict[str, Any]) -> Minute:
    found = Minute(queue, at, runtime_max_ms=_largest(attrs.get("runtime_max")))
    for name in COUNTS:
        value = attrs.get(name, 0)
        setattr(found, name, int(value) if isinstance(value, int | Decimal) else 0)
    return found


def _largest(value: Any) -> int:
    if isinstance(value, set | frozenset | list | tuple):
        return int(max((v for v in value if isinstance(v, int | Decimal)), default=0))
    return int(value) if isinstance(value, int | Decimal) else 0


# -- wiring ----------------------------------------------------------------------------------------

_attached_lock = threading.Lock()


def shared_store(settings: Settings, connection: str | None = None) -> bool:
    """Whether these settings give the DynamoDB table (the store every process shares): snapshots in a
    process's memory store would be seen by nobody. `connection`: the one the App uses, which
    `App(connection=...)` may set apart from the settings (the same rule as `App.store`)."""
    used = connection or settings.connection
    return settings.store == "dynamodb" or (settings.store == "auto" and used == "sqs")


def attach(
    events: Events, settings: Settings, clock: Callable[[], float] = time.time, connection: str | None = None
) -> Snapshots | None:
    """The one collector on this event bus (an App's `events`), made and registered on the first call;
    None when SQSJOBS_SNAPSHOTS is off or the store is not the shared table. A worker started twice in
    one process, or every Lambda invocation, adds each event once."""
    if not settings.snapshots or not shared_store(settings, connection):
        return None
    with _attached_lock:
        found = getattr(events, "_sqsjobs_snapshots", None)
        if isinstance(found, Snapshots):
            return found
        snapshots = Snapshots(DynamoDbWrite(settings.table, clock), clock)
        events.listen(snapshots.listen)
        events._sqsjobs_snapshots = snapshots  # type: ignore[attr-defined]
        return snapshots
