"""The consumers a `make bench` run measures, and what one run of each leaves behind.

Each consumer is a `System` (a kind of child process in benchmarks.consumers, with its options); each run of
one is a `Phase` (what the child measured, what the moto server counted). benchmarks.bench runs them,
benchmarks.summary turns the phases into the printed numbers and the targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from . import peers
from .harness import (
    BOTO3_CONSUMER_KEY,
    BOTO3_DISPATCH_KEY,
    SQSJOBS_DISPATCH_KEY,
    SQSJOBS_WORKER_KEY,
    ChildResult,
    Counts,
)

#: `sqsjobs work` as measured: setting -> (extra options, the job it runs). "defaults" passes none.
SQSJOBS_SETTINGS: dict[str, tuple[str, str]] = {
    "defaults": ("", "Noop"),
    "concurrency4": ("--concurrency 4", "Noop"),
    "concurrency10": ("--concurrency 10", "Noop"),
    "async4": ("--async --concurrency 4", "AsyncNoop"),
}


#: The hand-written loops that check real envelopes, sent by sqsjobs (benchmarks.consumers).
CHECKED_KINDS = ("boto3-checked", "boto3-checked-pool", "boto3-asyncio-checked")


@dataclass(frozen=True)
class System:
    """One consumer as measured: `name` is its suffix in the printed names."""

    name: str
    kind: str  # benchmarks.consumers kind
    label: str
    worker_args: str = ""
    job: str = "Noop"
    #: at most this many of the jobs (the first waves of the same run), for a consumer too slow for them all
    max_jobs: int | None = None

    @property
    def raw(self) -> bool:
        """A hand-written loop (benchmarks.consumers), fed plain JSON by the raw boto3 producer."""
        return self.kind.startswith("boto3") or self.kind == "aiobotocore"

    @property
    def keys(self) -> tuple[str, str]:
        """(dispatch key, consumer key): who signs the producer's and the consumer's calls."""
        if self.kind == "sqsjobs":
            return SQSJOBS_DISPATCH_KEY, SQSJOBS_WORKER_KEY
        if self.kind in CHECKED_KINDS:
            return SQSJOBS_DISPATCH_KEY, BOTO3_CONSUMER_KEY  # its jobs are real envelopes, sent by sqsjobs
        if self.raw:
            return BOTO3_DISPATCH_KEY, BOTO3_CONSUMER_KEY
        tag = self.kind.replace("-", "").upper()
        return f"BENCH{tag}DISPATCH", f"BENCH{tag}WORKER"


SQSJOBS_SYSTEMS = [
    System(
        f"sqsjobs_{name}", "sqsjobs", f"sqsjobs work {args}".strip() + (" (defaults)" if not args else ""), args, job
    )
    for name, (args, job) in SQSJOBS_SETTINGS.items()
]
BOTO3 = System("boto3", "boto3", "raw boto3 loop")
#: The raw loop plus what sqsjobs' standards require of any consumer per job (benchmarks.consumers).
CHECKED = System("boto3_checked", "boto3-checked", "boto3 loop + envelope, payload check, log line")
#: The same checks with each received batch on a pool of 4 threads, for `--concurrency 4` to be read against:
#: four threads taking turns on the jobs (no receive overlapping them, no thread of its own for deletes).
CHECKED_POOL = System(
    "boto3_checked_pool4", "boto3-checked-pool", "checked loop, each batch on 4 threads", "--concurrency 4"
)
#: The same on 10 threads, for `--concurrency 10` to be read against (and so for that setting's comparison
#: with sqs-workers, which runs its jobs on one thread): like the 4-thread one, the threads' part only.
CHECKED_POOL10 = System(
    "boto3_checked_pool10", "boto3-checked-pool", "checked loop, each batch on 10 threads", "--concurrency 10"
)
#: The same checks in a task per job on a loop thread (the `boto3_asyncio` loop below, validating `AsyncNoop`
#: and awaiting its `async def handle`), for `--async --concurrency 4` to be read against: the asyncio floor
#: without the checks cannot say what any consumer of this project pays to run its jobs on a loop.
CHECKED_ASYNCIO = System(
    "boto3_asyncio_checked", "boto3-asyncio-checked", "checked loop, a task per job on a loop thread", job="AsyncNoop"
)
PEER_SYSTEMS = [System(peer.replace("-", "_"), peer, peer) for peer in peers.PEERS]
#: What running each job as an asyncio task costs any consumer, for `sqsjobs work --async` to be read against:
#: the raw loop handing each message's coroutine to a loop thread, and a loop written for asyncio by hand.
ASYNC_FLOORS = [
    System("boto3_asyncio", "boto3-asyncio", "boto3 loop + a task per job on a loop thread"),
    System("aiobotocore", "aiobotocore", "aiobotocore loop, a task per job"),
]


@dataclass
class Phase:
    """One consumer run: what the child measured, what the server counted, the producer's CPU."""

    system: System
    jobs: int
    child: ChildResult
    counts: Counts
    dispatch_cpu_s: float

    def calls(self, action: str | None = None) -> int:
        return self.counts.calls(self.system.keys, "sqs", action)


@dataclass
class Outcome:
    """Every run of every consumer, plus what was skipped and why."""

    runs: dict[str, list[Phase]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
