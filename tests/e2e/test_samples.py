"""The samples as a user runs them (`python -m samples.<name>`, which starts its own local AWS), each
checked by the facts it prints with `--json`; and the webhook endpoint through Starlette's TestClient
against the moto server. Every sample subprocess runs under the strict-AWS-rules layer."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from starlette.testclient import TestClient

from samples.csv_import.demo import BAD_ROWS, ROWS
from samples.webhooks import jobs as webhook_jobs
from samples.webhooks.endpoint import create_app, sign
from sqsjobs import aws
from sqsjobs.worker import Worker, WorkerOptions
from tests.e2e.conftest import E2E
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def run_sample(name: str, **env: str) -> dict[str, Any]:
    """`python -m samples.<name> --json` (after `sqsjobs.testing.boot`); its exit status must be 0."""
    code = f"import sqsjobs.testing.boot, runpy; runpy.run_module('samples.{name}', run_name='__main__')"
    environment = {**os.environ, "SQSJOBS_TEST_STRICT": "1", "COLUMNS": "160", **env}
    done = subprocess.run(
        [sys.executable, "-c", code, "--json"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, (
        f"exit {done.returncode}\nstdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-5000:]}"
    )
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert isinstance(facts, dict)
    return facts


def test_orders_charges_each_order_once_and_refunds_the_one_that_failed() -> None:
    facts = run_sample("orders")
    orders = facts["orders"]
    assert {o: v["status"] for o, v in orders.items()} == {
        "1001": "confirmed",
        "1002": "confirmed",
        "1003": "confirmed",
        "1004": "refunded",
        "1005": "refunded",  # every charge answer lost: the refund found the payment at the provider
    }
    assert {o: v["payments"] for o, v in orders.items()} == {"1001": 1, "1002": 1, "1003": 1, "1004": 1, "1005": 1}
    assert {o: v["refunds"] for o, v in orders.items()} == {"1001": 0, "1002": 0, "1003": 0, "1004": 1, "1005": 1}
    # The lost answer made the retry call the provider again (its key returned the same payment); the crash
    # after the charge did not (the step had recorded the payment).
    assert orders["1002"]["provider_calls"] == 2 and orders["1003"]["provider_calls"] == 1
    assert orders["1001"]["provider_calls"] == 1  # checked out twice, charged by one run
    assert orders["1005"]["provider_calls"] == 3 and orders["1005"]["log"][2].endswith(
        "giving up: the chain's catch refunds"
    )
    assert "confirmation mailed" not in orders["1004"]["log"]
    # 13 jobs of the five chains and the 3 of the second checkout; the invoice of 1004 and the charge of
    # 1005 failed for good.
    assert facts["jobs"] == {"processed": 15, "failed": 2}


def test_csv_import_reports_every_bad_row_and_imports_the_rest() -> None:
    facts = run_sample("csv_import", CSV_IMPORT_PACE="0.05")
    summary = facts["summary"]
    assert summary["rows_imported"] == ROWS - len(BAD_ROWS)
    assert sorted(error["line"] for error in summary["errors"]) == sorted(BAD_ROWS)
    assert summary["chunks"] == summary["chunks_ok"] == 20 and summary["chunks_failed"] == 0
    done = [reading[0] for reading in facts["progress"]]
    assert done == sorted(done) and facts["progress"][-1] == [20, 20]  # the bar only moved forward, to the end


def test_webhooks_run_each_event_once_and_a_replay_again() -> None:
    facts = run_sample("webhooks")
    assert facts["runs"] == {"evt_1001": 1, "evt_1002": 2, "evt_6666": 0}
    assert [d["status"] for d in facts["deliveries"]][2:4] == [202, 401]
    assert all(d["ms"] < 500 for d in facts["deliveries"]), facts["deliveries"]
    assert facts["stored"] == ["evt_1001", "evt_1002"]  # the forged delivery was never stored
    assert facts["invoices"]["INV-1"]["paid_by_event"] == "evt_1001"


def test_nightly_report_runs_its_tick_once_and_writes_the_report() -> None:
    facts = run_sample("nightly_report")
    assert facts["first_pass"] == ["dispatched"] and facts["second_pass"] == []
    assert facts["report"]["products"] == facts["expected"]
    assert sum(p["orders"] for p in facts["report"]["products"].values()) == 60  # not the day before's 25
    listed = facts["schedule_list"]
    assert "nightly-sales-report" in listed and "ok in" in listed


# -- the webhook endpoint, in process ------------------------------------------------------
SECRET = b"test-secret"


def post(client: TestClient, event: dict[str, Any], secret: bytes = SECRET, age: int = 0) -> Any:
    body = json.dumps(event).encode()
    stamp = int(time.time()) - age
    headers = {"Webhook-Timestamp": str(stamp), "Webhook-Signature": sign(secret, body, stamp)}
    return client.post("/webhooks/payments", content=body, headers=headers)


@pytest.fixture
def webhooks(e2e: E2E) -> E2E:
    e2e.setup(table=f"{e2e.prefix}table", bucket=f"{e2e.prefix}payloads")
    with contextlib.suppress(ClientError):  # one moto server per pytest process: the bucket may exist
        aws.client("s3").create_bucket(Bucket=webhook_jobs.BUCKET)
    return e2e


def test_the_endpoint_stores_and_queues_a_signed_event_once_and_refuses_forged_or_stale_ones(webhooks: E2E) -> None:
    event_id = f"evt_{uuid.uuid4().hex[:12]}"
    event = {"id": event_id, "type": "invoice.paid", "data": {"invoice": f"INV-{event_id}", "amount_cents": 100}}
    with TestClient(create_app(webhooks.app, SECRET)) as client:
        assert post(client, event, secret=b"wrong").status_code == 401
        assert post(client, event, age=600).status_code == 401  # signed, but 10 minutes old: a replayed capture
        assert webhook_jobs.stored(event_id) is None and webhooks.queue_depth() == 0

        first = post(client, event)
        assert (first.status_code, first.json()["status"]) == (202, "queued")
        assert webhook_jobs.runs(event_id) == 0, "the endpoint only queues; the worker runs it"
        assert json.loads(webhook_jobs.stored(event_id) or b"{}") == event

        again = post(client, event)  # the provider retries before the first has run: not queued again
        assert (again.status_code, again.json()["status"]) == (200, "duplicate")
        assert webhooks.queue_depth() == 1

    worker = Worker(webhooks.app, WorkerOptions(queues=["default"], sleep=1))
    wait_for(lambda: worker.poll_once(1) == 0 and webhook_jobs.runs(event_id) == 1, timeout=20, what="the event ran")
    webhook_jobs.replay(webhooks.app, event_id)
    wait_for(lambda: worker.poll_once(1) == 0 and webhook_jobs.runs(event_id) == 2, timeout=20, what="the replay ran")
    assert webhooks.dlq_depth() == 0
