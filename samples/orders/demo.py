"""`python -m samples.orders`: four checkouts on a local AWS, one of them submitted twice, and what each cost.

Runs moto's server on 127.0.0.1 in this process, provisions a queue (with its DLQ), the table and the
buckets, dispatches one chain per order, runs a worker on a thread until every order has settled, then
prints each order's payments, refunds and log. Exit status 0 when every order ended as it should.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from samples.demo_main import demo_main
from sqsjobs import App, JobEvent
from sqsjobs.worker import Worker, WorkerOptions

from . import shop
from .jobs import checkout

#: order id -> (amount in cents, the trouble the sample gives it, the status it must end in)
ORDERS = {
    1001: (4_200, "", "confirmed"),
    1002: (1_999, "answer-lost", "confirmed"),
    1003: (7_500, "crash-after-charge", "confirmed"),
    1004: (2_500, "bad-address", "refunded"),
    1005: (3_300, "answer-always-lost", "refunded"),
}
WHAT = {
    "": "all goes well; then checked out again",
    "answer-lost": "the provider's answer is lost",
    "crash-after-charge": "the job crashes after charging",
    "bad-address": "invoicing fails for good",
    "answer-always-lost": "every charge answer is lost",
}


class Working:
    """A worker on a thread while the block runs; `until(done)` polls `done()` with a deadline."""

    def __init__(self, app: App) -> None:
        self._worker = Worker(app, WorkerOptions(queues=["default"], concurrency=4, sleep=1))
        self._thread = threading.Thread(target=self._worker.run, kwargs={"install_signals": False}, daemon=True)

    def __enter__(self) -> Working:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._worker.stop("the sample is done")
        self._thread.join(30)

    def until(self, done: Callable[[], bool], timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True


def run(app: App, console: Console) -> dict[str, Any]:
    """Place the orders, check them out, settle them; the facts, for the table and the tests."""
    shop.create_bucket()
    finished: list[JobEvent] = []

    def settled(event: JobEvent) -> None:
        if event.kind in ("processed", "failed"):
            finished.append(event)

    app.events.listen(settled)

    console.print(
        f"[bold]2.[/] checking out {len(ORDERS)} orders (one chain each: charge -> invoice -> confirm, catch: refund)"
    )
    for order_id, (amount, trouble, _) in ORDERS.items():
        shop.place_order(order_id, amount, trouble)
        checkout(order_id)
    with Working(app) as worker:
        # 1001-1003: 3 links each; 1004: charge, the failed invoice, the refund; 1005: the failed charge, the refund.
        done = worker.until(lambda: len(finished) >= 14)
        console.print("[bold]3.[/] order 1001 is checked out a second time (a double submit, a retried request)")
        checkout(1001)
        done = done and worker.until(lambda: len(finished) >= 17)

    orders = {}
    for order_id, (amount, trouble, expected) in ORDERS.items():
        record = shop.order(order_id)
        orders[str(order_id)] = {
            "amount_cents": amount,
            "trouble": trouble,
            "status": record.get("status", "?"),
            "expected": expected,
            "payments": shop.payments(order_id),
            "refunds": shop.refunds(order_id),
            "provider_calls": shop.provider_calls(order_id),
            "log": record["log"],
        }
    outcomes = {kind: sum(1 for e in finished if e.kind == kind) for kind in ("processed", "failed")}
    return {"settled": done, "orders": orders, "jobs": outcomes}


def ok(facts: dict[str, Any]) -> bool:
    return bool(facts["settled"]) and all(
        o["status"] == o["expected"] and o["payments"] == 1 and o["refunds"] == (o["expected"] == "refunded")
        for o in facts["orders"].values()
    )


def show(facts: dict[str, Any], console: Console) -> None:
    table = Table(title="Orders")
    for column in ("order", "what happens", "status", "payments", "refunds", "provider calls", "log"):
        table.add_column(column, overflow="fold")
    for order_id, o in facts["orders"].items():
        colour = "green" if o["status"] == o["expected"] else "red"
        table.add_row(
            order_id,
            WHAT[o["trouble"]],
            f"[{colour}]{o['status']}[/]",
            str(o["payments"]),
            str(o["refunds"]),
            str(o["provider_calls"]),
            "\n".join(o["log"]),
        )
    console.print(table)
    jobs = facts["jobs"]
    console.print(
        f"{jobs['processed']} jobs processed (3 of them the second checkout of 1001, acknowledged without running), "
        f"{jobs['failed']} failed for good (the invoice of 1004, the charge of 1005: in the DLQ, "
        "`sqsjobs failed list`). "
        "Every order was charged exactly once."
    )


def main(argv: list[str] | None = None) -> int:
    return demo_main("python -m samples.orders", __doc__, "orders-", run, show, ok, argv)


if __name__ == "__main__":
    sys.exit(main())
