"""How the lanes wake job loops: every held message starts once, no waiting loop is left asleep with work
to do, and the tickets that wake loops never pile up while the loops are busy.

A waiting loop also looks again on its own every `Lanes.look_again_s`; most tests here raise that to 30 s,
so a wake-up that was lost shows as a loop still asleep at a 5-10 s deadline instead of hiding behind it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.worker.control import Control
from sqsjobs.worker.lanes import Lanes
from tests.helpers import wait_for


@pytest.fixture
def no_look_again(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(Lanes, "look_again_s", 30.0)
    yield


def message(n: int, group: str | None = None) -> ReceivedMessage:
    return ReceivedMessage("default", f"m{n}", f"r{n}", "{}", 1, 0.0, group_id=group)


def run_loops(lanes: Lanes, count: int, started: list[str]) -> list[threading.Thread]:
    lock = threading.Lock()

    def loop() -> None:
        while (taken := lanes.take()) is not None:
            with lock:
                started.append(taken.message_id)
            lanes.finish(taken, left_queue=True)

    loops = [threading.Thread(target=loop, daemon=True) for _ in range(count)]
    for thread in loops:
        thread.start()
    return loops


def test_ten_loops_start_every_message_of_twenty_receives_once_and_all_stop_when_closed(no_look_again: None) -> None:
    lanes = Lanes(Control(), concurrency=10, prefetch=0)
    started: list[str] = []
    loops = run_loops(lanes, 10, started)
    for batch in range(20):
        wait_for(lambda: lanes._sleepers == 10, timeout=10, what="every loop waiting")
        assert lanes.add([message(batch * 10 + i) for i in range(10)])
        wait_for(lanes.idle, timeout=10, what="the receive's messages to start and finish, woken by tickets")
    assert sorted(started) == sorted(f"m{n}" for n in range(200)), "each message started exactly once"
    assert lanes.close() == []
    for thread in loops:
        thread.join(5)
    assert not any(thread.is_alive() for thread in loops), "closing wakes every waiting loop"


def test_loops_that_look_again_at_once_race_the_tickets_and_still_start_everything_once() -> None:
    lanes = Lanes(Control(), concurrency=5, prefetch=5)
    lanes.look_again_s = 0.0005  # waits that time out just as a ticket is put, over and over
    started: list[str] = []
    loops = run_loops(lanes, 5, started)
    for batch in range(40):
        assert lanes.add([message(batch * 10 + i) for i in range(10)])
        wait_for(lanes.idle, timeout=10, what="the batch to finish")
    assert sorted(started) == sorted(f"m{n}" for n in range(400))
    lanes.close()
    for thread in loops:
        thread.join(5)
    assert not any(thread.is_alive() for thread in loops)
    assert lanes._sleepers == 0 and lanes._tickets.qsize() <= 5


def test_messages_added_while_every_loop_is_busy_put_no_ticket_and_are_taken_when_a_loop_returns() -> None:
    lanes = Lanes(Control(), concurrency=2, prefetch=100)
    lanes.add([message(0), message(1)])
    first, second = lanes.take(block=False), lanes.take(block=False)
    assert first is not None and second is not None
    for n in range(2, 102):  # a busy worker: nobody waits, so nobody is to be woken
        lanes.add([message(n)])
    assert lanes._tickets.qsize() == 0
    lanes.finish(first, left_queue=True)
    assert lanes.take(block=False) is not None, "the loop that finished takes the next one itself"


def test_a_loop_waiting_on_a_group_that_is_running_wakes_when_the_group_moves_on(no_look_again: None) -> None:
    lanes = Lanes(Control(), concurrency=2, prefetch=0)
    a0, a1 = message(0, "a"), message(1, "a")
    lanes.add([a0, a1])
    assert lanes.take(block=False) is a0
    taken: list[ReceivedMessage | None] = []
    waiter = threading.Thread(target=lambda: taken.append(lanes.take()), daemon=True)
    waiter.start()
    wait_for(lambda: lanes._sleepers == 1, timeout=5, what="the second loop to wait")
    lanes.finish(a0, left_queue=True)
    waiter.join(5)
    assert taken == [a1]


def test_stopping_wakes_a_waiting_loop_with_nothing_to_take(no_look_again: None) -> None:
    control = Control()
    lanes = Lanes(control, concurrency=1, prefetch=0)
    taken: list[ReceivedMessage | None] = [message(9)]
    waiter = threading.Thread(target=lambda: taken.__setitem__(0, lanes.take()), daemon=True)
    waiter.start()
    wait_for(lambda: lanes._sleepers == 1, timeout=5, what="the loop to wait")
    control.stop("test")
    waiter.join(5)
    assert not waiter.is_alive() and taken == [None]


def test_a_listener_is_told_when_a_receive_holds_messages_and_when_taking_ends_and_never_after_it_leaves() -> None:
    """The asyncio worker's loop never blocks in `take`: the lanes tell it when to look instead."""
    control = Control()
    lanes = Lanes(control, concurrency=1, prefetch=1)
    told: list[bool] = []
    lanes.listen(lambda: told.append(lanes.done()))
    assert lanes.add([message(1), message(2)])
    assert told == [False], "a receive held messages: look, taking goes on"
    first = lanes.take(block=False)
    assert first is not None
    lanes.finish(first, left_queue=True)
    assert told == [False], "a finish tells nobody: the finisher takes the next message itself"
    control.stop("the test is over")
    assert told == [False, True], "a stop is told, and taking has ended"
    assert [m.message_id for m in lanes.close()] == ["m2"]
    assert told == [False, True, True]
    lanes.listen(None)
    lanes.wake()
    assert told == [False, True, True], "a listener that left is not told"


def test_taking_ends_for_a_listener_once_max_starts_were_started() -> None:
    lanes = Lanes(Control(), concurrency=2, prefetch=0, max_starts=1)
    assert lanes.add([message(1)])
    assert not lanes.done()
    assert lanes.take(block=False) is not None
    assert lanes.done(), "`--max-jobs 1` started its one: taking has ended though nothing stopped"
