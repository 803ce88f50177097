"""Shared fixtures: a clean AWS environment per test, in-process moto, an App on fresh queues."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

import sqsjobs
from sqsjobs import App, aws
from sqsjobs.provisioning import provision
from sqsjobs.schedules import default_schedules
from sqsjobs.testing import aws_rules, faults
from tests import moto_polls

# The strict-AWS-rules layer reaches every botocore/aiobotocore client created from here on, in-process
# moto and moto-server tests alike (see docs/testing.md). Installed at import, before any test makes a client.
aws_rules.install()
# Fault injection is installed at once too (inert until a test adds a rule through the `faults` fixture),
# so clients created before the fixture runs -- e.g. by `sqs_app`'s provisioning -- are reached as well.
faults.install()
# moto's long polls end when SQS's would (a message that becomes visible, a queue left with nothing):
# tests/moto_polls.py. Without it, every worker a test runs until its queue is empty waits out two
# idle polls of at least a second each.
moto_polls.install()

# Hypothesis judges an example by its wall time too: a 200 ms deadline and the too-slow health check.
# On a loaded CI machine (xdist workers beside the soak's subprocesses) one pause fails a property that
# holds, so no test here is timed; properties and their example counts stay each test's own.
settings.register_profile("sqsjobs", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sqsjobs")

#: Files that run first: the soak slice is one test of one to three minutes; with `make test`'s
#: `--dist loadfile --no-loadscope-reorder` the file a worker starts last decides when the run ends.
_FIRST = ("tests/e2e/test_soak.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest single test first, so the other workers do the rest of the suite meanwhile."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in _FIRST)


_AWS_VARS = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_SESSION_TOKEN",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the developer's AWS account or SQSJOBS_* settings, and none leaves the process's
    logging or its default schedules changed for the tests after it."""
    import os

    for name in list(os.environ):
        if name.startswith("SQSJOBS_") or name in _AWS_VARS:
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    aws.reset_clients()
    aws_rules.reset()
    logger = logging.getLogger("sqsjobs")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    declared = dict(default_schedules._by_name)
    yield
    # The CLI configures the sqsjobs loggers for its process; undo that between tests (the level through
    # setLevel, which also drops what the child loggers cached of the old one).
    logger.handlers[:], logger.propagate = saved[0], saved[1]
    logger.setLevel(saved[2])
    sqsjobs.use(None)
    aws.reset_clients()
    # Last, so a failure here leaves the next test the clean state above. The process-wide registry is
    # every later test's too: a schedule a test leaves there (or takes away) is, or is not, due in
    # whichever scheduler test this worker runs next: a chance failure, by xdist's order. What the test
    # monkeypatched is put back first; the registry is then put back as it was, so only this test fails.
    monkeypatch.undo()
    changed = sorted(set(default_schedules._by_name) ^ set(declared))
    default_schedules._by_name.clear()
    default_schedules._by_name.update(declared)
    assert not changed, (
        f"the test changed {changed} in the default schedules; pass schedule(..., registry=Schedules()), "
        "or import a module that declares schedules at collection, not inside a test"
    )


@pytest.fixture
def moto() -> Iterator[None]:
    """In-process moto: boto3 calls never leave the process."""
    from moto import mock_aws

    with mock_aws():
        aws.reset_clients()
        yield
    aws.reset_clients()


#: botocore's retry waits under `quick_retries`: a fiftieth of its own (at most 0.3 s over five attempts).
RETRY_WAIT_SCALE = 0.02


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries as it would, after a fiftieth of its waits (random, up to 1 + 2 + 4 + 8 s otherwise).

    For tests whose calls fail on every attempt: what they check is how many attempts there were and
    what became of the call, never how long botocore slept in between.
    """
    from botocore.retries.standard import ExponentialBackoff

    delay_amount = ExponentialBackoff.delay_amount
    monkeypatch.setattr(
        ExponentialBackoff, "delay_amount", lambda self, context: delay_amount(self, context) * RETRY_WAIT_SCALE
    )


@pytest.fixture
def faults_plan(quick_retries: None) -> Iterator[faults.FaultPlan]:
    """Alias of `faults` for modules that import the `faults` module under that name.

    With `quick_retries`: an injected fault is retried as a real one is, without the wait.
    """
    plan = faults.install()
    plan.clear()
    yield plan
    plan.clear()


@pytest.fixture(name="faults")
def faults_fixture(faults_plan: faults.FaultPlan) -> faults.FaultPlan:
    """The fault controller (sqsjobs.testing.faults), empty at the start; cleared after the test."""
    return faults_plan


@pytest.fixture
def prefix() -> str:
    """A fresh queue-name prefix, so no test shares (or deepens) another's queue."""
    return f"t{uuid.uuid4().hex[:10]}-"


@pytest.fixture
def sqs_app(moto: None, prefix: str) -> Iterator[App]:
    """An App on the sqs connection with provisioned `default` and `high` queues (VT 30 s)."""
    app = App(connection="sqs", queue_prefix=prefix, queues=["default", "high"], visibility_timeout=30)
    provision(app, ["default", "high"], table=False, bucket=False)
    with app.activate():
        yield app


@pytest.fixture
def memory_app() -> Iterator[App]:
    app = App(connection="memory")
    with app.activate():
        yield app


@pytest.fixture
def s3_app(moto: None, prefix: str) -> Iterator[App]:
    """An App whose every job body travels through its own S3 bucket (`payload_threshold="always"`)."""
    from tests.helpers import payload_app

    app = payload_app(prefix, payload_threshold="always")
    with app.activate():
        yield app
