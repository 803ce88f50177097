"""Whether a send was duplicated by botocore itself: an `after` fault (the message taken, its answer lost)
makes botocore send it again, a real duplicate on a standard queue. sqsjobs runs such a copy once per job
id (the claim, the "ended" mark), but nothing can tell whether a run killed between its end and that mark
did its work: the copy then runs it again, as a plain job's own message would after a kill in its delete
window. The checks count that, and fail a second send with no lost answer behind it."""

from __future__ import annotations

from typing import Any

#: The `faults` counters of an SQS send whose answer was lost (sqsjobs.testing.faults, kind `after`).
_LOST = ("sqs:SendMessage:after", "sqs:SendMessageBatch:after")


def lost_send_answer(records: list[dict[str, Any]], pid: int, at: float) -> bool:
    """Whether worker `pid` had an SQS send's answer lost around `at`: its `faults` line (written once a
    second, counts so far) after `at` counts more lost sends than its last one before `at`. False when it
    wrote none after (killed first): unproven, so not explained."""
    before: dict[str, Any] | None = None
    for record in records:  # in time order
        if record.get("ev") != "faults" or record.get("pid") != pid:
            continue
        if record["t"] <= at:
            before = record
        else:
            return _lost(record) > _lost(before)
    return False


def _lost(record: dict[str, Any] | None) -> int:
    counts = record.get("counts", {}) if record else {}
    return sum(int(counts.get(name, 0)) for name in _LOST)
