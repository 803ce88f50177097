"""`sqsjobs.testing.fake`: dispatches recorded instead of sent, and assertions that say what was sent."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqsjobs import App, DispatchError, Job, Registry, batch, chain, current_app, dispatch_many
from sqsjobs.testing import pytest_plugin
from sqsjobs.testing.fake import FakeBatch, FakeDispatches, fake


class SendWelcome(Job, name="fake.send-welcome"):
    queue = "emails"
    user_id: int

    def handle(self) -> None:
        pass


class ChargeCard(Job, name="fake.charge-card"):
    amount: int = 1

    def handle(self) -> None:
        pass


class Invoice(Job, name="fake.invoice"):
    def handle(self) -> None:
        pass


class Confirm(Job, name="fake.confirm"):
    def handle(self) -> None:
        pass


class Secret(Job, name="fake.secret"):
    encrypted = True
    card: str

    def handle(self) -> None:
        pass


@pytest.fixture
def app() -> Iterator[App]:
    real = App(connection="memory", store="memory")
    with real.activate():
        yield real


def signup(user_id: int) -> None:
    SendWelcome(user_id=user_id).dispatch()


def test_a_dispatch_is_recorded_not_sent(app: App) -> None:
    with fake() as dispatched:
        signup(7)
        assert current_app() is dispatched.app
    assert current_app() is app
    dispatched.assert_dispatched(SendWelcome)
    dispatched.assert_dispatched(SendWelcome, lambda job: job.user_id == 7, times=1)
    dispatched.assert_dispatched_on("emails", SendWelcome)
    dispatched.assert_not_dispatched(ChargeCard)
    dispatched.assert_not_dispatched(SendWelcome, lambda job: job.user_id == 8)
    assert dispatched.jobs(SendWelcome) == [SendWelcome(user_id=7)]
    assert app.connection.receive("emails", 10, 0) == []


def test_failures_list_what_was_dispatched(app: App) -> None:
    with fake() as dispatched:
        signup(7)
        ChargeCard(amount=5).dispatch(queue="billing")
    with pytest.raises(AssertionError, match="expected Invoice to be dispatched") as caught:
        dispatched.assert_dispatched(Invoice)
    text = str(caught.value)
    assert "fake.send-welcome on 'emails' {\"user_id\": 7}" in text
    assert "fake.charge-card on 'billing' {\"amount\": 5}" in text
    with pytest.raises(AssertionError, match="1 time\\(s\\), it was 0") as caught:
        dispatched.assert_dispatched(SendWelcome, lambda job: job.user_id == 8, times=1)
    assert "user_id" in str(caught.value)
    with pytest.raises(AssertionError, match="2 time\\(s\\), it was 1"):
        dispatched.assert_dispatched(SendWelcome, times=2)
    with pytest.raises(AssertionError, match=r"(?s)on queue 'default'.*fake\.send-welcome"):
        dispatched.assert_dispatched_on("default", SendWelcome)
    with pytest.raises(AssertionError, match="ChargeCard was dispatched 1 time\\(s\\); expected none"):
        dispatched.assert_not_dispatched(ChargeCard)
    with pytest.raises(AssertionError, match="expected nothing dispatched\ndispatched \\(2\\):"):
        dispatched.assert_nothing_dispatched()


def test_nothing_dispatched(app: App) -> None:
    with fake() as dispatched:
        pass
    dispatched.assert_nothing_dispatched()
    dispatched.assert_nothing_batched()
    with pytest.raises(AssertionError, match="nothing was dispatched"):
        dispatched.assert_dispatched(SendWelcome)


def test_a_long_list_is_truncated(app: App) -> None:
    with fake() as dispatched:
        dispatch_many([ChargeCard(amount=i) for i in range(45)])
    with pytest.raises(AssertionError) as caught:
        dispatched.assert_nothing_dispatched()
    assert "dispatched (45):" in str(caught.value)
    assert "... and 15 more" in str(caught.value)
    assert '"amount": 44' not in str(caught.value)


def test_dispatch_many_records_each_job(app: App) -> None:
    with fake() as dispatched:
        SendWelcome.dispatch_many([SendWelcome(user_id=1), SendWelcome(user_id=2)])
        dispatch_many([ChargeCard()], queue="billing")
    dispatched.assert_dispatched(SendWelcome, times=2)
    dispatched.assert_dispatched_on("billing", ChargeCard, times=1)
    assert [j.user_id for j in dispatched.jobs(SendWelcome)] == [1, 2]
    assert len(dispatched.jobs()) == 3


def test_chains(app: App) -> None:
    with fake() as dispatched:
        chain([ChargeCard(amount=3), Invoice(), Confirm()]).catch(SendWelcome(user_id=1)).dispatch()
    dispatched.assert_chained([ChargeCard, Invoice, Confirm])
    dispatched.assert_chained([ChargeCard(amount=3), Invoice, Confirm()])
    dispatched.assert_dispatched(ChargeCard, times=1)
    dispatched.assert_not_dispatched(Invoice)  # a later link is sent only when the one before succeeds
    assert dispatched.chains[0].catch == SendWelcome(user_id=1)
    with pytest.raises(AssertionError, match=r"expected a chain of \[ChargeCard\(\{\"amount\": 4\}\), Invoice\]") as c:
        dispatched.assert_chained([ChargeCard(amount=4), Invoice])
    assert "[chain " in str(c.value) and "then fake.invoice, fake.confirm]" in str(c.value)
    with pytest.raises(AssertionError):
        dispatched.assert_chained([ChargeCard, Invoice])


def test_batches(app: App) -> None:
    with fake() as dispatched:
        batch([ChargeCard(amount=1), ChargeCard(amount=2), [Invoice(), Confirm()]]).name("import").then(
            Confirm()
        ).dispatch()
    dispatched.assert_batch_count(1)
    dispatched.assert_batched(lambda b: len(b.jobs) == 3 and b.name == "import")
    dispatched.assert_batched(lambda b: b.jobs[2] == [Invoice(), Confirm()] and b.callbacks == {"then": Confirm()})
    dispatched.assert_dispatched(ChargeCard, times=2)
    with pytest.raises(AssertionError, match="expected a batch matching the predicate") as caught:
        dispatched.assert_batched(lambda b: b.name == "export")
    assert "name='import' (3 job(s): ChargeCard, ChargeCard, chain(Invoice, Confirm))" in str(caught.value)
    with pytest.raises(AssertionError, match="expected 2 batch\\(es\\), 1 dispatched"):
        dispatched.assert_batch_count(2)
    with pytest.raises(AssertionError):
        dispatched.assert_nothing_dispatched()


def test_an_empty_batch_and_a_chain_that_starts_with_one(app: App) -> None:
    with fake() as dispatched:
        batch([]).name("empty").dispatch()
        chain([batch([Invoice()]), Confirm()]).dispatch()
    dispatched.assert_batch_count(2)
    dispatched.assert_batched(lambda b: b.name == "empty" and b.jobs == [])
    dispatched.assert_chained([FakeBatch, Confirm])


def test_only_fakes_those_and_forwards_the_rest(app: App) -> None:
    with fake(only=[ChargeCard]) as dispatched:
        ChargeCard().dispatch()
        signup(7)
        dispatch_many([ChargeCard(amount=2), SendWelcome(user_id=8)])
    dispatched.assert_dispatched(ChargeCard, times=2)
    dispatched.assert_not_dispatched(SendWelcome)
    received = app.connection.receive("emails", 10, 0)
    assert sorted('"user_id":7' in m.body for m in received) == [False, True]
    assert app.connection.receive("default", 10, 0) == []


def test_except_fakes_all_but_those(app: App) -> None:
    with fake(except_=[ChargeCard]) as dispatched:
        ChargeCard(amount=9).dispatch()
        signup(7)
    dispatched.assert_dispatched(SendWelcome)
    dispatched.assert_not_dispatched(ChargeCard)
    (received,) = app.connection.receive("default", 10, 0)
    assert '"amount":9' in received.body


def test_only_and_except_together_are_refused(app: App) -> None:
    with pytest.raises(ValueError, match="not both"), fake(only=[ChargeCard], except_=[Invoice]):
        pass


def test_an_encrypted_job_is_recorded_without_kms(app: App) -> None:
    with fake() as dispatched:
        Secret(card="4242").dispatch()
    assert dispatched.jobs(Secret) == [Secret(card="4242")]


def test_nested_fakes_and_an_exception_restore_the_previous_app(app: App) -> None:
    with fake() as outer:
        with pytest.raises(RuntimeError), fake() as inner:
            assert current_app() is inner.app
            raise RuntimeError("boom")
        assert current_app() is outer.app
        with fake(only=[Invoice]) as partial:
            Invoice().dispatch()
            ChargeCard().dispatch()  # forwarded to the outer fake, which records it
        partial.assert_dispatched(Invoice)
        partial.assert_not_dispatched(ChargeCard)
    assert current_app() is app
    outer.assert_dispatched(ChargeCard)
    outer.assert_not_dispatched(Invoice)
    inner.assert_nothing_dispatched()


def test_the_fixture_fakes_for_the_test_and_restores_after(app: App) -> None:
    gen = pytest_plugin.sqsjobs_fake.__wrapped__()  # type: ignore[attr-defined]
    dispatched = next(gen)
    assert isinstance(dispatched, FakeDispatches)
    signup(3)
    with pytest.raises(StopIteration):
        next(gen)
    assert current_app() is app
    dispatched.assert_dispatched(SendWelcome, lambda job: job.user_id == 3)


def test_a_batch_step_given_as_an_instance_must_have_the_same_members(app: App) -> None:
    with fake() as dispatched:
        chain([batch([ChargeCard(amount=1)]), Confirm()]).dispatch()
    dispatched.assert_chained([batch([ChargeCard(amount=1)]), Confirm()])
    with pytest.raises(AssertionError, match=r"fake\.charge-card"):
        dispatched.assert_chained([batch([ChargeCard(amount=99), ChargeCard(amount=100)]), Confirm()])


class Ordered(Job, name="fake.ordered"):
    queue = "orders.fifo"

    def handle(self) -> None:
        pass


def test_what_sqs_refuses_is_refused_under_the_fake_too(app: App) -> None:
    # A delay on a FIFO queue: a test that passed under the fake would break in production.
    with fake() as dispatched, pytest.raises(DispatchError, match="FIFO"):
        Ordered().dispatch(delay=30)
    dispatched.assert_nothing_dispatched()


def test_a_job_outside_the_apps_registry_is_still_recorded() -> None:
    # A producer whose App knows only its own jobs dispatches another service's job.
    narrow = App(connection="memory", store="memory", registry=Registry())
    with narrow.activate(), fake() as dispatched:
        Invoice().dispatch()
    dispatched.assert_dispatched(Invoice, times=1)
