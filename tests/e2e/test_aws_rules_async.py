"""The strict-AWS-rules layer and fault injection reach aiobotocore clients too (over the moto server,
since in-process mock_aws does not intercept aiobotocore)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError

from sqsjobs.testing.faults import FaultPlan
from tests.e2e.conftest import E2E


async def _calls(endpoint: str, prefix: str) -> dict[str, Any]:
    config = Config(region_name="us-east-1", retries={"mode": "standard", "max_attempts": 5})
    async with get_session().create_client("sqs", endpoint_url=endpoint, config=config) as sqs:
        url = (await sqs.create_queue(QueueName=f"{prefix}async"))["QueueUrl"]
        out: dict[str, Any] = {}
        try:
            await sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="d")
            out["dedup"] = "ACCEPTED"
        except ClientError as exc:
            out["dedup"] = (exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"])
        try:
            await sqs.delete_message_batch(
                QueueUrl=url, Entries=[{"Id": "a", "ReceiptHandle": "x"}, {"Id": "a", "ReceiptHandle": "y"}]
            )
            out["batch"] = "ACCEPTED"
        except ClientError as exc:
            out["batch"] = type(exc).__name__
        sent = await sqs.send_message(QueueUrl=url, MessageBody="through a throttle")
        out["retries"] = sent["ResponseMetadata"]["RetryAttempts"]
        return out


def test_aiobotocore_clients_get_the_strict_layer_and_faults(e2e: E2E, faults: FaultPlan) -> None:
    faults.add(service="sqs", operation="SendMessage", kind="throttle", times=1)
    result = asyncio.run(_calls(e2e.endpoint, e2e.prefix))
    # The refused call never reached the server, so the planned throttle hit the valid send, which retried.
    assert result == {"dedup": ("InvalidParameterValue", 400), "batch": "BatchEntryIdsNotDistinct", "retries": 1}
    assert faults.count(service="sqs", operation="SendMessage", kind="throttle") == 1


@pytest.mark.parametrize("kind", ["500", "reset"])
def test_aiobotocore_retries_injected_errors(e2e: E2E, faults: FaultPlan, kind: str) -> None:
    async def send() -> int:
        config = Config(region_name="us-east-1", retries={"mode": "standard", "max_attempts": 5})
        async with get_session().create_client("sqs", endpoint_url=e2e.endpoint, config=config) as sqs:
            url = (await sqs.create_queue(QueueName=f"{e2e.prefix}retry"))["QueueUrl"]
            faults.add(service="sqs", operation="SendMessage", kind=kind, times=1)
            sent = await sqs.send_message(QueueUrl=url, MessageBody="x")
            return int(sent["ResponseMetadata"]["RetryAttempts"])

    assert asyncio.run(send()) == 1
    assert faults.count(kind=kind) == 1
