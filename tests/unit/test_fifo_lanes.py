"""FIFO lanes: a worker runs a message group one message at a time, in order, whatever its concurrency.

One receive returns several messages of a group; before lanes they ran on separate threads and
finished out of order (seen on moto: a group of five finished 2, 3, 1, 0, 4).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest

from sqsjobs import App
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.job_class import Job
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import dead_letters, work_for

QUEUE = "orders.fifo"


class Ordered(Job, name="fifo.ordered"):
    """Later members of the group sleep less, so run side by side they would finish first."""

    queue = QUEUE
    backoff = 1
    log: ClassVar[list[tuple[str, int]]] = []
    attempts_seen: ClassVar[dict[int, list[int]]] = {}
    lock: ClassVar[threading.Lock] = threading.Lock()

    n: int
    fail_first: bool = False

    def note(self, event: str) -> None:
        with Ordered.lock:
            Ordered.log.append((event, self.n))

    def handle(self) -> None:
        Ordered.attempts_seen.setdefault(self.n, []).append(self.attempts)
        self.note("start")
        work_for(0.04 * (5 - self.n))
        if self.fail_first and self.attempts == 1:
            self.note("raised")
            raise RuntimeError("first try fails")
        self.note("end")


@pytest.fixture(autouse=True)
def _reset() -> None:
    Ordered.log.clear()
    Ordered.attempts_seen.clear()


@pytest.fixture(params=["memory", "sqs"])
def app(request: pytest.FixtureRequest, prefix: str) -> Iterator[App]:
    if request.param == "memory":
        app = App(connection="memory", queues=[QUEUE])
    else:
        request.getfixturevalue("moto")
        # The memory store keeps FIFO hand-backs' skip counts; the test needs no DynamoDB table.
        app = App(connection="sqs", queue_prefix=prefix, queues=[QUEUE], visibility_timeout=30, store="memory")
        provision(app, [QUEUE], table=False, bucket=False)
    with app.activate():
        yield app


def work(app: App, event_loop: bool = False) -> int:
    options = WorkerOptions(queues=[QUEUE], concurrency=5, sleep=1, stop_when_empty=True, event_loop=event_loop)
    return Worker(app, options).run(install_signals=False)


def in_order(*members: int) -> list[tuple[str, int]]:
    return [event for n in members for event in (("start", n), ("end", n))]


@pytest.mark.parametrize("event_loop", [False, True], ids=["threads", "asyncio"])
def test_a_group_runs_one_message_at_a_time_in_the_order_sent(app: App, event_loop: bool) -> None:
    for n in range(5):
        Ordered(n=n).dispatch(group="g")
    assert work(app, event_loop) == 0
    assert Ordered.log == in_order(0, 1, 2, 3, 4)


def test_other_groups_still_run_side_by_side(app: App) -> None:
    for n in range(3):
        Ordered(n=n).dispatch(group="a")
        Ordered(n=n + 10).dispatch(group="b")
    assert work(app) == 0
    for group in ([0, 1, 2], [10, 11, 12]):
        assert [e for e in Ordered.log if e[1] in group] == in_order(*group)
    # b's first message did not wait for the whole of group a.
    assert Ordered.log.index(("start", 10)) < Ordered.log.index(("end", 2))


@pytest.mark.parametrize("event_loop", [False, True], ids=["threads", "asyncio"])
def test_a_released_message_holds_back_the_rest_of_its_group(app: App, event_loop: bool) -> None:
    Ordered(n=0, fail_first=True).dispatch(group="g")
    Ordered(n=1).dispatch(group="g")
    Ordered(n=2).dispatch(group="g")
    assert work(app, event_loop) == 0
    assert Ordered.log == [("start", 0), ("raised", 0), *in_order(0, 1, 2)]
    # Handed back unstarted, 1 and 2 spent no try: each ran as its first attempt.
    assert Ordered.attempts_seen == {0: [1, 2], 1: [1], 2: [1]}
    if app.connection.name == "sqs":
        assert dead_letters(app, QUEUE) == []


# -- the lanes alone ------------------------------------------------------------------------


def message(n: int, group: str | None) -> ReceivedMessage:
    return ReceivedMessage(QUEUE, f"m{n}", f"r{n}", "{}", 1, 0.0, group_id=group)


def test_lanes_start_a_group_in_order_and_hand_back_the_rest_when_one_stays_queued() -> None:
    from sqsjobs.worker.control import Control  # imported here so the tests above run on any layout
    from sqsjobs.worker.lanes import Lanes

    lanes = Lanes(Control(), concurrency=4, prefetch=0)
    a0, a1, a2, b0 = message(0, "a"), message(1, "a"), message(2, "a"), message(3, "b")
    lanes.add([a0, a1, a2, b0])
    assert lanes.take(block=False) is a0
    assert lanes.take(block=False) is b0  # a1 waits for a0, b0 does not
    assert lanes.take(block=False) is None
    assert lanes.finish(a0, left_queue=True) == []
    assert lanes.take(block=False) is a1
    assert lanes.finish(a1, left_queue=False) == [a2]  # released: a2 may not overtake it
    assert lanes.take(block=False) is None and lanes.held == 0
