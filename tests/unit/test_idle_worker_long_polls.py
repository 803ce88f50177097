"""An idle worker long-polls: on SQS every empty receive is billed, so a worker that stopped waiting
(WaitTimeSeconds 0) would cost money in a hot loop. In this project's tests moto ends the poll of an
empty queue early (tests/moto_polls.py), so a receive count cannot tell the two apart; the request can.
"""

from __future__ import annotations

from sqsjobs import App
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import sqs_requests


def test_the_worker_waits_at_least_a_second_on_an_idle_queue(sqs_app: App) -> None:
    """Every receive of a worker that finds its queue empty is a long poll of at least a second."""
    receives = sqs_requests("ReceiveMessage")
    assert Worker(sqs_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    assert receives and all(call["WaitTimeSeconds"] >= 1 for call in receives)
