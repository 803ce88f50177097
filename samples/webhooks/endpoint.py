"""The webhook endpoint (Starlette): check the signature, keep the raw body, queue a job, answer at once.

The provider signs `<timestamp>.<raw body>` with HMAC-SHA256 and a shared secret, sent as
`Webhook-Timestamp` and `Webhook-Signature: v1=<hex>`. A signature is checked on the raw bytes, before
any parsing, in constant time; a timestamp more than 5 minutes off is refused, so a captured request
cannot be replayed later. The work happens in the job: the answer only waits for an S3 put and an SQS
send, so providers (most give up after a few seconds) never time out on us.

Everything before the signature check is input from anyone: a body over `MAX_BODY` is refused (413)
from its Content-Length and again while it streams in, before it is kept or verified; a header that is
not plain ASCII, or a timestamp that is not a short number, is a bad signature (401), never a crash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sqsjobs import App, aws

from .jobs import BUCKET, ProcessPaymentEvent

#: How far a delivery's timestamp may be from our clock.
TOLERANCE_S = 300
#: The largest body taken (providers' events are a few KiB); a larger one is refused unread (413).
MAX_BODY = 256 * 1024
#: A Unix timestamp in seconds has 10 digits until the year 2286; more is not a timestamp.
_MAX_TIMESTAMP_DIGITS = 12


class TooLarge(Exception):
    """The body is over MAX_BODY."""


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The `Webhook-Signature` header a provider sends (and the sample's client computes)."""
    return "v1=" + hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def verified(secret: bytes, body: bytes, timestamp: str, signature: str, now: float) -> bool:
    """Whether the delivery is signed with `secret` and recent. False, never an exception, for any
    header a sender can make up: non-ASCII text, a timestamp of hundreds of digits."""
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _MAX_TIMESTAMP_DIGITS):
        return False
    if not signature.isascii():
        return False
    when = int(timestamp)
    try:
        if abs(now - when) > TOLERANCE_S:
            return False
    except OverflowError:
        return False
    return hmac.compare_digest(sign(secret, body, when).encode("ascii"), signature.encode("ascii"))


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The raw body, refused (TooLarge) from its Content-Length or as soon as the stream passes `limit`,
    so an oversized or endless upload is never held in memory."""
    declared = request.headers.get("content-length", "")
    if declared and (not declared.isascii() or not declared.isdigit() or int(declared) > limit):
        raise TooLarge(declared)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(str(size))
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(jobs: App, secret: bytes) -> Starlette:
    """The ASGI app; `jobs` is the sqsjobs App it dispatches to."""

    def keep_and_queue(event_id: str, body: bytes) -> bool:
        # Blocking boto3 calls: run on Starlette's thread pool, never on the event loop.
        aws.client("s3").put_object(Bucket=BUCKET, Key=f"events/{event_id}.json", Body=body)
        return jobs.dispatch(ProcessPaymentEvent(event_id=event_id)).queued

    async def receive(request: Request) -> JSONResponse:
        try:
            body = await read_body(request)
        except TooLarge:
            return JSONResponse({"error": f"the body is over {MAX_BODY} bytes"}, status_code=413)
        timestamp = request.headers.get("webhook-timestamp", "")
        signature = request.headers.get("webhook-signature", "")
        if not verified(secret, body, timestamp, signature, time.time()):
            return JSONResponse({"error": "bad or missing signature"}, status_code=401)
        try:
            event = json.loads(body)
            event_id = str(event["id"])
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "the body is not an event with an id"}, status_code=400)
        if not event_id.replace("_", "").isalnum() or len(event_id) > 100:
            return JSONResponse({"error": "bad event id"}, status_code=400)
        queued = await run_in_threadpool(keep_and_queue, event_id, body)
        # A duplicate is a success for the provider: it must stop retrying.
        return JSONResponse({"event": event_id, "status": "queued" if queued else "duplicate"}, 202 if queued else 200)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        # Make the clients and resolve the queue before the first delivery, so that one answers fast too.
        def warm() -> None:
            for service in ("s3", "sqs", "dynamodb"):  # the endpoint's calls: put, send, unique lock
                aws.client(service)
            jobs.connection.queue_info(jobs.settings.default_queue)

        await run_in_threadpool(warm)
        yield

    return Starlette(routes=[Route("/webhooks/payments", receive, methods=["POST"])], lifespan=lifespan)
