"""One job module, three ways in: the thread poller, the asyncio poller and the Lambda handler.

Each way must reach the same outcomes, because each only moves messages and the
runner core decides.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import ClassVar

import pytest

from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job, PermanentError, aws, batch, chain, find_batch
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import counts, dead_letters, queue_url
from tests.lambda_events import deliver, receive_event


class Tracked(Job, abstract=True):
    runs: ClassVar[list[tuple[str, int]]] = []

    def record(self) -> None:
        Tracked.runs.append((type(self).job_name, self.attempts))


class Works(Tracked, name="ways.works"):
    def handle(self) -> None:
        self.record()


class WorksAsync(Tracked, name="ways.works-async"):
    async def handle(self) -> None:
        await asyncio.sleep(0)
        self.record()


class ThirdTime(Tracked, name="ways.third-time"):
    backoff = 1

    def handle(self) -> None:
        self.record()
        if self.attempts < 3:
            raise ConnectionError("flaky")


class NeverWorks(Tracked, name="ways.never-works"):
    tries = 2
    backoff = 1

    def handle(self) -> None:
        self.record()
        raise RuntimeError("broken")


class Forbidden(Tracked, name="ways.forbidden"):
    def handle(self) -> None:
        self.record()
        raise PermanentError("no")


class Counted(Tracked, name="ways.counted"):
    count: int

    def handle(self) -> None:
        self.record()


def by_poller(event_loop: bool) -> Callable[[App], None]:
    def run(app: App) -> None:
        options = WorkerOptions(sleep=1, concurrency=3, stop_when_empty=True, event_loop=event_loop)
        assert Worker(app, options).run(install_signals=False) == 0

    return run


def by_lambda(app: App) -> None:
    """Invoke the handler with whatever is visible, as the event source mapping would, until empty.

    Empty means two empty looks in a row: moto's queue counts are not one atomic snapshot, so a
    message turning visible at that very moment can be missed by one look.
    """
    handler = SqsHandler(app)
    deadline = time.monotonic() + 30
    empty_looks = 0
    while empty_looks < 2:
        assert time.monotonic() < deadline, "the queue never drained"
        event = receive_event(app, "default", wait=1)
        if event["Records"]:
            deliver(handler, app, "default", event)
        empty_looks = 0 if event["Records"] or any(counts(app, "default").values()) else empty_looks + 1


WAYS = {"poller": by_poller(False), "asyncio": by_poller(True), "lambda": by_lambda}


@pytest.mark.parametrize("way", sorted(WAYS))
def test_every_way_in_reaches_the_same_outcomes(sqs_app: App, way: str) -> None:
    Tracked.runs.clear()
    for job in (Works(), WorksAsync(), ThirdTime(), NeverWorks(), Forbidden()):
        job.dispatch()
    bad = {
        "v": 1,
        "id": "bad-1",
        "job": "ways.counted",
        "payload": {"count": "lots"},
        "queue": "default",
        "dispatched_at": "2026-01-01T00:00:00Z",
    }
    aws.client("sqs").send_message(QueueUrl=queue_url(sqs_app, "default"), MessageBody=json.dumps(bad))

    WAYS[way](sqs_app)

    assert sorted(Tracked.runs) == [
        ("ways.forbidden", 1),
        ("ways.never-works", 1),
        ("ways.never-works", 2),
        ("ways.third-time", 1),
        ("ways.third-time", 2),
        ("ways.third-time", 3),
        ("ways.works", 1),
        ("ways.works-async", 1),
    ]
    reasons = sorted((m["attrs"]["sqsjobs.job"], m["attrs"]["sqsjobs.reason"]) for m in dead_letters(sqs_app))
    assert reasons == [
        ("ways.counted", "invalid_payload"),
        ("ways.forbidden", "permanent"),
        ("ways.never-works", "tries_exhausted"),
    ]
    assert not any(counts(sqs_app, "default").values())


class Link(Tracked, name="ways.link"):
    n: int

    def handle(self) -> None:
        Tracked.runs.append((type(self).job_name, self.n))


def one_at_a_time(way: str) -> Callable[[App], None]:
    """Chains and batches write DynamoDB transactions, which moto cannot take from two threads at once."""
    if way == "lambda":
        return by_lambda

    def run(app: App) -> None:
        options = WorkerOptions(sleep=1, concurrency=1, stop_when_empty=True, event_loop=way == "asyncio")
        assert Worker(app, options).run(install_signals=False) == 0

    return run


@pytest.mark.parametrize("way", sorted(WAYS))
def test_chains_and_batches_reach_the_same_outcomes_on_every_way_in(sqs_app: App, way: str) -> None:
    provision(sqs_app, [], table=True, bucket=False)
    Tracked.runs.clear()
    chain([Link(n=1), Link(n=2), Forbidden(), Link(n=3)]).catch(Link(n=99)).dispatch()
    created = batch([Link(n=10), [Link(n=11), Link(n=12)]]).then(Link(n=100)).finally_(Link(n=101)).dispatch()

    one_at_a_time(way)(sqs_app)

    links = [n for name, n in Tracked.runs if name == "ways.link"]
    assert sorted(links) == [1, 2, 10, 11, 12, 99, 100, 101]
    assert links.index(1) < links.index(2) < links.index(99) and links.index(11) < links.index(12)
    found = find_batch(created.id)
    assert found is not None and (found.total, found.processed, found.failed, found.finished) == (2, 2, 0, True)
