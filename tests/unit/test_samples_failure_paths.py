"""The samples' failure paths, in process (moto, a memory app, `run_until_empty`): money lost to a lost
answer is refunded, a late report builds the night it was meant for, a retried fan-out starts one batch,
and the webhook endpoint refuses hostile input without a crash and remembers an event for as long as
its provider retries."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from samples.csv_import import files
from samples.csv_import import jobs as csv_jobs
from samples.csv_import.demo import BAD_ROWS, ROWS, make_csv
from samples.csv_import.jobs import ImportChunk, ImportCsv, SummariseImport
from samples.nightly_report import jobs as report_jobs
from samples.nightly_report.demo import record_sales
from samples.orders import jobs as order_jobs
from samples.orders import shop
from samples.webhooks import jobs as webhook_jobs
from samples.webhooks.endpoint import MAX_BODY, create_app, sign
from sqsjobs import App, aws
from sqsjobs.schedules import Schedules
from sqsjobs.scheduling import Scheduler
from sqsjobs.testing import ManualClock, memory_app, run_until_empty

#: 2026-03-10 12:00 UTC: a Tuesday, well away from a DST change in Europe/London.
NOON = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


@pytest.fixture
def app(moto: None) -> Iterator[App]:
    made = memory_app(clock=ManualClock(NOON))
    with made.activate():
        yield made


def clock_of(app: App) -> ManualClock:
    assert isinstance(app.clock, ManualClock)
    return app.clock


# -- orders ---------------------------------------------------------------------------------------
def test_a_charge_whose_every_answer_was_lost_is_found_and_refunded(app: App) -> None:
    shop.create_bucket()
    shop.place_order(2001, 1_000, "answer-always-lost")
    order_jobs.checkout(2001)
    drained = run_until_empty()
    drained.assert_failed(order_jobs.ChargeOrder)
    drained.assert_completed(order_jobs.RefundOrder, times=1)
    record = shop.order(2001)
    assert (shop.payments(2001), shop.refunds(2001), record["status"]) == (1, 1, "refunded")
    assert record["log"][:3] == [
        "no answer from the provider (attempt 1): to be retried",
        "no answer from the provider (attempt 2): to be retried",
        "no answer from the provider (attempt 3): giving up: the chain's catch refunds",
    ]


# -- nightly report -------------------------------------------------------------------------------
def test_a_tick_run_late_reports_the_night_it_was_meant_for(app: App) -> None:
    aws.client("s3").create_bucket(Bucket=report_jobs.BUCKET)
    item = app.schedules.get("nightly-sales-report")
    tick = item.cron.ticks_between(datetime.fromtimestamp(NOON - 86_400, UTC), datetime.fromtimestamp(NOON, UTC))[-1]
    meant = report_jobs.yesterday(tick.timestamp())  # 2026-03-09
    expected = record_sales(meant, 6, seed=1)
    clock_of(app).now = tick.timestamp() + 5
    only = Schedules()  # the sample's schedule alone, whatever else this process has declared
    only.add(item)
    assert [o.what for o in Scheduler(app, only, owner="test").run_due(now=clock_of(app).now)] == ["dispatched"]
    clock_of(app).advance(timedelta(days=2))  # a backlog: the worker gets to it two nights later
    run_until_empty().assert_completed(report_jobs.BuildSalesReport, times=1)
    written = report_jobs.report(meant)
    assert written is not None and written["products"] == expected
    assert report_jobs.report(report_jobs.yesterday(clock_of(app).now)) is None


def test_a_report_dispatched_by_hand_reports_the_day_before_its_dispatch_by_the_apps_clock(app: App) -> None:
    aws.client("s3").create_bucket(Bucket=report_jobs.BUCKET)
    report_jobs.BuildSalesReport().dispatch()
    clock_of(app).advance(timedelta(days=3))
    run_until_empty().assert_completed(report_jobs.BuildSalesReport, times=1)
    assert report_jobs.report(report_jobs.yesterday(NOON)) == {"day": "2026-03-09", "products": {}}


# -- csv import -----------------------------------------------------------------------------------
def test_a_parent_that_crashes_after_its_fan_out_starts_no_second_batch(app: App, monkeypatch: Any) -> None:
    monkeypatch.setattr(csv_jobs, "PACE_S", 0.0)
    files.create_bucket()
    files.put_text("uploads/customers.csv", make_csv())
    store = app.store
    put = store.put
    crashed: list[Any] = []

    def crash_once_after_the_fan_out(key: Any, attrs: dict[str, Any], ttl: float) -> None:
        if key[0] == "step" and key[1].endswith(":fan-out") and not crashed:
            crashed.append(key)  # the batch is out; its step record is not: the worker died here
            raise ConnectionError("the worker lost its connection before recording the fan-out")
        put(key, attrs, ttl)

    monkeypatch.setattr(store, "put", crash_once_after_the_fan_out)
    ImportCsv(key="uploads/customers.csv").dispatch()
    drained = run_until_empty()
    assert crashed and drained.by_job["csv-import.start"] == {"retried": 1, "completed": 1}
    drained.assert_completed(SummariseImport, times=1)
    summary = files.get_json(f"imports/{drained.jobs(SummariseImport)[0].import_id}/summary.json")
    assert (summary["chunks"], summary["chunks_ok"]) == (20, 20)  # one batch of 20, not two
    assert summary["rows_imported"] == ROWS - len(BAD_ROWS) and summary["rows_rejected"] == len(BAD_ROWS)
    assert drained.count("completed", ImportChunk) >= 20


# -- webhooks -------------------------------------------------------------------------------------
SECRET = b"test-secret"


@pytest.fixture
def client(app: App) -> Iterator[TestClient]:
    with contextlib.suppress(Exception):
        aws.client("s3").create_bucket(Bucket=webhook_jobs.BUCKET)
    with TestClient(create_app(app, SECRET)) as made:
        yield made


def headers(body: bytes, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    return {"Webhook-Timestamp": str(stamp), "Webhook-Signature": sign(SECRET, body, stamp)}


def event(event_id: str) -> bytes:
    return json.dumps(
        {"id": event_id, "type": "invoice.paid", "data": {"invoice": "INV-9", "amount_cents": 1}}
    ).encode()


def test_hostile_headers_are_refused_not_crashed_on(client: TestClient) -> None:
    body = event("evt_hostile")
    good = headers(body)
    non_ascii = [("webhook-timestamp", good["Webhook-Timestamp"].encode()), ("webhook-signature", "v1=é".encode())]
    assert client.post("/webhooks/payments", content=body, headers=non_ascii).status_code == 401
    huge = {**good, "Webhook-Timestamp": "9" * 400}
    assert client.post("/webhooks/payments", content=body, headers=huge).status_code == 401
    assert webhook_jobs.stored("evt_hostile") is None
    assert client.post("/webhooks/payments", content=body, headers=good).status_code == 202


def test_a_body_over_the_limit_is_refused_before_it_is_read_or_kept(client: TestClient) -> None:
    body = json.dumps({"id": "evt_big", "pad": "x" * MAX_BODY}).encode()
    declared = client.post("/webhooks/payments", content=body, headers=headers(body))
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while it streams in
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"x" * 1024

    streamed = client.post("/webhooks/payments", content=chunks(), headers=headers(b""))
    assert streamed.status_code == 413
    assert webhook_jobs.stored("evt_big") is None


def test_a_copy_sent_on_the_providers_third_day_of_retries_does_not_run_again(app: App, client: TestClient) -> None:
    event_id = f"evt_{uuid.uuid4().hex[:8]}"
    body = event(event_id)
    assert client.post("/webhooks/payments", content=body, headers=headers(body)).status_code == 202
    run_until_empty().assert_completed(webhook_jobs.ProcessPaymentEvent, times=1)
    clock_of(app).advance(timedelta(days=3))  # the unique lock is long gone; the idempotency key is not
    assert client.post("/webhooks/payments", content=body, headers=headers(body)).status_code == 202
    drained = run_until_empty()
    assert drained.count("skipped", webhook_jobs.ProcessPaymentEvent) == 1
    assert webhook_jobs.runs(event_id) == 1
