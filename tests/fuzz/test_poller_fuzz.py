"""Properties of one receive by the poller, whatever an attacker put on the queue.

- nothing raises out of the worker's receive/process path;
- every message is decided in that one receive: deleted (ran, acked, deferred), in the DLQ with a
  `sqsjobs.reason`, or released with a reason; one that cannot become a job is in the DLQ;
- a poisoned message never touches its neighbours: the real jobs next to it run exactly once.
"""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.fuzz.harness import Recorder, judge, poll_once, setup, teardown, worker_run
from tests.fuzz.strategies import EVERYTHING_AT_ONCE, FUZZ, FUZZ_TIMEOUT, KNOWN, Scenario, scenarios


def check(scenario: Scenario) -> None:
    Recorder.runs.clear()
    example = setup(scenario)
    try:
        judge(example, poll_once(example))
    finally:
        teardown(example)


@pytest.mark.timeout(FUZZ_TIMEOUT)
@FUZZ
@given(scenario=scenarios())
def test_one_poller_receive_decides_every_message_and_poison_spares_its_neighbours(
    fuzz_aws: None, scenario: Scenario
) -> None:
    check(scenario)


@pytest.mark.parametrize("scenario", [*KNOWN, EVERYTHING_AT_ONCE], ids=[s.name for s in [*KNOWN, EVERYTHING_AT_ONCE]])
def test_known_poison_in_one_poller_receive(fuzz_aws: None, scenario: Scenario) -> None:
    """One scenario per bug class seen so far, so each stays covered whatever Hypothesis draws."""
    check(scenario)


@pytest.mark.parametrize("event_loop", [False, True], ids=["threads", "asyncio"])
def test_the_real_worker_loop_settles_a_poisoned_batch_the_same_way(fuzz_aws: None, event_loop: bool) -> None:
    """`Worker.run` itself (threads or --async, heartbeat and deleter threads, long polls), so the driver
    above stays honest."""
    Recorder.runs.clear()
    example = setup(EVERYTHING_AT_ONCE)
    try:
        judge(example, worker_run(example, event_loop))
    finally:
        teardown(example)
