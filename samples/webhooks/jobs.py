"""What a payment provider's webhook sets off: the event, read back from S3 by id, applied to an invoice.

The message carries only the event id: the raw payload stays where the endpoint stored it, so a
replay (`replay(event_id)`) runs the job on exactly what the provider sent. Duplicate deliveries of one
event (providers retry until they see a 2xx, and sometimes anyway) are absorbed twice over: while the
first is queued or running, its unique lock (`unique_for`) keeps a second from being queued at all; once
it has succeeded, its idempotency key acknowledges a late copy without running it — for as long as
the provider may still send one: providers retry for up to 3 days, so the key is kept for 4
(`idempotency_ttl`; the default, one day, would let a copy on day 2 run again). A replay has a key of
its own, so it does run.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from botocore.exceptions import ClientError

from samples.s3_json import read_json
from sqsjobs import App, Job, PermanentError, aws

BUCKET = "sample-webhooks"


def stored(event_id: str) -> bytes | None:
    """The raw body the provider sent for `event_id` (None if it never arrived)."""
    try:
        return bytes(aws.client("s3").get_object(Bucket=BUCKET, Key=f"events/{event_id}.json")["Body"].read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise


def runs(event_id: str) -> int:
    """How often the handler really ran for `event_id` (the sample counts, to show the duplicates it skipped)."""
    found = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=f"runs/{event_id}/")
    return int(found.get("KeyCount", 0))


def invoice(invoice_id: str) -> dict[str, Any] | None:
    return read_json(BUCKET, f"invoices/{invoice_id}.json")


class ProcessPaymentEvent(Job, name="webhooks.payment-event"):
    tries = 5
    backoff = [1, 5, 30]
    unique_for = 3600  # no second message for one event while the first is queued or running
    # A done event's key outlives the provider's retries (up to 3 days), so a late copy never runs twice.
    idempotency_ttl = timedelta(days=4)

    event_id: str
    #: Empty for the delivery itself; a fresh id for each replay (so the idempotency key lets it run).
    replay: str = ""

    def unique_id(self) -> str:
        return f"{self.event_id}/{self.replay}"

    def idempotency_key(self) -> str:
        return f"{self.event_id}/{self.replay}"

    def handle(self) -> None:
        body = stored(self.event_id)
        if body is None:
            raise PermanentError(f"event {self.event_id} is not in s3://{BUCKET}/events/; nothing to process")
        event = json.loads(body)
        s3 = aws.client("s3")
        if event["type"] == "invoice.paid":
            data = event["data"]
            paid = {"invoice": data["invoice"], "amount_cents": data["amount_cents"], "paid_by_event": self.event_id}
            s3.put_object(Bucket=BUCKET, Key=f"invoices/{data['invoice']}.json", Body=json.dumps(paid).encode())
        run = {"replay": self.replay, "attempt": self.attempts}
        s3.put_object(Bucket=BUCKET, Key=f"runs/{self.event_id}/{uuid.uuid4().hex}.json", Body=json.dumps(run).encode())


def replay(app: App, event_id: str) -> str:
    """Run the job again on the payload stored for `event_id` (after fixing a bug in the handler, say).
    Returns the job id."""
    if stored(event_id) is None:
        raise LookupError(f"no stored payload for event {event_id!r} in s3://{BUCKET}/events/")
    return app.dispatch(ProcessPaymentEvent(event_id=event_id, replay=uuid.uuid4().hex[:12])).job_id
