"""The AWS world the fuzz properties run in (profiles live in tests/fuzz/strategies.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sqsjobs import App, aws
from sqsjobs.provisioning import provision
from tests.fuzz.harness import FOREIGN_BUCKET, Recorder


@pytest.fixture
def fuzz_aws(moto: None) -> Iterator[None]:
    """In-process moto with the coordination table, the payload bucket and a bucket sqsjobs does not own.

    One per test: Hypothesis runs every example inside it, and each example makes its own queues.
    """
    provision(App(connection="sqs", queue_prefix="fuzz-setup-"), [], table=True, bucket=True)
    aws.client("s3").create_bucket(Bucket=FOREIGN_BUCKET)
    Recorder.runs.clear()
    yield
    Recorder.runs.clear()
