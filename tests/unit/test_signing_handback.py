"""SQSJOBS_SIGNING_MAX_AGE and the copies a worker re-sends.

A job that waited in a backlog longer than the max age was sent on time, so it runs. When a worker
hands it back unstarted (a deploy, a Lambda deadline) or postpones it, the message it sends is a copy
with a fresh SentTimestamp; the copy carries a stamp of when the job was first sent, which only a key
holder can make. A sender who forges that stamp gains nothing.
"""

from __future__ import annotations

from typing import ClassVar

from sqsjobs import Ack, App, Fail, Job, policy
from sqsjobs.connections.memory import MemoryConnection
from tests.helpers import FakeClock

KEY = "handback-signing-key-" + "7" * 32


class Backlogged(Job, name="signing.backlogged"):
    runs: ClassVar[list[int]] = []
    n: int = 0

    def handle(self) -> None:
        Backlogged.runs.append(self.n)


def signed_app(clock: FakeClock) -> App:
    return App(connection=MemoryConnection(clock=clock), clock=clock, signing_key=KEY, signing_max_age=300)


def test_a_backlogged_job_handed_back_unstarted_still_runs() -> None:
    Backlogged.runs = []
    clock = FakeClock()
    app = signed_app(clock)
    with app.activate():
        Backlogged(n=1).dispatch()
        clock.now += 600  # waited 10 minutes in a backlog: sent on time, so it runs
        (message,) = app.connection.receive("default", 1, 0)
        assert app.settler.give_back([message], 0, "the worker is stopping") == [message]
        app.connection.delete("default", [message])
        clock.now += 600  # and handed back twice, far apart
        (copy,) = app.connection.receive("default", 1, 0)
        assert app.settler.give_back([copy], 0, "the worker is stopping") == [copy]
        app.connection.delete("default", [copy])
        (again,) = app.connection.receive("default", 1, 0)
        assert app.runner.process(again) == Ack()
    assert Backlogged.runs == [1]


def test_a_forged_first_sent_stamp_does_not_rescue_a_replay() -> None:
    Backlogged.runs = []
    clock = FakeClock()
    app = signed_app(clock)
    with app.activate():
        Backlogged(n=2).dispatch()
        (original,) = app.connection.receive("default", 1, 0)
        app.connection.delete("default", [original])
        clock.now += 3600  # an hour later, the attacker sends the captured body again, claiming it is old
        from sqsjobs.connections.base import OutgoingMessage

        forged = f"{int((clock.now - 3600) * 1000)}:k1:{'0' * 64}"
        replay = OutgoingMessage(original.body, attributes={policy.FIRST_SENT_ATTRIBUTE: forged})
        app.connection.send("default", replay)
        (message,) = app.connection.receive("default", 1, 0)
        decision = app.runner.process(message)
    assert isinstance(decision, Fail) and decision.reason == "expired_signature"
    assert Backlogged.runs == []


def test_a_stamped_copy_replayed_later_is_refused() -> None:
    """The stamp vouches for the copy it was made for: captured and sent again an hour later, it is ignored."""
    Backlogged.runs = []
    clock = FakeClock()
    app = signed_app(clock)
    with app.activate():
        Backlogged(n=3).dispatch()
        (message,) = app.connection.receive("default", 1, 0)
        assert app.settler.give_back([message], 0, "the worker is stopping") == [message]
        app.connection.delete("default", [message])
        (copy,) = app.connection.receive("default", 1, 0)
        assert app.runner.process(copy) == Ack()
        app.connection.delete("default", [copy])
        clock.now += 3600
        from sqsjobs.connections.base import OutgoingMessage

        app.connection.send("default", OutgoingMessage(copy.body, attributes=dict(copy.attributes)))
        (replayed,) = app.connection.receive("default", 1, 0)
        decision = app.runner.process(replayed)
    assert isinstance(decision, Fail) and decision.reason == "expired_signature"
    assert Backlogged.runs == [3]
