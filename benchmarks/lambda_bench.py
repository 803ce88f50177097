"""The Lambda handler: CPU per record, and cold start (import + first 10-record event).

    python -m benchmarks.lambda_bench events --queue URL --events 50 --out events.json
    python -m benchmarks.lambda_bench per-record --events events.json --rounds 5 --out result.json
    python -m benchmarks.lambda_bench cold ours|floor|pydantic|none --events events.json
    python -m benchmarks.lambda_bench repeat ours|required|checked|floor --events events.json --rounds 2

Every step runs in a child of benchmarks.run, with the environment a function would have
(`SQSJOBS_APP=benchmarks.jobs`, the queue prefix, AWS credentials and the counting moto server
for any call the handler makes).

- events: receives the jobs benchmarks.run dispatched (real envelopes, real receipt handles)
  and wraps them, 10 a time, as an SQS event source mapping would.
- per-record: `lambda_handlers.sqs.handler` and the floor — Powertools' `BatchProcessor` with
  `process_partial_response` and a record handler that `json.loads` the body and calls a
  no-op — take turns on the same events, `--rounds` times, with two more floors: the checked one
  (`checked_floor_handler`) and the required one (`required_floor_handler`). The lowest CPU
  (`process_time`) of each side counts. Every record is a no-op job that succeeds, so all answer
  "no failures" and the mapping would delete them all.
- cold: a fresh interpreter imports the handler and handles the first event, timed from the
  first import to the response: ours is `import lambda_handlers.sqs` + `handler(event)`, the
  floor `import boto3` + Powertools' batch utility + the same floor handler. `none` reads the event
  and stops: the baseline benchmarks.instructions subtracts from a cold start's count.
- repeat: one side's handler over the events `--rounds` times, untimed, for benchmarks.instructions
  to count (the difference of two runs, divided by the records between them).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from typing import Any

RECORD: dict[str, Any] = {
    "messageId": "",
    "receiptHandle": "",
    "body": "",
    "attributes": {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "0",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "0",
    },
    "messageAttributes": {},
    "md5OfBody": "",
    "eventSource": "aws:sqs",
    "eventSourceARN": "",
    "awsRegion": "us-east-1",
}


class Context:
    """The one part of the Lambda context the handlers read: a function with 5 minutes."""

    function_name = "bench"
    aws_request_id = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


def build_events(url: str, count: int) -> list[dict[str, Any]]:
    """Up to `count` events of 10 records received from `url` (hidden for an hour meanwhile)."""
    import boto3

    sqs = boto3.client("sqs")
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    empty = 0
    while len(events) < count and empty < 3:
        messages = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            VisibilityTimeout=3600,
            MessageSystemAttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        empty = 0 if messages else empty + 1
        for message in messages:
            record = copy.deepcopy(RECORD)
            record.update(
                messageId=message["MessageId"],
                receiptHandle=message["ReceiptHandle"],
                body=message["Body"],
                md5OfBody=message["MD5OfBody"],
                eventSourceARN=arn,
            )
            for key, value in message.get("Attributes", {}).items():
                if key in record["attributes"]:
                    record["attributes"][key] = value
            record["messageAttributes"] = {
                k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"]}
                for k, v in message.get("MessageAttributes", {}).items()
            }
            records.append(record)
            if len(records) == 10:
                events.append({"Records": records})
                records = []
    return events


def floor_handler() -> Any:
    """A hand-written Powertools SQS handler: BatchProcessor, json.loads, a no-op."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    processor = BatchProcessor(event_type=EventType.SQS)

    def noop(n: int) -> None:
        return None

    def record_handler(record: Any) -> None:
        noop(**json.loads(record.body)["payload"])

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return dict(
            process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        )

    return handler


def checked_floor_handler() -> Any:
    """The floor plus what sqsjobs' standards require of any handler per record: the body read as an
    untrusted envelope and the payload validated by its job class (benchmarks.consumers' `checked`)."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from sqsjobs.envelope import decode
    from sqsjobs.payload_fields import load

    from .jobs import Noop

    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: Any) -> None:
        load(Noop, decode(record.body).payload).handle()

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return dict(
            process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        )

    return handler


def required_floor_handler(app: Any) -> Any:
    """The checked floor plus what the success path of a plain job on a standard queue needs per record,
    written straight in one record handler, without the runner's structure (no delivery, hook points,
    decision or settling):

    - the deadline guard: the time left checked against the longest timeout of any job, and only when it is
      shorter, against the job's own (as `lambda_handlers.batch` does);
    - the message attributes read, and a long delay's not-before time checked (it lives there);
    - whether the record is anything but that (a FIFO queue, signing on, a sealed payload, `available_at`,
      `retry_until`, a workflow, a unique or idempotent job, envelope keys of later layouts such as a
      schedule's, the run table of SQSJOBS_JOB_LOG): such a record is not run here;
    - the payload's unknown keys said (a newer producer), the attempt counted from the receive count, the
      tries checked, and the context a job reads (`job_id`, `attempts`, its wait);
    - `handle()` through the job's middleware, inside its span (sqsjobs.tracing), and whether the job
      released or failed itself;
    - the `processed` event to `app`'s listeners: the job log lines and the dashboard's per-minute
      counters, both on by default.

    Each in its cheapest form; the Lambda context is kept here, not given to Powertools (which would inspect
    the record handler's signature every invocation), as `lambda_handlers.sqs` does. What that handler costs
    above this is one runner for every way in."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

    from sqsjobs import Job, policy
    from sqsjobs.envelope import decode
    from sqsjobs.events import JobEvent
    from sqsjobs.job_class import JobContext, set_context
    from sqsjobs.payload_fields import load, warn_unknown
    from sqsjobs.runner.entering import run_handle
    from sqsjobs.timing import parse_iso_or

    processor = BatchProcessor(event_type=EventType.SQS)
    registry, events, clock, settings = app.registry, app.events, app.clock, app.settings
    runnable = registry.runnable()
    fits_any = max(policy.timeout(cls.timeout, None, settings.timeout) for cls in runnable)
    margin = settings.lambda_deadline_margin
    fits_any += margin
    queues: dict[str, str] = {}
    invocation: list[Any] = [None]
    set_up_otherwise = app.signing_key is not None or settings.job_log  # never a plain job's success path

    def record_handler(record: Any) -> None:
        lambda_context = invocation[0]
        left = lambda_context.get_remaining_time_in_millis() / 1000 if lambda_context is not None else math.inf
        raw = record.raw_event
        theirs = raw.get("messageAttributes")
        attributes = {k: (v or {}).get("stringValue") or "" for k, v in theirs.items()} if theirs else {}
        now = clock()
        if policy.not_before(attributes, now) > 0:
            raise RuntimeError("not due yet")
        envelope = decode(raw["body"])
        cls = registry.get(envelope.job)
        if left < fits_any and policy.timeout(cls.timeout, None, settings.timeout) + margin > left:
            raise RuntimeError("no time left for this job")
        arn = raw["eventSourceARN"]
        if (
            arn.endswith(".fifo")
            or set_up_otherwise
            or envelope.encrypted is not None
            or envelope.available_at is not None
            or envelope.retry_until is not None
            or envelope.chain
            or envelope.batch_id
            or envelope.unique_key
            or envelope.extra
            or cls.idempotency_key is not Job.idempotency_key
        ):
            raise RuntimeError("not a plain job: the runner's business")
        job = load(cls, envelope.payload)
        warn_unknown(cls, cls.job_name, envelope.payload, clock)
        queue = queues.get(arn) or queues.setdefault(arn, settings.logical_queue_name(arn.rsplit(":", 1)[-1]))
        attempts = policy.attempt(int(raw["attributes"]["ApproximateReceiveCount"]), attributes)
        if attempts > policy.tries(cls.tries, settings.tries):
            raise RuntimeError("tries exhausted")
        context = JobContext(envelope.id, attempts, queue, envelope, app=app)
        set_context(job, context)
        context.wait_s = max(0.0, now - parse_iso_or(envelope.dispatched_at, now))
        started = time.perf_counter()
        run_handle(job, None, True, context)
        if context.released or context.fail_reason is not None:
            raise RuntimeError("the job released or failed itself: the runner's business")
        event = JobEvent(
            "processed",
            envelope.id,
            cls.job_name,
            queue,
            attempts,
            dispatched_at=envelope.dispatched_at,
            wait_s=context.wait_s,
            runtime_s=time.perf_counter() - started,
        )
        events.emit(event)

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        invocation[0] = context
        try:
            return dict(process_partial_response(event, record_handler, processor, None))
        finally:
            invocation[0] = None

    return handler


def per_record(events: list[dict[str, Any]], rounds: int) -> dict[str, Any]:
    from lambda_handlers.sqs import handler as ours

    floor = floor_handler()
    checked = checked_floor_handler()
    context = Context()
    # One event each first: the App, the registry and the logging are built once per container.
    for handler in (ours, floor, checked):
        _check(handler(events[0], context))
    required = required_floor_handler(ours.app)  # the same App: the same listeners hear its events
    _check(required(events[0], context))
    records = sum(len(e["Records"]) for e in events)
    cpu: dict[str, list[float]] = {"ours": [], "floor": [], "checked": [], "required": []}
    for index in range(rounds):
        sides = [("ours", ours), ("floor", floor), ("checked", checked), ("required", required)]
        for name, handler in sides if index % 2 == 0 else reversed(sides):
            start = time.process_time()
            for event in events:
                _check(handler(event, context))
            cpu[name].append(time.process_time() - start)
    return {
        "records": records,
        "ours_cpu_s": min(cpu["ours"]),
        "floor_cpu_s": min(cpu["floor"]),
        "checked_cpu_s": min(cpu["checked"]),
        "required_cpu_s": min(cpu["required"]),
        "ours_runs": cpu["ours"],
        "floor_runs": cpu["floor"],
    }


def _pydantic_floor_handler() -> Any:
    """The cold-start floor of any handler that validates its records with pydantic (as sqsjobs'
    standards require): the floor's imports plus pydantic and one model, built and used."""
    from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
    from pydantic import BaseModel

    class Payload(BaseModel):
        n: int

    processor = BatchProcessor(event_type=EventType.SQS)

    def record_handler(record: Any) -> None:
        Payload.model_validate(json.loads(record.body)["payload"])

    def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
        return dict(
            process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
        )

    return handler


def _check(response: dict[str, Any]) -> None:
    if response.get("batchItemFailures"):
        raise SystemExit(f"the handler reported failures: {response['batchItemFailures'][:3]}")


def cold(side: str, events_path: str) -> None:
    """Runs as the first thing in a fresh interpreter: import + first event, then prints the times."""
    with open(events_path) as f:
        event = json.load(f)[0]
    context = Context()
    wall, cpu = time.perf_counter(), time.process_time()
    warmed = None
    if side == "ours":
        import lambda_handlers.sqs

        # With AWS_LAMBDA_FUNCTION_NAME set the import ran the init phase; one that failed only logs and
        # leaves the App for the first event, which would be measured as a cold start it is not.
        warmed = lambda_handlers.sqs.handler._app is not None
        response = lambda_handlers.sqs.handler(event, context)
    elif side == "pydantic":
        import boto3

        response = _pydantic_floor_handler()(event, context)
    elif side == "none":
        response = {"batchItemFailures": []}
    else:
        import boto3  # noqa: F401  (what any Powertools SQS function imports)

        response = floor_handler()(event, context)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    _check(response)
    with open("/proc/self/status") as status:
        hwm = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    print(json.dumps({"s": wall, "cpu_s": cpu, "rss_mb": hwm / 1024, "warmed": warmed}))
    # No interpreter shutdown: a function never pays one, and benchmarks.instructions counts the whole process.
    sys.stdout.flush()
    os._exit(0)


def repeat(side: str, events_path: str, rounds: int) -> None:
    """`side`'s handler over the events `rounds` times. Ours handles the first event beforehand on every
    side (the required floor is built on its App), so that all a count's two runs differ by is the rounds."""
    with open(events_path) as f:
        events = json.load(f)
    context = Context()
    from lambda_handlers.sqs import handler as ours

    _check(ours(events[0], context))
    if side == "ours":
        handler = ours
    elif side == "required":
        handler = required_floor_handler(ours.app)
    else:
        handler = checked_floor_handler() if side == "checked" else floor_handler()
    _check(handler(events[0], context))
    for _ in range(rounds):
        for event in events:
            _check(handler(event, context))


#: The sides each command takes.
SIDES = {"cold": ("ours", "floor", "pydantic", "none"), "repeat": ("ours", "required", "checked", "floor")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Lambda handler benchmarks (run by benchmarks.run).")
    parser.add_argument("command", choices=["events", "per-record", "cold", "repeat"])
    parser.add_argument("side", nargs="?", choices=sorted({side for sides in SIDES.values() for side in sides}))
    parser.add_argument("--queue", help="events: the queue URL to receive from")
    parser.add_argument("--events", help="events: how many to build; otherwise the events file")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.command in SIDES and args.side not in SIDES[args.command]:
        parser.error(f"{args.command} takes one of {', '.join(SIDES[args.command])}")
    if args.command == "events":
        events = build_events(args.queue, int(args.events))
        with open(args.out, "w") as f:
            json.dump(events, f)
    elif args.command == "per-record":
        with open(args.events) as f:
            events = json.load(f)
        result = per_record(events, args.rounds)
        with open(args.out, "w") as f:
            json.dump(result, f)
    elif args.command == "repeat":
        repeat(args.side, args.events, args.rounds)
    else:
        cold(args.side, args.events)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
