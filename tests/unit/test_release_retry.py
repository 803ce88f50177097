"""A release (a job's backoff, as a visibility change) that SQS fails on its side is tried again, so
the job comes back when its backoff says, not when the receive's visibility happens to end."""

from __future__ import annotations

from typing import ClassVar

from sqsjobs import App, Job
from sqsjobs.testing.faults import FaultPlan
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import visibility_changes


class Backs(Job, name="release-retry.backs"):
    """Fails its first run; its retry waits 40 s."""

    tries = 3
    backoff = 40
    runs: ClassVar[list[int]] = []

    def handle(self) -> None:
        Backs.runs.append(self.attempts)
        raise ConnectionError("the downstream is down")


def test_a_release_sqs_fails_on_its_side_is_tried_again(sqs_app: App, faults: FaultPlan) -> None:
    """SQS answered the release's ChangeMessageVisibilityBatch with the entry failed (`SenderFault`
    false). The failure was only logged: the message kept the visibility of its receive and ran its
    second try when that ended, not 40 s later."""
    Backs.runs.clear()
    faults.add(service="sqs", operation="ChangeMessageVisibilityBatch", kind="entries", times=1)
    Backs().dispatch()
    with visibility_changes() as landed:
        assert Worker(sqs_app, WorkerOptions(sleep=1, once=True)).run(False) == 0
    assert Backs.runs == [1]
    assert faults.count(operation="ChangeMessageVisibilityBatch", kind="entries") == 1
    assert [seconds for _, seconds in landed] == [40]
