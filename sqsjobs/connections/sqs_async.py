"""Dispatching from async code (aiobotocore), so an async web app never blocks its event loop.

Only sending lives here: workers receive with boto3 on their own threads, and
run `async def handle` jobs on an event loop of their own (see worker/event_loop.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from ..settings import Settings
from .base import BatchFailure, OutgoingMessage
from .sqs import entry_params


class AsyncSqsSender:
    """One aiobotocore client per event loop, opened on first use, closed by `aclose()`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._clients: dict[asyncio.AbstractEventLoop, tuple[Any, contextlib.AsyncExitStack]] = {}
        self._urls: dict[str, str] = {}

    async def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        found = self._clients.get(loop)
        if found is not None:
            return found[0]
        from aiobotocore.config import AioConfig
        from aiobotocore.session import get_session

        from .. import aws

        session = get_session()
        aws.share_loader(session)
        stack = contextlib.AsyncExitStack()
        client = await stack.enter_async_context(
            session.create_client(
                "sqs",
                region_name=aws.region(),
                # The same retry settings as the sync clients (AWS_MAX_ATTEMPTS counts the first call too).
                config=AioConfig(
                    retries={"mode": aws.retry_mode(), "total_max_attempts": aws.max_attempts()},
                    parameter_validation=aws.PARAMETER_VALIDATION,
                ),
            )
        )
        aws.cache_user_agent(client)
        self._clients[loop] = (client, stack)
        return client

    async def url(self, queue: str) -> str:
        found = self._urls.get(queue)
        if found is None:
            physical = self._settings.physical_queue_name(queue)
            if physical.startswith(("https://", "http://")):
                found = physical
            else:
                client = await self._client()
                found = str((await client.get_queue_url(QueueName=physical))["QueueUrl"])
            self._urls[queue] = found
        return found

    async def send(self, queue: str, message: OutgoingMessage) -> str:
        client = await self._client()
        params = entry_params(message)
        params.pop("Id")
        response = await client.send_message(QueueUrl=await self.url(queue), **params)
        return str(response["MessageId"])

    async def send_batch(self, queue: str, messages: Sequence[OutgoingMessage]) -> list[BatchFailure]:
        client = await self._client()
        response = await client.send_message_batch(
            QueueUrl=await self.url(queue), Entries=[entry_params(m) for m in messages]
        )
        return [
            BatchFailure(f["Id"], f.get("Code", ""), f.get("Message", ""), bool(f.get("SenderFault")))
            for f in response.get("Failed", [])
        ]

    async def aclose(self) -> None:
        """Close the client of the running loop (call it when your app shuts down)."""
        found = self._clients.pop(asyncio.get_running_loop(), None)
        if found is not None:
            await found[1].aclose()
