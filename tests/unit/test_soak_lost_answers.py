"""The soak counts a callback run twice from a send botocore repeated (a lost answer) and a kill, as it counts a
plain job's rerun after a kill; any other second send stays a violation (tests/soak/lost_answers.py)."""

from __future__ import annotations

from typing import Any

from tests.soak.lost_answers import lost_send_answer


def faults(pid: int, t: float, **counts: int) -> dict[str, Any]:
    return {"ev": "faults", "pid": pid, "t": t, "counts": {k.replace("_", ":"): n for k, n in counts.items()}}


RECORDS = [
    faults(7, 10.0, sqs_SendMessageBatch_after=1),
    faults(8, 10.5, sqs_SendMessage_after=0),
    faults(7, 11.0, sqs_SendMessageBatch_after=2),
    faults(8, 11.5, sqs_SendMessage_after=0, sqs_SendMessage_reset=3),
    faults(7, 12.0, sqs_SendMessageBatch_after=2, dynamodb_PutItem_after=4),
    faults(8, 12.5, sqs_SendMessage_after=1, sqs_SendMessage_reset=3),
]


def test_a_send_in_the_second_its_worker_lost_a_send_answer_is_explained() -> None:
    assert lost_send_answer(RECORDS, 7, 10.4)
    assert lost_send_answer(RECORDS, 8, 12.0)  # a SendMessage this time
    assert lost_send_answer(RECORDS, 7, 9.0)  # its first count covers the time since the worker started


def test_a_send_with_no_lost_answer_around_it_is_not() -> None:
    assert not lost_send_answer(RECORDS, 8, 11.0)  # a reset took no effect: no duplicate
    assert not lost_send_answer(RECORDS, 7, 11.7)  # only a DynamoDB answer was lost in that second


def test_a_worker_killed_before_its_next_count_proves_nothing() -> None:
    assert not lost_send_answer(RECORDS, 7, 12.5)  # no count after it
    assert not lost_send_answer(RECORDS, 9, 10.0)
