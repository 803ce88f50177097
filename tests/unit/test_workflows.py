"""Chains and batches, on SQS and DynamoDB (moto in-process) unless a test says otherwise.

The race tests use the memory store where real threads race: moto's DynamoDB does not
serialise requests, so a conditional write there is not atomic across threads (docs/testing.md).
The same race is also replayed on DynamoDB one step at a time.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import pytest

from sqsjobs import (
    App,
    ConfigurationError,
    Job,
    PermanentError,
    Postpone,
    Release,
    SkipIfBatchCancelled,
    aws,
    batch,
    chain,
    find_batch,
    once,
)
from sqsjobs.batches import list_batches, prune_batches
from sqsjobs.envelope import decode
from sqsjobs.flow import record
from sqsjobs.once import SEND_LEASE_S, SendInProgress
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import FakeClock, dead_letters, wait_for, work_for


class Journal(Job, abstract=True):
    runs: ClassVar[list[tuple[str, Any]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def write(self, what: Any = None) -> None:
        with Journal.lock:
            Journal.runs.append((type(self).job_name, what))


def ran(name: str) -> list[Any]:
    return [what for job, what in Journal.runs if job == name]


class Step(Journal, name="wf.step"):
    tries = 3
    n: int
    broken: bool = False

    def handle(self) -> None:
        self.write(self.n)
        if self.broken:
            raise PermanentError(f"step {self.n} broke")


class Then(Journal, name="wf.then"):
    label: str = ""

    def handle(self) -> None:
        batch_ = self.batch
        self.write((self.label, batch_.id if batch_ else None))


class Catch(Journal, name="wf.catch"):
    label: str = ""

    def handle(self) -> None:
        self.write(self.label)


class Finally(Journal, name="wf.finally"):
    def handle(self) -> None:
        self.write()


class Cancelling(Journal, name="wf.cancelling"):
    n: int

    def middleware(self) -> list[Any]:
        return [SkipIfBatchCancelled()]

    def handle(self) -> None:
        self.write(self.n)
        if self.n == 1:
            assert self.batch is not None
            self.batch.cancel()


class Adder(Journal, name="wf.adder"):
    def handle(self) -> None:
        assert self.batch is not None
        self.batch.add([Step(n=100), Step(n=101)])
        self.write()


class AddsTwice(Journal, name="wf.adds-twice"):
    backoff = 0

    def handle(self) -> None:
        assert self.batch is not None
        self.batch.add([Step(n=100), Step(n=101)])
        self.batch.add([Step(n=102)])
        self.write(self.attempts)
        if self.attempts == 1:
            raise ConnectionError("lost the database after adding")


class Together(Journal, name="wf.together"):
    barrier: ClassVar[threading.Barrier] = threading.Barrier(2)
    n: int

    def handle(self) -> None:
        Together.barrier.wait(5)
        self.write(self.n)


@pytest.fixture(autouse=True)
def clean_journal() -> Iterator[None]:
    Journal.runs = []
    yield


@pytest.fixture
def app(moto: None, prefix: str) -> Iterator[App]:
    """SQS queues and the DynamoDB table, as production has them."""
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], table=f"{prefix}table", visibility_timeout=30)
    provision(app, ["default"], bucket=False)
    with app.activate():
        yield app


def work(app: App, concurrency: int = 1) -> None:
    options = WorkerOptions(sleep=1, concurrency=concurrency, stop_when_empty=True)
    assert Worker(app, options).run(install_signals=False) == 0


def process_all(app: App, redeliver: set[int] = frozenset()) -> Counter[str]:  # type: ignore[assignment]
    """Receive and run every message through the core by hand; a message of a Step whose `n`
    is in `redeliver` is made visible again (instead of deleted) after its first run — the
    crash-before-delete case — so it runs, and is settled, twice."""
    runs: Counter[str] = Counter()
    redelivered: set[int] = set()
    empty_looks = 0
    while empty_looks < 2:
        messages = app.connection.receive("default", 10, 0)
        empty_looks = 0 if messages else empty_looks + 1
        for message in messages:
            envelope = decode(message.body)
            runs[envelope.job] += 1
            decision = app.runner.process(message)
            n = envelope.payload.get("n")
            if envelope.job == "wf.step" and n in redeliver and n not in redelivered:
                redelivered.add(n)
                app.connection.change_visibility("default", [(message, 0)])
            elif isinstance(decision, Release | Postpone):  # fast-forward: it comes back at once
                app.connection.change_visibility("default", [(message, 0)])
            else:
                app.connection.delete("default", [message])
    return runs


# -- batches --------------------------------------------------------------------------------
def test_a_batch_with_failures_and_redeliveries_counts_exactly_and_fires_each_callback_once(app: App) -> None:
    failing = {3, 14, 25, 36, 47, 58, 69}
    redeliver = {1, 2, 4, 5, 6, 7, 8, 9, 10, 11}
    created = (
        batch([Step(n=i, broken=i in failing) for i in range(100)])
        .then(Then(label="then"))
        .catch(Catch(label="catch"))
        .finally_(Finally())
        .name("import")
        .allow_failures()
        .dispatch()
    )
    assert (created.total, created.pending, created.name) == (100, 100, "import")

    runs = process_all(app, redeliver)

    # 110 deliveries, 100 runs: a redelivered job whose run was decided only redoes its bookkeeping.
    assert runs["wf.step"] == 110 and sorted(ran("wf.step")) == list(range(100))
    found = find_batch(created.id)
    assert found is not None
    assert (found.total, found.processed, found.failed, found.pending) == (100, 93, 7, 0)
    assert found.progress == 100 and found.finished and not found.cancelled
    assert sorted(found.failed_job_ids()) == sorted(
        json.loads(letter["Body"])["id"] for letter in dead_letters(app, "default")
    )
    assert len(found.failed_job_ids()) == 7
    assert ran("wf.catch") == ["catch"] and len(ran("wf.finally")) == 1 and ran("wf.then") == []


def test_a_batch_that_succeeds_runs_then_once_and_callbacks_see_the_batch(app: App) -> None:
    created = batch([Step(n=i) for i in range(12)]).then(Then(label="ok")).finally_(Finally()).dispatch()
    process_all(app, redeliver={0, 11})
    assert ran("wf.then") == [("ok", created.id)] and len(ran("wf.finally")) == 1
    found = created.fresh()
    assert (found.processed, found.failed, found.finished) == (12, 0, True)


def test_a_batch_dispatched_twice_with_one_id_is_one_batch_counted_once(app: App) -> None:
    import uuid

    given = str(uuid.uuid5(uuid.NAMESPACE_URL, "import-42"))
    pending = batch([Step(n=i) for i in range(3)]).then(Then(label="once"))
    first = pending.dispatch(batch_id=given)
    again = pending.dispatch(batch_id=given)  # a parent retried after it sent the batch
    process_all(app)
    assert first.id == again.id == given
    found = again.fresh()
    assert (found.total, found.processed, found.finished) == (3, 3, True)
    assert ran("wf.then") == [("once", given)]
    with pytest.raises(ConfigurationError, match="is not a UUID"):
        pending.dispatch(batch_id="import-42")


def test_a_failure_cancels_a_batch_unless_failures_are_allowed(app: App) -> None:
    created = batch([Step(n=1, broken=True), Step(n=2)]).then(Then()).catch(Catch(label="c")).dispatch()
    work(app)
    found = created.fresh()
    assert found.cancelled and found.finished and (found.processed, found.failed) == (1, 1)
    assert ran("wf.catch") == ["c"] and ran("wf.then") == []


def test_the_last_two_jobs_finishing_together_on_two_threads_fire_then_once() -> None:
    app = App(connection="memory", store="memory")
    with app.activate():
        Together.barrier = threading.Barrier(2)
        created = batch([Together(n=1), Together(n=2)]).then(Then(label="once")).dispatch(app)
        # prefetch=0: each worker takes one of the two messages (with the default one would take both).
        workers = [
            Worker(app, WorkerOptions(sleep=1, concurrency=1, prefetch=0, stop_when_empty=True)) for _ in range(2)
        ]
        threads = [threading.Thread(target=w.run, kwargs={"install_signals": False}) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(ran("wf.together")) == [1, 2]
        wait_for(lambda: ran("wf.then"), what="then ran")
        assert ran("wf.then") == [("once", created.id)]


def test_two_members_seeing_the_batch_finish_at_once_send_then_once_on_dynamodb(app: App) -> None:
    """The race, one step at a time: both members are counted before either looks at the
    counters, so both see a finished batch; the conditional mark lets one of them send."""
    created = batch([Step(n=1), Step(n=2)]).then(Then(label="raced")).dispatch()
    envelopes = [decode(m.body) for m in app.connection.receive("default", 10, 0)]
    assert len(envelopes) == 2
    for envelope in envelopes:  # both count first ...
        app.store.add_and_count(
            (f"batch#{created.id}", f"job#{envelope.id}"),
            {"outcome": "processed"},
            (f"batch#{created.id}", "meta"),
            {"processed": 1},
            3600,
        )
    for envelope in envelopes:  # ... then both settle
        record(app, envelope, succeeded=True)
    sends = [m for m in app.connection.receive("default", 10, 0) if decode(m.body).job == "wf.then"]
    assert len(sends) == 1
    assert created.fresh().processed == 2


def test_cancelling_a_batch_stops_the_jobs_not_yet_run(app: App) -> None:
    created = batch([Cancelling(n=i) for i in range(1, 6)]).then(Then()).finally_(Finally()).dispatch()
    work(app, concurrency=1)
    assert len(ran("wf.cancelling")) < 5 and 1 in ran("wf.cancelling")
    found = created.fresh()
    assert found.cancelled and found.finished and found.failed == 0
    assert ran("wf.then") == [] and len(ran("wf.finally")) == 1


def test_a_job_can_add_jobs_to_its_own_batch(app: App) -> None:
    created = batch([Adder()]).then(Then(label="all")).dispatch()
    work(app)
    assert sorted(ran("wf.step")) == [100, 101]
    found = created.fresh()
    assert (found.total, found.processed) == (3, 3) and ran("wf.then") == [("all", created.id)]


def test_a_job_that_adds_to_its_batch_and_runs_again_adds_each_job_once(app: App) -> None:
    created = batch([AddsTwice()]).then(Then(label="all")).dispatch()
    process_all(app)
    assert ran("wf.adds-twice") == [1, 2]
    assert sorted(set(ran("wf.step"))) == [100, 101, 102]
    found = created.fresh()
    assert (found.total, found.processed, found.failed, found.finished) == (4, 4, 0, True)
    assert ran("wf.then") == [("all", created.id)]


def test_an_empty_batch_finishes_at_once() -> None:
    app = App(connection="sync")
    with app.activate():
        created = batch([]).then(Then(label="empty")).dispatch()
        assert created.fresh().finished and ran("wf.then") == [("empty", created.id)]


def test_batches_are_listed_newest_first_and_pruned_when_old(app: App) -> None:
    first = batch([Step(n=1)]).name("first").dispatch()
    work(app)
    unfinished = batch([Step(n=2)]).name("second").dispatch()
    unfinished.cancel()  # cancelled, but its job is still to be counted: not prunable yet
    assert [b.name for b in list_batches()] == ["second", "first"]
    assert prune_batches(finished_hours=1) == 0
    later = App(
        connection="sqs",
        queue_prefix=app.settings.queue_prefix,
        table=app.settings.table,
        clock=lambda: app.clock() + 7200,
    )
    assert prune_batches(later, finished_hours=1) == 1
    assert find_batch(first.id) is None and find_batch(unfinished.id) is not None
    assert prune_batches(later, finished_hours=1, unfinished_hours=1) == 1
    assert list_batches() == []


# -- chains ---------------------------------------------------------------------------------
def test_a_chain_runs_in_order_and_a_failed_link_runs_catch_once_and_stops_the_chain(app: App) -> None:
    chain([Step(n=1), Step(n=2), Step(n=3, broken=True), Step(n=4)]).catch(Catch(label="chain")).dispatch()
    work(app)
    assert ran("wf.step") == [1, 2, 3]
    assert ran("wf.catch") == ["chain"]
    assert [json.loads(m["Body"])["payload"]["n"] for m in dead_letters(app, "default")] == [3]


def test_a_redelivered_link_sends_the_next_link_once(app: App) -> None:
    chain([Step(n=1), Step(n=2), Step(n=3)]).dispatch()
    runs = process_all(app, redeliver={1, 2})
    assert runs["wf.step"] == 5  # links 1 and 2 were delivered twice ...
    assert ran("wf.step") == [1, 2, 3]  # ... but every link ran once, and in order


def test_a_chain_inside_a_batch_is_one_member_that_ends_with_its_last_link(app: App) -> None:
    created = batch([[Step(n=1), Step(n=2), Step(n=3)], Step(n=10)]).then(Then(label="done")).dispatch()
    assert created.total == 2
    work(app)
    steps = ran("wf.step")
    assert sorted(steps) == [1, 2, 3, 10] and steps.index(1) < steps.index(2) < steps.index(3)
    found = created.fresh()
    assert (found.total, found.processed, found.failed) == (2, 2, 0)
    assert ran("wf.then") == [("done", created.id)]


def test_a_batch_inside_a_chain_holds_the_rest_of_the_chain_until_it_finishes(app: App) -> None:
    chain([Step(n=1), batch([Step(n=2), Step(n=3)]), Step(n=4)]).catch(Catch(label="x")).dispatch()
    work(app)
    steps = ran("wf.step")
    assert sorted(steps) == [1, 2, 3, 4]
    assert steps[0] == 1 and steps[-1] == 4 and ran("wf.catch") == []


def test_a_failing_batch_inside_a_chain_runs_the_chain_catch_instead_of_the_rest(app: App) -> None:
    chain([batch([Step(n=2, broken=True), Step(n=3)]), Step(n=4)]).catch(Catch(label="chain-catch")).dispatch()
    work(app)
    assert 4 not in ran("wf.step") and ran("wf.catch") == ["chain-catch"]


def test_chains_and_batches_run_inline_on_the_sync_connection() -> None:
    app = App(connection="sync")
    with app.activate():
        chain([Step(n=1), Step(n=2)]).dispatch()
        created = batch([Step(n=3), Step(n=4)]).then(Then(label="sync")).dispatch()
    assert ran("wf.step") == [1, 2, 3, 4]
    assert ran("wf.then") == [("sync", created.id)]


# -- when the bookkeeping itself fails ------------------------------------------------------
def refuse_transactions(times: int) -> list[int]:
    """Make DynamoDB refuse the next `times` TransactWriteItems calls (a non-retryable error)."""
    left = [times]

    class Refused:
        status_code = 400

    def refuse(**_: Any) -> Any:
        if left[0] <= 0:
            return None
        left[0] -= 1
        return Refused(), {"Error": {"Code": "InjectedFault", "Message": "refused by the test"}}

    aws.client("dynamodb").meta.events.register("before-call.dynamodb.TransactWriteItems", refuse)
    return left


def test_a_job_whose_batch_could_not_be_updated_is_not_run_again_when_it_comes_back(app: App) -> None:
    class Once(Journal, name="wf.once"):
        tries = 1

        def handle(self) -> None:
            self.write()

    created = batch([Once()]).then(Then(label="then")).dispatch()
    refuse_transactions(1)
    process_all(app)
    assert len(ran("wf.once")) == 1, "the redelivery settles the bookkeeping without running the job"
    found = created.fresh()
    assert (found.processed, found.failed, found.finished) == (1, 0, True)
    assert ran("wf.then") == [("then", created.id)] and dead_letters(app, "default") == []


def test_a_failed_job_whose_batch_could_not_be_updated_leaves_one_dlq_copy(app: App) -> None:
    created = batch([Step(n=1, broken=True)]).catch(Catch(label="c")).dispatch()
    refuse_transactions(1)
    process_all(app)
    assert ran("wf.step") == [1]
    assert len(dead_letters(app, "default")) == 1
    found = created.fresh()
    assert (found.processed, found.failed) == (0, 1) and ran("wf.catch") == ["c"]


def test_a_fresh_sending_mark_holds_others_back_and_a_stale_one_is_taken_over(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(once, "WATCH_S", 0.1)
    clock = FakeClock()
    app = App(connection="memory", store="memory", clock=clock, clock_skew=0)
    key = ("chain#x", "link#1")
    sent: list[str] = []

    def crash() -> None:
        raise ConnectionError("the send failed")

    with pytest.raises(ConnectionError):
        dispatch_once(app, key, "run-a", crash)
    assert dispatch_once(app, key, "run-a", lambda: sent.append("a-retry")) is True, "a failed send frees the key"

    other = ("chain#x", "link#2")

    def sending_while_a_duplicate_looks() -> None:
        with pytest.raises(SendInProgress):  # the same message delivered twice, at the same moment
            dispatch_once(app, other, "run-b", lambda: sent.append("b-duplicate"))
        sent.append("b")

    dispatch_once(app, other, "run-b", sending_while_a_duplicate_looks)
    # A sender killed between its mark and its send leaves a "sending" mark behind.
    stale = ("chain#x", "link#3")
    app.store.add(stale, {"state": "sending", "owner": "run-c@killed", "claimed_ms": int(clock.now * 1000)}, 3600)
    with pytest.raises(SendInProgress):
        dispatch_once(app, stale, "run-d", lambda: sent.append("d"))
    clock.now += SEND_LEASE_S + 1
    assert dispatch_once(app, stale, "run-d", lambda: sent.append("d")) is True
    assert dispatch_once(app, stale, "run-c", lambda: sent.append("c-again")) is False
    assert sent == ["a-retry", "b", "d"]


# -- unique jobs inside workflows -----------------------------------------------------------
class Sync(Journal, name="wf.sync"):
    unique_for = 3600
    account: int

    def unique_id(self) -> str:
        return str(self.account)

    def handle(self) -> None:
        self.write(self.account)


def test_a_chain_of_equal_unique_jobs_runs_every_link(app: App) -> None:
    chain([Sync(account=1), Sync(account=1), Step(n=1)]).catch(Catch(label="c")).dispatch()
    work(app)
    assert ran("wf.sync") == [1, 1] and ran("wf.step") == [1] and ran("wf.catch") == []


def test_a_link_dropped_as_a_unique_duplicate_ends_the_chain_with_its_catch(app: App) -> None:
    # An equal job is running elsewhere: it holds the lock the whole time.
    app.store.add(("unique", "wf.sync:7"), {"owner": "a job on another worker"}, ttl=3600)
    chain([Step(n=1), Sync(account=7), Step(n=2)]).catch(Catch(label="dropped")).dispatch()
    work(app)
    assert ran("wf.sync") == [] and ran("wf.step") == [1] and ran("wf.catch") == ["dropped"]


def test_a_batch_member_dropped_as_a_unique_duplicate_counts_as_done(app: App) -> None:
    Sync(account=3).dispatch()
    created = batch([Sync(account=3), Step(n=1)]).then(Then(label="then")).dispatch()
    assert created.fresh().processed == 1, "the duplicate is counted at once: its work is in hand"
    work(app)
    found = created.fresh()
    assert (found.total, found.processed, found.failed, found.finished) == (2, 2, 0, True)
    assert ran("wf.then") == [("then", created.id)]


class AddsTwo(Journal, name="wf.adds-two"):
    backoff = 0

    def handle(self) -> None:
        assert self.batch is not None
        self.batch.add([Step(n=100), Step(n=101)])
        self.write(self.attempts)


def test_an_add_that_was_partly_not_queued_is_sent_again_without_shrinking_the_batch(app: App) -> None:
    refused = [0]

    def refuse_101_once(params: dict[str, Any], **_: Any) -> None:
        for entry in params.get("Entries", []):
            if '"n":101' in entry["MessageBody"] and not refused[0]:
                refused[0] += 1
                entry["DelaySeconds"] = 901  # SQS rejects this entry (and only it) as the sender's fault

    aws.client("sqs").meta.events.register("provide-client-params.sqs.SendMessageBatch", refuse_101_once)
    created = batch([AddsTwo()]).then(Then(label="then")).dispatch()
    process_all(app)
    assert refused[0] == 1 and ran("wf.adds-two") == [2]  # attempt 1 raised the DispatchError from add()
    assert sorted(set(ran("wf.step"))) == [100, 101]
    found = created.fresh()
    assert (found.total, found.processed, found.failed, found.finished) == (3, 3, 0, True)
    assert ran("wf.then") == [("then", created.id)]


def test_a_long_chain_runs_to_the_end_on_the_sync_connection() -> None:
    app = App(connection="sync")
    with app.activate():
        chain([Step(n=i) for i in range(300)]).dispatch()
    assert ran("wf.step") == list(range(300))


def test_a_unique_job_sent_again_under_its_own_id_is_not_its_own_duplicate(app: App) -> None:
    from sqsjobs.dispatching import Planned, send_planned

    same = "6f1c1d2e-0000-4000-8000-000000000001"
    assert send_planned(app, [Planned(Sync(account=5), job_id=same)])[0].queued
    assert send_planned(app, [Planned(Sync(account=5), job_id=same)])[0].queued, "a re-send after a crash"
    assert not send_planned(app, [Planned(Sync(account=5))])[0].queued, "another job is a duplicate"


def test_a_chain_in_a_batch_whose_first_link_is_dropped_fails_its_member(app: App) -> None:
    app.store.add(("unique", "wf.sync:9"), {"owner": "a job on another worker"}, ttl=3600)
    created = batch([[Sync(account=9), Step(n=1)], Step(n=2)]).then(Then()).catch(Catch(label="c")).dispatch()
    work(app)
    assert ran("wf.step") == [2] and ran("wf.then") == [] and ran("wf.catch") == ["c"]
    found = created.fresh()
    assert (found.total, found.processed, found.failed, found.finished) == (2, 1, 1, True)


def test_a_job_that_succeeded_and_is_retried_from_the_dlq_only_settles_its_batch(app: App) -> None:
    from sqsjobs import OutgoingMessage
    from sqsjobs.failed_jobs import FailedJobs

    created = batch([Step(n=7)]).then(Then(label="then")).dispatch()
    refuse_transactions(1)
    (message,) = app.connection.receive("default", 10, 0)
    assert isinstance(app.runner.process(message), Release), "ran, but its batch could not be updated"
    # It never settles (say the table stays unavailable) and the redrive policy moves it to the DLQ.
    app.connection.send_to_dlq("default", OutgoingMessage(body=message.body))
    app.connection.delete("default", [message])
    assert len(FailedJobs(app, ["default"]).retry()) == 1
    process_all(app)
    assert ran("wf.step") == [7], "it succeeded once; the retry must not run it again"
    found = created.fresh()
    assert (found.processed, found.failed, found.finished) == (1, 0, True) and ran("wf.then") == [("then", created.id)]


def test_a_run_that_finds_the_send_in_progress_waits_for_it_rather_than_coming_back_later() -> None:
    app = App(connection="memory", store="memory")
    key = ("batch#b", "then")
    seen: list[bool] = []

    def slow_send() -> None:
        # While the first run sends, the other (the last two jobs finished together) looks.
        looker = threading.Thread(target=lambda: seen.append(dispatch_once(app, key, "run-b", lambda: None)))
        looker.start()
        looking.append(looker)
        work_for(0.3)  # the looker meets a fresh "sending" mark meanwhile
        done.append("sent")

    done: list[str] = []
    looking: list[threading.Thread] = []
    assert dispatch_once(app, key, "run-a", slow_send) is True
    looking[0].join(5)
    assert done == ["sent"] and seen == [False], "the second run saw it sent, and sent nothing"


def dispatch_once(app: App, key: tuple[str, str], owner: str, send: Callable[[], object]) -> bool:
    return once.dispatch_once(app.store, app.clock, key, owner, send)
