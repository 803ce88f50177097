"""`python -m samples.webhooks`: a signed-webhook endpoint on uvicorn, six deliveries, a worker, a replay.

Runs moto's server and the endpoint on 127.0.0.1 in this process, provisions a queue (with its DLQ),
the table and the buckets, posts deliveries over HTTP as a provider would (good, duplicate, forged, late
duplicate), runs a worker on a thread, replays one event from its stored payload, and prints what each
delivery got and how often the handler really ran. Exit status 0 when every event ran as it should.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import uvicorn
from rich.console import Console
from rich.table import Table

import sqsjobs
from sqsjobs import App, aws
from sqsjobs.local import LocalAws, free_port
from sqsjobs.logs import configure as configure_logs
from sqsjobs.provisioning import provision
from sqsjobs.worker import Worker, WorkerOptions

from .endpoint import create_app, sign
from .jobs import BUCKET, invoice, replay, runs, stored

SECRET = b"whsec_sample_only"


class Server:
    """uvicorn on a thread: Starlette is only the application; uvicorn is what listens and speaks HTTP."""

    def __init__(self, jobs: App, secret: bytes) -> None:
        self.port = free_port()
        config = uvicorn.Config(create_app(jobs, secret), host="127.0.0.1", port=self.port, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True, name="webhooks-uvicorn")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/webhooks/payments"

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def deliver(url: str, event: dict[str, Any], secret: bytes = SECRET) -> tuple[int, str, float]:
    """POST one delivery as the provider does; (status, answer, seconds)."""
    body = json.dumps(event).encode()
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "Webhook-Timestamp": str(stamp)}
    headers["Webhook-Signature"] = sign(secret, body, stamp)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            status, text = answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read().decode()
    return status, json.loads(text).get("status") or json.loads(text).get("error", ""), time.monotonic() - started


def paid(event_id: str, invoice_id: str, amount_cents: int) -> dict[str, Any]:
    return {"id": event_id, "type": "invoice.paid", "data": {"invoice": invoice_id, "amount_cents": amount_cents}}


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def run(app: App, console: Console, timeout: float = 60) -> dict[str, Any]:
    """Serve, deliver, work, replay; the facts, for the table and the tests."""
    aws.client("s3").create_bucket(Bucket=BUCKET)
    deliveries: list[dict[str, Any]] = []
    worker = Worker(app, WorkerOptions(queues=["default"], concurrency=2, sleep=1))
    thread = threading.Thread(target=worker.run, kwargs={"install_signals": False}, daemon=True)

    def post(what: str, event: dict[str, Any], secret: bytes = SECRET) -> None:
        status, answer, seconds = deliver(server.url, event, secret)
        deliveries.append(
            {"what": what, "event": event["id"], "status": status, "answer": answer, "ms": seconds * 1000}
        )

    with Server(app, SECRET) as server:
        console.print(f"[bold]2.[/] the endpoint listens on {server.url} (Starlette on uvicorn)")
        post("first delivery", paid("evt_1001", "INV-1", 4_200))
        post("the provider retries at once", paid("evt_1001", "INV-1", 4_200))
        post("another event", paid("evt_1002", "INV-2", 990))
        post("a forged signature", paid("evt_6666", "INV-1", 1), secret=b"guessed")
        thread.start()
        try:
            done = wait(lambda: runs("evt_1001") >= 1 and runs("evt_1002") >= 1, timeout)
            post("a late copy, after it ran", paid("evt_1001", "INV-1", 4_200))
            console.print("[bold]3.[/] replaying evt_1002 from its stored payload")
            replay(app, "evt_1002")
            done = done and wait(lambda: runs("evt_1002") >= 2, timeout)
            # The late copy is acknowledged without running; give it the time a run would take, then count.
            done = done and wait(lambda: not any(app.connection.counts("default").values()), timeout)
        finally:
            worker.stop("the sample is done")
            thread.join(30)
    events = {event_id: runs(event_id) for event_id in ("evt_1001", "evt_1002", "evt_6666")}
    return {
        "settled": done,
        "deliveries": deliveries,
        "runs": events,
        "stored": sorted(e for e in ("evt_1001", "evt_1002", "evt_6666") if stored(e) is not None),
        "invoices": {invoice_id: invoice(invoice_id) for invoice_id in ("INV-1", "INV-2")},
    }


def ok(facts: dict[str, Any]) -> bool:
    statuses = [d["status"] for d in facts["deliveries"]]
    return bool(
        facts["settled"]
        and facts["runs"] == {"evt_1001": 1, "evt_1002": 2, "evt_6666": 0}
        and statuses == [202, statuses[1], 202, 401, statuses[4]]
        and all(d["status"] in (200, 202) for i, d in enumerate(facts["deliveries"]) if i != 3)
        and all(d["ms"] < 500 for d in facts["deliveries"])
        and facts["invoices"]["INV-1"] is not None
        and facts["stored"] == ["evt_1001", "evt_1002"]
    )


def show(facts: dict[str, Any], console: Console) -> None:
    table = Table(title="Deliveries")
    for column in ("delivery", "event", "HTTP", "answer", "answered in"):
        table.add_column(column)
    for d in facts["deliveries"]:
        colour = "green" if d["status"] < 300 else "red"
        table.add_row(d["what"], d["event"], f"[{colour}]{d['status']}[/]", d["answer"], f"{d['ms']:.0f} ms")
    console.print(table)
    runs_line = ", ".join(f"{event}: {count}" for event, count in facts["runs"].items())
    console.print(
        f"Handler runs per event: {runs_line} (evt_1001 delivered three times, run once; evt_1002 once plus its "
        "replay; the forged one never stored or queued)."
    )


def demo(as_json: bool) -> int:
    console = Console(stderr=as_json, width=max(120, Console().width))
    configure_logs("text", "WARNING")
    with LocalAws() as local:
        local.export()
        console.print(f"[bold]1.[/] local AWS (moto) on {local.endpoint}")
        app = App(connection="sqs", queue_prefix="webhooks-", queues=["default"])
        provision(app, ["default"], report=lambda line: console.print(f"   {line}"))
        sqsjobs.use(app)
        facts = run(app, console)
    show(facts, console)
    if as_json:
        print(json.dumps(facts))
    return 0 if ok(facts) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m samples.webhooks", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print the facts as JSON on stdout (for tests)")
    commands = parser.add_subparsers(dest="command")
    serve = commands.add_parser("serve", help="serve the endpoint against the AWS your environment names")
    serve.add_argument("--port", type=int, default=8000)
    again = commands.add_parser("replay", help="run the job again on an event's stored payload")
    again.add_argument("event_id")
    args = parser.parse_args(argv)
    if args.command is None:
        return demo(args.json)
    # `serve` and `replay` use the usual configuration: AWS_* and SQSJOBS_* variables (`sqsjobs local` prints them).
    app = App()
    if args.command == "replay":
        print(f"replaying {args.event_id}: job {replay(app, args.event_id)}")
        return 0
    secret = os.environ.get("WEBHOOK_SECRET", "").encode()
    if not secret:
        parser.error("set WEBHOOK_SECRET to the secret your provider signs with")
    uvicorn.run(create_app(app, secret), host="127.0.0.1", port=args.port)
    return 0
