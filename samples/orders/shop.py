"""The shop around the jobs: orders and a payment provider, kept in S3 so any worker process sees them.

The provider behaves like a real card processor: a charge sent twice with the same idempotency key takes
the money once and answers with the first payment. The jobs rely on that for the one failure our own
idempotency key cannot cover: an answer lost in the middle of the call.
"""

from __future__ import annotations

import uuid
from typing import Any

from samples.s3_json import read_json, write_json
from sqsjobs import aws

BUCKET = "sample-orders"


def create_bucket() -> None:
    aws.client("s3").create_bucket(Bucket=BUCKET)


def read(key: str) -> dict[str, Any] | None:
    return read_json(BUCKET, key)


def write(key: str, value: dict[str, Any]) -> None:
    write_json(BUCKET, key, value)


def keys(prefix: str) -> list[str]:
    pages = aws.client("s3").get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


# -- orders ----------------------------------------------------------------------------
def place_order(order_id: int, amount_cents: int, trouble: str = "") -> None:
    """`trouble` is how the sample makes this order go wrong (see samples/orders/README.md)."""
    write(f"orders/{order_id}.json", {"id": order_id, "amount_cents": amount_cents, "trouble": trouble, "log": []})


def order(order_id: int) -> dict[str, Any]:
    found = read(f"orders/{order_id}.json")
    if found is None:
        raise LookupError(f"no order {order_id}")
    return found


def note(order_id: int, line: str, **fields: Any) -> None:
    """Append to the order's log (the links of one order's chain run one after another: no lost update)."""
    current = order(order_id)
    current.update(fields)
    current["log"].append(line)
    write(f"orders/{order_id}.json", current)


# -- the payment provider --------------------------------------------------------------
class AnswerLost(ConnectionError):
    """The provider took the payment, but its answer never arrived (a timeout on our side)."""


def charge(order_id: int, amount_cents: int, idempotency_key: str, lose_answer: bool = False) -> str:
    """Take a payment; the same idempotency key returns the payment already taken."""
    taken = read(f"provider/keys/{idempotency_key}.json")
    if taken is None:
        payment_id = f"pay_{uuid.uuid4().hex[:10]}"
        write(f"provider/payments/{order_id}/{payment_id}.json", {"amount_cents": amount_cents})
        write(f"provider/keys/{idempotency_key}.json", {"payment_id": payment_id})
        taken = {"payment_id": payment_id}
    _count_call(order_id)
    if lose_answer:
        raise AnswerLost(f"no answer from the provider for order {order_id} (the payment was taken)")
    return str(taken["payment_id"])


def payment_for(idempotency_key: str) -> str | None:
    """The payment a charge with this idempotency key took, or None: asked of the provider (real card
    processors look a charge up by the reference it was made with), so a payment whose answer was lost
    is found too."""
    taken = read(f"provider/keys/{idempotency_key}.json")
    return None if taken is None else str(taken["payment_id"])


def refund(order_id: int, payment_id: str, idempotency_key: str) -> str:
    done = read(f"provider/keys/{idempotency_key}.json")
    if done is None:
        refund_id = f"re_{uuid.uuid4().hex[:10]}"
        write(f"provider/refunds/{order_id}/{refund_id}.json", {"payment_id": payment_id})
        write(f"provider/keys/{idempotency_key}.json", {"refund_id": refund_id})
        done = {"refund_id": refund_id}
    return str(done["refund_id"])


def _count_call(order_id: int) -> None:
    write(f"provider/calls/{order_id}/{uuid.uuid4().hex}.json", {})


def payments(order_id: int) -> int:
    return len(keys(f"provider/payments/{order_id}/"))


def refunds(order_id: int) -> int:
    return len(keys(f"provider/refunds/{order_id}/"))


def provider_calls(order_id: int) -> int:
    return len(keys(f"provider/calls/{order_id}/"))
