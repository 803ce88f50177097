"""One message delivered twice at once — with the same receive count — runs a chain link or batch
member once.

SQS standard queues are at-least-once: a receive can hand out a message another receive already
holds, and the two copies can carry the same ApproximateReceiveCount (moto's HTTP server races the
same way, which is how the soak found it: a batch member ran in two workers, both as attempt 2).
Only the receipt handle tells such copies apart. The memory store is used where threads race
(moto's DynamoDB does not serialise conditional writes across threads).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from sqsjobs import Ack, App, Job, Postpone, batch, chain, idempotency, runs
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.provisioning import provision
from sqsjobs.stores.base import Key, Store
from sqsjobs.stores.dynamodb import DynamoDbStore
from sqsjobs.stores.memory import MemoryStore
from tests.helpers import FakeClock


class Blocking(Job, name="dup.blocking"):
    started: ClassVar[list[int]] = []
    gate: ClassVar[threading.Event] = threading.Event()
    inside: ClassVar[threading.Event] = threading.Event()
    n: int

    def handle(self) -> None:
        Blocking.started.append(self.n)
        Blocking.inside.set()
        assert Blocking.gate.wait(10), "the test never let the first run finish"


def _twice_at_once(app: App, same_receipt: bool = False) -> tuple[object, object, list[int]]:
    """Deliver the queue's one message on a thread, and its duplicate (same message id and receive count,
    another receipt — or, as Lambda may re-invoke with one event, the same one) while the first runs;
    then a third time after both."""
    Blocking.started.clear()
    Blocking.gate.clear()
    Blocking.inside.clear()
    (first,) = app.connection.receive("default", 10, 0)
    duplicate = first if same_receipt else dataclasses.replace(first, receipt_handle=first.receipt_handle + "-dup")
    decided: list[object] = []
    runner = threading.Thread(target=lambda: decided.append(app.runner.process(first)))
    runner.start()
    assert Blocking.inside.wait(10)
    during = app.runner.process(duplicate)
    Blocking.gate.set()
    runner.join(10)
    after = app.runner.process(dataclasses.replace(first, receipt_handle=first.receipt_handle + "-late"))
    return decided[0], (during, after), list(Blocking.started)


def test_a_batch_member_delivered_twice_with_one_receive_count_runs_once() -> None:
    app = App(connection="memory", store="memory")
    created = batch([Blocking(n=1)]).dispatch(app)
    first, (during, after), started = _twice_at_once(app)
    assert started == [1], "the duplicate receipt ran the member as well"
    assert first == Ack()
    assert isinstance(during, Postpone), "a live run's duplicate must wait, not run"
    assert isinstance(after, Ack), "once the run is decided a copy is only acknowledged"
    found = created.fresh()
    assert (found.processed, found.failed) == (1, 0), "the batch counted the member more than once"


def test_a_batch_member_in_an_event_lambda_delivers_twice_runs_once() -> None:
    # Lambda may invoke again with the very same event (same receipt handle) when it missed the answer.
    app = App(connection="memory", store="memory")
    batch([Blocking(n=2)]).dispatch(app)
    first, (during, after), started = _twice_at_once(app, same_receipt=True)
    assert started == [2] and first == Ack() and isinstance(during, Postpone) and isinstance(after, Ack)


def test_a_chain_link_delivered_twice_with_one_receive_count_runs_once() -> None:
    app = App(connection="memory", store="memory")
    chain([Blocking(n=7)]).dispatch(app)
    first, (during, _), started = _twice_at_once(app)
    assert started == [7] and first == Ack() and isinstance(during, Postpone)


def _message(receipt: str, rc: int = 2) -> ReceivedMessage:
    return ReceivedMessage("q", "m-1", receipt, "{}", rc, 0.0)


@pytest.fixture(params=["memory", "dynamodb"])
def store_of(request: pytest.FixtureRequest) -> Callable[[FakeClock], Store]:
    if request.param == "dynamodb":  # the conditional delete the takeover relies on, on DynamoDB's terms
        request.getfixturevalue("moto")
        provision(App(connection="sqs"), [], table=True, bucket=False)
        return lambda clock: DynamoDbStore("sqsjobs", clock=clock)
    return MemoryStore


def test_a_run_claim_is_taken_over_by_one_delivery_only_after_its_run_is_over(
    store_of: Callable[[FakeClock], Store],
) -> None:
    clock = FakeClock()
    store = store_of(clock)
    a, b, c = _message("r-a"), _message("r-b"), _message("r-c", rc=3)
    assert runs.claim_run(store, clock, "job", a.message_id, 60, a.receive_count, a.receipt_handle) == 0.0
    # The same receipt asking again (its first answer was lost) keeps its claim.
    assert runs.claim_run(store, clock, "job", a.message_id, 60, a.receive_count, a.receipt_handle) == 0.0
    # A duplicate of the same receive, and a later receive, wait out the live run's timeout.
    assert runs.claim_run(store, clock, "job", b.message_id, 60, b.receive_count, b.receipt_handle) >= 59
    assert runs.claim_run(store, clock, "job", c.message_id, 60, c.receive_count, c.receipt_handle) >= 59
    clock.now += 61  # the run that claimed it is over (it would have been interrupted): its worker died
    assert runs.claim_run(store, clock, "job", c.message_id, 60, c.receive_count, c.receipt_handle) == 0.0
    # The older receive no longer takes anything over from the newer one.
    assert runs.claim_run(store, clock, "job", b.message_id, 60, b.receive_count, b.receipt_handle) >= 1
    # A postponed run frees only its own claim.
    runs.free_claim(store, "job", a.message_id, a.receipt_handle)
    assert store.get(("running", "job")) is not None
    runs.free_claim(store, "job", c.message_id, c.receipt_handle)
    assert store.get(("running", "job")) is None


class _RacingStore(MemoryStore):
    """Lets a second claimant in between the first one's read and its takeover."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.racer: Callable[[], None] | None = None

    def get(self, key: Key) -> dict[str, Any] | None:
        found = super().get(key)
        racer, self.racer = self.racer, None
        if racer is not None:
            racer()
        return found


def test_a_stale_idempotency_key_is_taken_over_by_one_of_two_racing_receipts() -> None:
    clock = FakeClock()
    store = _RacingStore(clock)
    killed = idempotency.owner("job", "m-1", "r-killed")
    assert idempotency.claim(store, clock, "dup.pay", "k", killed, 60).state == "run"
    clock.now += 61  # its worker died; two receipts of the message come back at the same moment
    a, b = idempotency.owner("job", "m-1", "r-a"), idempotency.owner("job", "m-1", "r-b")
    assert a != b
    won_by_b: list[str] = []
    store.racer = lambda: won_by_b.append(idempotency.claim(store, clock, "dup.pay", "k", b, 60).state)
    state_a = idempotency.claim(store, clock, "dup.pay", "k", a, 60).state
    assert won_by_b == ["run"]
    assert state_a == "busy", "both receipts took over the key, so the effect ran twice"


def test_a_stale_run_claim_is_taken_over_by_one_of_two_racing_receipts() -> None:
    clock = FakeClock()
    store = _RacingStore(clock)
    assert runs.claim_run(store, clock, "job", "m-1", 60, 1, "r-killed") == 0.0
    clock.now += 61
    won_by_b: list[float] = []
    store.racer = lambda: won_by_b.append(runs.claim_run(store, clock, "job", "m-1", 60, 2, "r-b"))
    assert runs.claim_run(store, clock, "job", "m-1", 60, 2, "r-a") > 0, "both receipts ran the job"
    assert won_by_b == [0.0]


def test_a_delivery_that_finds_its_own_idempotency_mark_runs() -> None:
    # botocore retried the add whose answer was lost: the mark it finds is its own, not a busy key.
    clock = FakeClock()
    store = MemoryStore(clock)
    mine = idempotency.owner("job", "m-1", runs.delivery_token())
    assert idempotency.claim(store, clock, "dup.pay", "k", mine, 60).state == "run"
    assert idempotency.claim(store, clock, "dup.pay", "k", mine, 60).state == "run"
    other = idempotency.owner("job", "m-1", runs.delivery_token())
    assert idempotency.claim(store, clock, "dup.pay", "k", other, 60).state == "busy"
