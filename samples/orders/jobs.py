"""Checkout as a chain: charge -> invoice -> confirm, with a refund as the chain's catch.

Every job names its effect with an idempotency key (`charge-order-1001`), so a second message for the
same order — a checkout submitted twice, a redelivery after the work was done — is acknowledged without
running. Inside the charge, `self.step("charge", ...)` records the payment, so a retry after the money
was taken (the job crashed later on) does not call the provider again; and the provider gets an
idempotency key of its own (`order-1001`), for the one case neither can cover: its answer lost mid-call.
That key is also how the refund finds the money: the order record only learns a payment id from an
answer, and when every answer was lost the provider holds a payment the record never heard of.
"""

from __future__ import annotations

from sqsjobs import Job, PermanentError

from . import shop


def charge_key(order_id: int) -> str:
    """The provider's idempotency key for an order's charge: the same order, the same payment."""
    return f"order-{order_id}"


#: The charge's tries; the last one that fails says so in the order's log.
CHARGE_TRIES = 3


class ChargeOrder(Job, name="orders.charge"):
    tries = CHARGE_TRIES
    backoff = 1  # seconds: the sample should not wait long for its retries
    timeout = 30

    order_id: int

    def idempotency_key(self) -> str:
        return f"charge-order-{self.order_id}"

    def handle(self) -> None:
        order = shop.order(self.order_id)
        trouble = order["trouble"]

        def take_payment() -> str:
            return shop.charge(
                self.order_id,
                order["amount_cents"],
                idempotency_key=charge_key(self.order_id),
                lose_answer=trouble == "answer-always-lost" or (trouble == "answer-lost" and self.attempts == 1),
            )

        try:
            payment_id = self.step("charge", take_payment)
        except shop.AnswerLost:
            then = "to be retried" if self.attempts < CHARGE_TRIES else "giving up: the chain's catch refunds"
            shop.note(self.order_id, f"no answer from the provider (attempt {self.attempts}): {then}")
            raise
        if trouble == "crash-after-charge" and self.attempts == 1:
            shop.note(self.order_id, f"charged {payment_id}, then crashed (attempt {self.attempts}): retried")
            raise ConnectionError("the database went away while saving the receipt")
        shop.note(self.order_id, f"charged {payment_id} (attempt {self.attempts})", payment_id=payment_id)


class InvoiceOrder(Job, name="orders.invoice"):
    tries = 3
    backoff = 1

    order_id: int

    def idempotency_key(self) -> str:
        return f"invoice-order-{self.order_id}"

    def handle(self) -> None:
        if shop.order(self.order_id)["trouble"] == "bad-address":
            raise PermanentError(f"order {self.order_id}: the tax service rejected the billing address")
        shop.note(self.order_id, f"invoiced INV-{self.order_id}", invoice=f"INV-{self.order_id}")


class ConfirmOrder(Job, name="orders.confirm"):
    order_id: int

    def idempotency_key(self) -> str:
        return f"confirm-order-{self.order_id}"

    def handle(self) -> None:
        shop.note(self.order_id, "confirmation mailed", status="confirmed")


class RefundOrder(Job, name="orders.refund"):
    """The chain's catch: sent once when a link fails for good. Refunds only what was charged.

    What was charged is the provider's to say, not the order record's: asked by the charge's own
    idempotency key, it knows of a payment whose answer never reached us (every try lost it), which
    the record never saw.
    """

    tries = 5
    backoff = 1

    order_id: int

    def idempotency_key(self) -> str:
        return f"refund-order-{self.order_id}"

    def handle(self) -> None:
        payment_id = shop.payment_for(charge_key(self.order_id))
        if payment_id is None:
            shop.note(self.order_id, "nothing to refund", status="cancelled")
            return
        refund_id = shop.refund(self.order_id, payment_id, idempotency_key=f"refund-{self.order_id}")
        shop.note(self.order_id, f"refunded {payment_id} ({refund_id})", status="refunded")


def checkout(order_id: int) -> str:
    """What the web request does: one chain per order; returns the chain id."""
    from sqsjobs import chain

    return (
        chain([ChargeOrder(order_id=order_id), InvoiceOrder(order_id=order_id), ConfirmOrder(order_id=order_id)])
        .catch(RefundOrder(order_id=order_id))
        .dispatch()
    )
