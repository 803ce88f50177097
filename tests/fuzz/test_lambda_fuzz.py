"""The same properties for the Lambda handler, on real-shaped events built from received messages.

- nothing raises out of the handler;
- a record is in `batchItemFailures` exactly when the core released it; everything else is
  deleted by the mapping, and one that cannot become a job is in the DLQ with a `sqsjobs.reason`;
- a poisoned record never touches the others in its batch: the real jobs run exactly once.
"""

from __future__ import annotations

import pytest
from hypothesis import given

from tests.fuzz.harness import Recorder, judge, lambda_once, setup, teardown
from tests.fuzz.strategies import EVERYTHING_AT_ONCE, FUZZ, FUZZ_TIMEOUT, KNOWN, Scenario, scenarios


def check(scenario: Scenario) -> None:
    Recorder.runs.clear()
    example = setup(scenario)
    try:
        judge(example, lambda_once(example))
    finally:
        teardown(example)


@pytest.mark.timeout(FUZZ_TIMEOUT)
@FUZZ
@given(scenario=scenarios())
def test_one_lambda_invocation_decides_every_record_and_poison_spares_its_neighbours(
    fuzz_aws: None, scenario: Scenario
) -> None:
    check(scenario)


@pytest.mark.parametrize("scenario", [*KNOWN, EVERYTHING_AT_ONCE], ids=[s.name for s in [*KNOWN, EVERYTHING_AT_ONCE]])
def test_known_poison_in_one_lambda_invocation(fuzz_aws: None, scenario: Scenario) -> None:
    """One scenario per bug class seen so far, so each stays covered whatever Hypothesis draws."""
    check(scenario)
