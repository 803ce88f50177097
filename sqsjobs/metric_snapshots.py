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
adds the shards up; the maximum runtime is kept as a number set (ADD of one value per flush, rounded up
to a coarse step so the set stays small) whose largest member is the minute's maximum. Hours that have
settled do not change: a long-lived reader (`History`) reads them once and then only the recent ones.

A failed write is logged and dropped, with the rest of that flush (one attempt, short timeouts: a Lambda
invocation never waits seconds for them): these counters are for people looking at charts, never a reason
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
#: Seconds a flush keeps for its last write: one attempt's connect and read timeouts (aws.QUICK_TIMEOUTS),
#: and a margin. A Lambda invocation with less left writes nothing.
RESERVE_S = 2.5
#: An hour's snapshots stop changing this long after it ends (a Lambda invocation, up to 15 minutes long,
#: flushes the minutes it counted when it ends); until then a reader reads the hour again.
SETTLED_S = 20 * 60
#: Counters added per queue and minute.
COUNTS = ("processed", "failed", "released", "runs", "runtime_ms", "waits", "wait_ms")
_PK = "snapshot#"


def minute_of(moment: float) -> int:
    return int(moment // 60) * 60


def partition(queue: str, hour: int, shard: int) -> str:
    return f"{_PK}{queue}#{hour}#{shard}"


@dataclass(slots=True)
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


#: The job events a snapshot counts.
COUNTED_KINDS = ("processed", "failed", "released", "rejected")


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
    #: Queue-minutes not written (a failed write, or no time left): each flush that drops logs once.
    dropped: int = field(default=0, init=False)

    def listen(self, event: JobEvent) -> None:
        """The events listener (`app.events.listen(snapshots.listen)`)."""
        # Runs for every job that ends (on its thread, under a lock other job threads share): kept to
        # plain attribute arithmetic, with no helper calls.
        kind = event.kind
        if kind not in COUNTED_KINDS:
            return
        key = (event.queue, int(self.clock() // 60) * 60)  # minute_of, inlined
        with self._lock:
            tally = self._minutes.get(key)
            if tally is None:
                tally = self._minutes[key] = Minute(*key)
            if kind == "processed":
                tally.processed += 1
            elif kind == "rejected":  # it never ran: a failure with no runtime and no wait
                tally.failed += 1
                return
            elif kind == "failed":
                tally.failed += 1
            elif kind == "released":
                tally.released += 1
            runtime = round(event.runtime_s * 1000)
            if runtime > 0:
                tally.runtime_ms += runtime
                tally.runtime_max_ms = max(tally.runtime_max_ms, runtime)
            tally.runs += 1
            if event.dispatched_at:
                tally.waits += 1
                if event.wait_s > 0:
                    tally.wait_ms += round(event.wait_s * 1000)

    def tick(self, remaining_s: float | None = None) -> int:
        """Flush the minutes that have ended (call it as often as you like: a minute is written once).
        `remaining_s` as for `flush`."""
        budget = None if remaining_s is None else remaining_s - RESERVE_S
        return self._flush(before=minute_of(self.clock()), budget_s=budget)

    def flush(self, remaining_s: float | None = None) -> int:
        """Flush everything collected, the current minute too (a poller stopping, a Lambda invocation
        ending); a later flush of the same minute adds to it.

        `remaining_s`: the time the caller has left (a Lambda invocation's). A write is started only while
        more than RESERVE_S is left, so the flush never makes the invocation overrun; what is not
        written then is dropped (logged once), never retried in this invocation."""
        budget = None if remaining_s is None else remaining_s - RESERVE_S
        return self._flush(before=None, budget_s=budget)

    def _flush(self, before: int | None, budget_s: float | None) -> int:
        with self._lock:
            due = [key for key in self._minutes if before is None or key[1] < before]
            taken = [self._minutes.pop(key) for key in due]
        deadline = None if budget_s is None else time.monotonic() + budget_s
        written, why = 0, ""
        for minute in taken:
            if deadline is not None and time.monotonic() >= deadline:
                why = f"less than {RESERVE_S:g}s of the invocation left"
                break
            key = (partition(minute.queue, minute.at - minute.at % 3600, self.shard), str(minute.at))
            try:
                self.write(key, minute.counts(), bucket_ms(minute.runtime_max_ms), SNAPSHOT_TTL_S)
            except Exception as exc:
                # One attempt, then the rest of this flush is dropped: the next write would most likely
                # meet the same throttling or outage, and each costs time a Lambda invocation pays for.
                why = f"{type(exc).__name__}: {exc}"
                break
            written += 1
        self.writes += written
        if why:
            lost = len(taken) - written
            self.dropped += lost
            log.warning(
                "could not write the dashboard's snapshots of %d queue-minute(s) (%s); dropped "
                "(SQSJOBS_SNAPSHOTS=false turns snapshots off)",
                lost,
                why,
            )
        return written


def bucket_ms(runtime_ms: int) -> int:
    """A runtime rounded up to a step of 2^(k/4) ms, to whole ms (250 -> 256, 400 -> 431, 1000 -> 1024).

    The maximum is kept as a number set, which grows by one member per distinct value added: with four
    steps per doubling a minute's set holds a handful of members however many writers flush into it,
    so its item (and what each write costs) stays small. The maximum shown is at most 19% (or 1 ms)
    above the true one."""
    if runtime_ms <= 0:
        return 0
    return math.ceil(2 ** (math.ceil(math.log2(runtime_ms) * 4 - 1e-9) / 4) - 1e-9)


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

        # Its own client: one attempt with short timeouts. The shared one retries 5 times with backoff
        # and waits 35 s for a reply, which a throttled write would add to the end of an invocation.
        aws.quick_client("dynamodb").update_item(
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
    return History(store).read(queues, since, until)


def _read_hour(store: Store, queue: str, hour: int) -> dict[int, Minute]:
    """One queue's hour (every shard's Query, eventually consistent: a chart may miss the last second)."""
    minutes: dict[int, Minute] = {}
    for shard in range(SHARDS):
        for sk, attrs in store.query(partition(queue, hour, shard), consistent=False):
            if sk.isdigit():
                at = int(sk)
                minutes.setdefault(at, Minute(queue, at)).merge(_minute(queue, at, attrs))
    return minutes


class History:
    """Snapshot reads for a reader that asks again and again (the dashboard's overview): an hour that has
    settled (SETTLED_S after its end) is read once and kept; only the recent hours are read each time.
    48 hours of one queue cost 196 Queries the first time, then 4 to 8."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._settled: dict[tuple[str, int], dict[int, Minute]] = {}
        self._lock = threading.Lock()

    def read(self, queues: Iterable[str], since: float, until: float) -> dict[str, list[Minute]]:
        out: dict[str, list[Minute]] = {}
        first, last = minute_of(since), minute_of(until)
        hours = range(first - first % 3600, last + 1, 3600)
        for queue in queues:
            found: list[Minute] = []
            for hour in hours:
                minutes = self._hour(queue, hour, settled=hour + 3600 + SETTLED_S <= until)
                found.extend(minutes[at] for at in sorted(minutes) if first <= at <= last)
            out[queue] = found
        with self._lock:  # what has expired from the table leaves the cache too
            for key in [k for k in self._settled if k[1] < until - SNAPSHOT_TTL_S - 3600]:
                del self._settled[key]
        return out

    def _hour(self, queue: str, hour: int, *, settled: bool) -> dict[int, Minute]:
        if settled:
            with self._lock:
                kept = self._settled.get((queue, hour))
            if kept is not None:
                return kept
        minutes = _read_hour(self.store, queue, hour)
        if settled:
            with self._lock:
                self._settled[(queue, hour)] = minutes
        return minutes


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
        events.listen(snapshots.listen, kinds=COUNTED_KINDS)
        events._sqsjobs_snapshots = snapshots  # type: ignore[attr-defined]
        return snapshots
