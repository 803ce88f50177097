"""`fake()`: record dispatches instead of sending them (Laravel's `Queue::fake()` / `Bus::fake()`).

    with fake() as dispatched:
        signup(email="a@b.c")
    dispatched.assert_dispatched(SendWelcome, lambda job: job.user_id == 7, times=1)

The fake is an App like any other — the current app's settings and registry, the memory store and a
connection that records — made current for the block. Every way of dispatching (`dispatch`,
`dispatch_many`, chains, batches, `dispatch_async` off SQS) ends in that connection, so the fake sees
what would have been sent, as it would have been sent (delays aside), with no patching of sqsjobs itself.
Only the message actually sent is a dispatch: a chain's later links are not (they wait in its first
link, see `assert_chained`), nor is a batch's callback (see `FakeBatch.callbacks`).

`only=[...]` / `except_=[...]` fake some jobs and forward the messages of the others, as built, to the
connection of the app that was current before; their batch records stay in the fake's memory store.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..connections.base import BatchFailure, Connection, OutgoingMessage, QueueInfo
from ..connections.inline import NullConnection
from ..envelope import decode
from ..errors import BadMessageError
from ..function_jobs import wrapped_job_class
from ..payload_fields import load
from ..registry import default_registry
from .fake_records import (
    FakeBatch,
    FakeChain,
    Recorded,
    chain_matches,
    expected_name,
    is_job,
    matching_text,
    member_name,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from ..app import App
    from ..function_jobs import FunctionJob
    from ..job_class import Job

    #: What the assertions take: a job class, or a function job (`@job`), which stands for its class.
    JobType: TypeAlias = type[Job] | FunctionJob[..., Any]

J = TypeVar("J", bound="Job")
#: How many recorded dispatches a failure message lists before "... and N more".
MAX_LISTED = 30

__all__ = ["FakeBatch", "FakeChain", "FakeDispatches", "Recorded", "fake"]


class RecordingConnection(NullConnection):
    """The fake's connection: keeps what it is sent, forwards what the fake does not fake.

    `runs_inline` when nothing is forwarded: like the `sync` and `null` connections' bodies, a recorded body
    never leaves the process, so an encrypted job is recorded without KMS (and a delay is not applied).
    """

    name = "fake"  # receives, deletes and the rest are the null connection's no-ops

    def __init__(self, forward: Connection | None) -> None:
        #: Whether to record a message (else forward it); `fake()` sets it once the fake's app exists.
        self.keep: Callable[[str, OutgoingMessage], bool] = lambda queue, message: True
        self._forward = forward
        self.runs_inline = forward is None

    def send(self, queue: str, message: OutgoingMessage) -> str:
        if self.keep(queue, message) or self._forward is None:
            return ""
        return self._forward.send(queue, message)

    def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        others = [m for m in messages if not self.keep(queue, m)]
        return self._forward.send_batch(queue, others) if others and self._forward is not None else []

    def queue_info(self, queue: str) -> QueueInfo:
        return QueueInfo(queue, f"fake://{queue}", 0, queue.endswith(".fifo"), None, None)


class FakeDispatches:
    """What was dispatched under `fake()`, and the assertions on it (usable after the block too)."""

    def __init__(self, app: App, faked: Callable[[type[Job]], bool]) -> None:
        self.app = app
        self._faked = faked
        self.dispatches: list[Recorded] = []
        self._batch_order: list[str] = []

    # -- recording ------------------------------------------------------------------------------
    def keep(self, queue: str, message: OutgoingMessage) -> bool:
        """Record `message` if its job is faked; False tells the connection to forward it."""
        envelope = decode(message.body)
        try:
            cls = self.app.registry.get(envelope.job)
        except BadMessageError:  # a producer's narrow registry dispatching another service's job
            cls = default_registry.get(envelope.job)
        if not self._faked(cls):
            return False
        if envelope.encrypted is not None:  # sealed because it might have been forwarded: open it again
            from ..encryption import open_envelope

            envelope = open_envelope(self.app.encryptor, envelope)
        job = load(cls, envelope.payload)
        self.dispatches.append(Recorded(queue, envelope, job))
        if envelope.batch_id and envelope.batch_id not in self._batch_order:
            self._batch_order.append(envelope.batch_id)
        return True

    # -- what was recorded ----------------------------------------------------------------------
    @overload
    def jobs(self, cls: type[J] | None = None) -> list[J]: ...
    @overload
    def jobs(self, cls: FunctionJob[..., Any]) -> list[Any]: ...
    def jobs(self, cls: JobType | None = None) -> list[Any]:
        """The job instances dispatched (of `cls`), in order, for asserts of your own."""
        job_cls: type[Job] | None = wrapped_job_class(cls)
        return [r.job for r in self.dispatches if job_cls is None or is_job(r, job_cls)]

    def recorded(self, cls: JobType | None = None, predicate: Callable[[Any], bool] | None = None) -> list[Recorded]:
        job_cls: type[Job] | None = wrapped_job_class(cls)
        return [
            r
            for r in self.dispatches
            if (job_cls is None or is_job(r, job_cls)) and (predicate is None or predicate(r.job))
        ]

    @property
    def chains(self) -> list[FakeChain]:
        """Chains dispatched, from the first link's message (or, for one starting with a batch, the
        batch record that keeps the rest). A chain that is a batch member is part of that batch."""
        found = [
            self._chain(r.envelope.chain, [r.job])
            for r in self.dispatches
            if r.envelope.chain and r.envelope.chain.get("pos") == 0 and not r.envelope.batch_id
        ]
        for fake_batch, item in self._batch_records():
            if item.get("continuation"):
                state = json.loads(item["continuation"])
                if state.get("pos") == 0:
                    found.append(self._chain(state, [fake_batch]))
        return found

    @property
    def batches(self) -> list[FakeBatch]:
        return [fake_batch for fake_batch, _ in self._batch_records()]

    def _batch_records(self) -> list[tuple[FakeBatch, dict[str, Any]]]:
        from ..batch_shards import meta
        from ..batches import list_batches

        ids = list(self._batch_order)
        ids += [b.id for b in reversed(list_batches(self.app)) if b.id not in ids]  # empty batches send nothing
        out = []
        for batch_id in ids:
            item = self.app.store.get(meta(batch_id)) or {}
            callbacks = {k: self._link_job(link) for k, link in json.loads(item.get("callbacks") or "{}").items()}
            fake_batch = FakeBatch(
                batch_id,
                str(item.get("name") or ""),
                item.get("queue"),
                bool(item.get("allow_failures")),
                [self._member(r) for r in self.dispatches if r.envelope.batch_id == batch_id],
                {k: job for k, job in callbacks.items() if job is not None},
            )
            out.append((fake_batch, item))
        return out

    def _chain(self, state: dict[str, Any], first: list[Any]) -> FakeChain:
        steps = first + [self._step(link) for link in state.get("next") or []]
        catch = self._link_job(state["catch"]) if state.get("catch") else None
        return FakeChain(str(state["id"]), steps, catch)

    def _step(self, link: dict[str, Any]) -> Any:
        if "batch" in link:
            spec = link["batch"]
            members = [
                [self._link_job(x) for x in m["chain"]] if "chain" in m else self._link_job(m) for m in spec["jobs"]
            ]
            return FakeBatch("", spec.get("name") or "", spec.get("queue"), bool(spec.get("allow_failures")), members)
        return self._link_job(link)

    def _member(self, record: Recorded) -> Any:
        """A batch member as given to `batch([...])`: the job, or the chain's jobs as a list."""
        chain = record.envelope.chain
        if not chain:
            return record.job
        return [record.job] + [self._link_job(link) for link in chain.get("next") or []]

    def _link_job(self, link: dict[str, Any]) -> Job | None:
        """The job a link names; None when its payload is sealed (an encrypted job, forwarding on)."""
        if "encrypted" in link or "job" not in link:
            return None
        from ..links import to_job

        return to_job(self.app.registry, link)

    # -- assertions -----------------------------------------------------------------------------
    def assert_dispatched(
        self, cls: JobType, predicate: Callable[[Any], bool] | None = None, *, times: int | None = None
    ) -> None:
        """At least one `cls` job (matching `predicate`) was dispatched; exactly `times` when given."""
        self._count(self.recorded(cls, predicate), cls, predicate, times, "")

    def assert_dispatched_on(
        self, queue: str, cls: JobType, predicate: Callable[[Any], bool] | None = None, *, times: int | None = None
    ) -> None:
        """As `assert_dispatched`, counting only dispatches to the logical queue `queue`."""
        found = [r for r in self.recorded(cls, predicate) if r.queue == queue]
        self._count(found, cls, predicate, times, f" on queue {queue!r}")

    def assert_not_dispatched(self, cls: JobType, predicate: Callable[[Any], bool] | None = None) -> None:
        found = self.recorded(cls, predicate)
        if found:
            self._fail(f"{cls.__name__}{matching_text(predicate)} was dispatched {len(found)} time(s); expected none")

    def assert_nothing_dispatched(self) -> None:
        """No job was dispatched and no batch created (an empty batch sends nothing but is one)."""
        if self.dispatches or self.batches:
            self._fail("expected nothing dispatched")

    def assert_chained(self, expected: Sequence[Any]) -> None:
        """A chain of exactly these steps was dispatched: a job class matches any job of it, a job
        instance an equal one (same class and payload), `FakeBatch` or `PendingBatch` a batch link."""
        expected = [wrapped_job_class(e) for e in expected]
        if not any(chain_matches(c.steps, expected) for c in self.chains):
            wanted = ", ".join(expected_name(e) for e in expected)
            self._fail(f"expected a chain of [{wanted}]")

    def assert_batched(self, predicate: Callable[[FakeBatch], bool] | None = None) -> None:
        """A batch (matching `predicate`, given a `FakeBatch`) was dispatched."""
        if not any(predicate is None or predicate(b) for b in self.batches):
            self._fail(f"expected a batch{matching_text(predicate)}")

    def assert_batch_count(self, count: int) -> None:
        found = len(self.batches)
        if found != count:
            self._fail(f"expected {count} batch(es), {found} dispatched")

    def assert_nothing_batched(self) -> None:
        self.assert_batch_count(0)

    def _count(
        self, found: list[Recorded], cls: JobType, predicate: Callable[[Any], bool] | None, times: int | None, on: str
    ) -> None:
        what = f"{cls.__name__}{matching_text(predicate)}{on}"
        if times is None and not found:
            self._fail(f"expected {what} to be dispatched")
        elif times is not None and len(found) != times:
            self._fail(f"expected {what} to be dispatched {times} time(s), it was {len(found)} time(s)")

    def _fail(self, headline: str) -> None:
        raise AssertionError(f"{headline}\n{self.summary()}")

    def summary(self) -> str:
        """Every dispatch and batch recorded, one a line (what a failed assertion shows)."""
        if not self.dispatches and not self.batches:
            return "nothing was dispatched"
        lines = [f"dispatched ({len(self.dispatches)}):"]
        lines += [f"  {i}. {r.describe()}" for i, r in enumerate(self.dispatches[:MAX_LISTED], 1)]
        if len(self.dispatches) > MAX_LISTED:
            lines.append(f"  ... and {len(self.dispatches) - MAX_LISTED} more")
        for b in self.batches[:MAX_LISTED]:
            members = ", ".join(member_name(m) for m in b.jobs[:10]) + (", ..." if len(b.jobs) > 10 else "")
            lines.append(f"batch {b.id[:8]} name={b.name!r} ({len(b.jobs)} job(s): {members})")
        return "\n".join(lines)


@contextlib.contextmanager
def fake(only: Iterable[JobType] | None = None, except_: Iterable[JobType] | None = None) -> Iterator[FakeDispatches]:
    """Record dispatches in this block instead of sending them (this context, thread- and task-local).

    `only`: fake these job classes only; `except_`: fake all but these. The others are sent, as built,
    through the connection of the app current before. The previous app is current again afterwards,
    whatever the block raised.
    """
    from ..app import App, current_app

    if only is not None and except_ is not None:
        raise ValueError("fake() takes `only` or `except_`, not both")
    previous = current_app()
    chosen = {c.job_name for c in (only if only is not None else except_ or ())}

    def faked(cls: type[Job]) -> bool:
        if only is not None:
            return cls.job_name in chosen
        return cls.job_name not in chosen

    forwards = only is not None or except_ is not None
    connection = RecordingConnection(previous.connection if forwards else None)
    app = App(
        previous.settings.model_copy(update={"store": "memory"}),
        connection=connection,
        registry=previous.registry,
        clock=previous.clock,
        triage=previous.triage,
    )
    app.signing_key = previous.signing_key  # as resolved (or set in code) already: no second secret read
    dispatches = FakeDispatches(app, faked)
    connection.keep = dispatches.keep
    with app.activate():
        yield dispatches
