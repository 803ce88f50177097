"""Build crafted messages from recipes, drive one receive through a way in, and judge the outcome.

Both ways in are driven for exactly one receive:

- the poller: a real `Worker` receives one batch and runs and settles every held message through its
  own parts (`Worker.poll_once`: receiver, lanes, applier, the deleter's batched delete), without the
  long-poll sleeps that make `Worker.run` cost seconds per example;
- Lambda: the `SqsHandler` on a real-shaped event built from the same received messages, then
  what the event source mapping does (delete the records not in `batchItemFailures`).

A spy on the runner records the decision for every message (and any exception, which the
worker would swallow and the Lambda batch processor would turn into a batch item failure).
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hypothesis import reject
from hypothesis.control import currently_in_test_context

from lambda_handlers.sqs import SqsHandler
from sqsjobs import App, Job, aws, object_keys
from sqsjobs.connections.base import ReceivedMessage
from sqsjobs.decisions import Decision, Fail, Release
from sqsjobs.envelope import Envelope
from sqsjobs.provisioning import provision
from sqsjobs.runner import Run
from sqsjobs.timing import utc_iso
from sqsjobs.worker import Worker, WorkerOptions
from tests.fuzz.strategies import (
    REQUIRED,
    BigSig,
    Crafted,
    EnvelopeRecipe,
    PointerRecipe,
    Raw,
    Scenario,
    Surrogate,
    TextRecipe,
    xml_ok,
)
from tests.helpers import counts, dead_letters, dlq_url, queue_url
from tests.lambda_events import FakeContext, deliver, receive_event

FOREIGN_BUCKET = "fuzz-not-sqsjobs-bucket"
POINTER_CLASS = "software.amazon.payloadoffloading.PayloadS3Pointer"
LEGACY_POINTER_CLASS = "com.amazon.sqs.javamessaging.MessageS3Pointer"
SQS_MAX_BYTES = 1_048_576
SIGNING_KEY = "fuzz-signing-key-fuzz-signing-key-32"  # >= 32 bytes, as signing requires


class Recorder(Job, name="fuzz.recorder"):
    """Records every run; tokens of real jobs are unique, so 'ran exactly once' is countable."""

    runs: ClassVar[list[str]] = []
    token: str

    def handle(self) -> None:
        Recorder.runs.append(self.token)


# -- building ------------------------------------------------------------------------------------
@dataclass
class Sent:
    """One crafted message as it went on the queue, and what it must come to."""

    message_id: str
    body: str
    note: str
    #: it cannot become a job: it must be in the DLQ (with a reason) after one receive
    expect_dlq: bool = False
    #: a real job (through an S3 pointer): it must run exactly once
    valid_token: str = ""
    #: an object in a bucket sqsjobs does not own that this message points at: it must survive
    foreign_key: str = ""


def _materialize(value: Any, raws: dict[str, str]) -> Any:
    if isinstance(value, Raw):
        placeholder = f"@@raw{len(raws)}@@"
        raws[placeholder] = value.text()
        return placeholder
    if isinstance(value, Surrogate | BigSig):
        return value.value()
    if isinstance(value, dict):
        return {k: _materialize(v, raws) for k, v in value.items()}
    if isinstance(value, list):
        return [_materialize(v, raws) for v in value]
    return value


def _required_ok(name: str, value: Any, raws: dict[str, str]) -> bool:
    if isinstance(value, str) and value in raws:
        return False
    if name == "v":
        return type(value) in (int, float, bool) and value == 1
    if name == "job":
        return value == "fuzz.recorder"
    if name == "payload":
        token = value.get("token") if isinstance(value, dict) else None
        return isinstance(token, str) and token not in raws
    return isinstance(value, str)


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def sign(data: dict[str, Any], key: str) -> str | None:
    """The library's own signature of `data` (None when the library cannot sign it)."""
    from sqsjobs import envelope

    try:
        return str(envelope._signature(data, key.encode()))
    except Exception:
        return None


def real_body(token: str, key: str | None) -> str:
    """A valid Recorder envelope, encoded by the library itself."""
    return Envelope(
        id=str(uuid.uuid4()),
        job="fuzz.recorder",
        payload={"token": token},
        queue="default",
        dispatched_at=utc_iso(time.time()),
    ).encode(key.encode() if key else None)


def build_envelope(recipe: EnvelopeRecipe, key: str | None) -> tuple[str, bool]:
    """(body, cannot-become-a-job) for a Recorder envelope with the recipe's mutations."""
    data: dict[str, Any] = {
        "v": 1,
        "id": str(uuid.uuid4()),
        "job": "fuzz.recorder",
        "payload": {"token": f"maybe-{uuid.uuid4()}"},
        "queue": "default",
        "dispatched_at": utc_iso(time.time()),
    }
    raws: dict[str, str] = {}
    for op, name, value in recipe.mutations:
        if op == "drop":
            data.pop(name, None)
        elif op == "raw":
            data[name] = _materialize(value, raws)
        else:
            data[name] = _materialize(value, raws)
    bad = any(name not in data or not _required_ok(name, data[name], raws) for name in REQUIRED)
    signed = False
    if key is not None and recipe.signed and not raws and "sig" not in {m[1] for m in recipe.mutations}:
        data.pop("sig", None)
        sig = sign(data, key)
        if sig is not None:
            data["sig"] = sig
            signed = True
    if key is not None and not signed:
        bad = True  # unsigned, or signed by someone without the key
    ascii_only = recipe.ascii_only or _has_surrogate(data)
    body = json.dumps(data, ensure_ascii=ascii_only)
    if not xml_ok(body):
        body = json.dumps(data, ensure_ascii=True)
    for placeholder, text in raws.items():
        body = body.replace(json.dumps(placeholder), text)
    return body, bad


def build_text(recipe: TextRecipe, key: str | None) -> tuple[str, bool]:
    body = recipe.raw.text() if recipe.raw is not None else recipe.text
    try:
        data = json.loads(body)
    except Exception:
        return body, True
    could_be_a_job = isinstance(data, dict) and all(name in data for name in REQUIRED)
    return body, not could_be_a_job


def build_pointer(recipe: PointerRecipe, key: str | None, own_bucket: str) -> tuple[str, str, str, bool, str]:
    """(body, token, real size, cannot-become-a-job, foreign key); the object it points at is put."""
    s3 = aws.client("s3")
    token = ""
    bucket, object_key = own_bucket, f"sqsjobs/fuzz-{uuid.uuid4()}"
    content: bytes | None = None
    if recipe.target == "own-valid":
        token = f"pointed-{uuid.uuid4()}"
        content = real_body(token, key).encode()
        # Where sqsjobs itself would have put this job's body: a signed body is only believed from there.
        object_key = object_keys.new_key("sqsjobs/", json.loads(content)["id"])
    elif recipe.target == "own-garbage":
        content = b"this is not an envelope"
    elif recipe.target == "own-binary":
        content = b"\xff\xfe\x00\x80 not utf-8"
    elif recipe.target == "foreign-valid":
        bucket, object_key = FOREIGN_BUCKET, f"theirs/{uuid.uuid4()}"
        content = real_body(f"foreign-{uuid.uuid4()}", key).encode()
    elif recipe.target == "anywhere":
        bucket, object_key = recipe.bucket, recipe.key
    if content is not None:
        s3.put_object(Bucket=bucket, Key=object_key, Body=content)
    location: dict[str, Any] = {"s3BucketName": bucket, "s3Key": object_key}
    shapes: dict[str, Any] = {
        "ok": [POINTER_CLASS, location],
        "legacy-class": [LEGACY_POINTER_CLASS, location],
        "wrong-class": ["java.lang.Runtime", location],
        "not-a-list": location,
        "short": [POINTER_CLASS],
        "key-not-str": [POINTER_CLASS, {"s3BucketName": bucket, "s3Key": 5}],
        "bucket-missing": [POINTER_CLASS, {"s3Key": object_key}],
    }
    body = json.dumps(shapes[recipe.shape])
    points_at_a_job = recipe.shape in ("ok", "legacy-class") and recipe.target in ("own-valid", "foreign-valid")
    size = str(len(content)) if content is not None else "1000"
    return body, token, size, not points_at_a_job, object_key if bucket == FOREIGN_BUCKET else ""


@dataclass
class Example:
    """One example's world: its app (fresh queues) and what was sent."""

    app: App
    crafted: list[Sent] = field(default_factory=list)
    valid_tokens: list[str] = field(default_factory=list)
    total: int = 0


def setup(scenario: Scenario) -> Example:
    prefix = f"fz{uuid.uuid4().hex[:10]}-"
    key = SIGNING_KEY if scenario.signing else None
    app = App(connection="sqs", queue_prefix=prefix, queues=["default"], visibility_timeout=30, signing_key=key)
    provision(app, ["default"], table=False, bucket=False)
    example = Example(app)
    sqs = aws.client("sqs")
    url = queue_url(app, "default")
    for crafted in scenario.poison:
        example.crafted.append(_send(sqs, url, crafted, key, app.settings.bucket))
    with app.activate():
        for i in range(scenario.valid):
            token = f"valid-{i}-{uuid.uuid4()}"
            Recorder(token=token).dispatch()
            example.valid_tokens.append(token)
    example.valid_tokens.extend(s.valid_token for s in example.crafted if s.valid_token)
    example.total = len(scenario.poison) + scenario.valid
    return example


def _send(sqs: Any, url: str, crafted: Crafted, key: str | None, own_bucket: str) -> Sent:
    recipe = crafted.recipe
    attributes = {name: {"DataType": t, "StringValue": v} for name, (t, v) in crafted.attributes.items()}
    token = foreign = ""
    if isinstance(recipe, EnvelopeRecipe):
        body, expect = build_envelope(recipe, key)
    elif isinstance(recipe, TextRecipe):
        body, expect = build_text(recipe, key)
    else:
        body, token, size, expect, foreign = build_pointer(recipe, key, own_bucket)
        value = {"DataType": "Number", "StringValue": size}
        if recipe.size_value is not None:
            value = {"DataType": "String", "StringValue": recipe.size_value}
        attributes[recipe.size_attribute] = value
        # A real job through a pointer only when every size attribute it carries is the real size.
        sizes = [a for n, a in attributes.items() if n in ("ExtendedPayloadSize", "SQSLargePayloadSize")]
        if not token or any(a["StringValue"] != size for a in sizes) or expect:
            token = ""
    size_bytes = len(body.encode("utf-8", "surrogatepass")) + sum(
        len(n.encode()) + len(a["StringValue"].encode()) + len(a["DataType"]) for n, a in attributes.items()
    )
    if not (size_bytes <= SQS_MAX_BYTES and xml_ok(body) and body):
        # SQS would refuse it, so no attacker can send it: not an example at all.
        if currently_in_test_context():
            reject()
        raise ValueError(f"a fixed scenario SQS would refuse: {_note(crafted, body)}")
    params: dict[str, Any] = {"QueueUrl": url, "MessageBody": body}
    if attributes:
        params["MessageAttributes"] = attributes
    message_id = sqs.send_message(**params)["MessageId"]
    return Sent(message_id, body, _note(crafted, body), expect_dlq=expect, valid_token=token, foreign_key=foreign)


def _note(crafted: Crafted, body: str) -> str:
    shown = body if len(body) <= 160 else body[:120] + f"...<{len(body)} chars>"
    attrs = {n: (v if len(v) <= 40 else v[:20] + "...") for n, (_, v) in crafted.attributes.items()}
    return f"{type(crafted.recipe).__name__} body={shown!r} attributes={attrs}"


def teardown(example: Example) -> None:
    """Delete the example's queues so moto stays small over thousands of examples."""
    sqs = aws.client("sqs")
    for url in (queue_url(example.app, "default"), dlq_url(example.app, "default")):
        sqs.delete_queue(QueueUrl=url)


# -- driving -------------------------------------------------------------------------------------
@dataclass
class Outcome:
    decisions: dict[str, Decision] = field(default_factory=dict)
    #: each message's body as it was on the queue (an S3 pointer stays a pointer)
    bodies: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    #: Lambda only: the records reported in batchItemFailures
    item_failures: set[str] | None = None


def _short(exc: BaseException) -> str:
    text = repr(exc)
    return text if len(text) < 300 else text[:300] + "..."


def spy_on_runner(app: App, outcome: Outcome) -> None:
    """Record every decision and exception of the core, whichever entry the way in uses:
    `process` (threads, Lambda) or `begin` + `finish` (the asyncio worker)."""
    runner = app.runner
    process, begin, finish = runner.process, runner.begin, runner.finish

    def seen(message: ReceivedMessage) -> None:
        outcome.bodies[message.message_id] = message.pointer.body if message.pointer else message.body

    def failed(what: str, exc: BaseException, message: ReceivedMessage) -> None:
        outcome.errors.append(f"Runner.{what} raised {_short(exc)} for message {message.message_id}")

    def spied_process(message: ReceivedMessage, via: Any = None, guard: Any = None, call: Any = None) -> Decision:
        seen(message)
        try:
            decision = process(message, via, guard, call)
        except BaseException as exc:
            failed("process", exc, message)
            raise
        outcome.decisions[message.message_id] = decision
        return decision

    def spied_begin(message: ReceivedMessage, via: Any = None) -> Any:
        seen(message)
        try:
            step = begin(message, via)
        except BaseException as exc:
            failed("begin", exc, message)
            raise
        if not isinstance(step, Run):
            outcome.decisions[message.message_id] = step
        return step

    def spied_finish(run: Run, error: Exception | None, runtime: float) -> Decision:
        try:
            decision = finish(run, error, runtime)
        except BaseException as exc:
            failed("finish", exc, run.message)
            raise
        outcome.decisions[run.message.message_id] = decision
        return decision

    runner.process = spied_process  # type: ignore[method-assign]
    runner.begin = spied_begin  # type: ignore[method-assign]
    runner.finish = spied_finish  # type: ignore[method-assign]


def poll_once(example: Example) -> Outcome:
    """One receive of up to 10 messages by a real Worker, every message run and settled by its job loop."""
    app = example.app
    outcome = Outcome()
    spy_on_runner(app, outcome)
    worker = Worker(app, WorkerOptions(queues=["default"], sleep=1, concurrency=10, heartbeat=False))
    try:
        worker.poll_once()  # one receive; each message run and settled; deletes flushed
    except Exception as exc:
        outcome.errors.append(f"the worker's receive raised {_short(exc)} (the whole batch is undecided)")
        return outcome
    return outcome


def worker_run(example: Example, event_loop: bool = False) -> Outcome:
    """The real `Worker.run` loop (threads or asyncio, heartbeat and deleter threads, long polls) until
    every message is settled."""
    app = example.app
    outcome = Outcome()
    spy_on_runner(app, outcome)
    options = WorkerOptions(
        queues=["default"],
        sleep=1,
        concurrency=10,
        max_jobs=example.total,
        max_time=15,
        delete_flush_s=0.05,
        event_loop=event_loop,
    )
    code = Worker(app, options).run(install_signals=False)
    if code != 0:
        outcome.errors.append(f"the worker exited {code}")
    return outcome


def lambda_once(example: Example) -> Outcome:
    """One Lambda invocation with up to 10 received messages, then the mapping's deletes."""
    app = example.app
    outcome = Outcome()
    spy_on_runner(app, outcome)
    handler = SqsHandler(app)
    to_message = handler.to_message

    def spied(record: Any) -> ReceivedMessage:
        try:
            return to_message(record)
        except BaseException as exc:
            outcome.errors.append(f"SqsHandler.to_message raised {_short(exc)} for record {record.message_id}")
            raise

    handler.to_message = spied  # type: ignore[method-assign]
    timeout_for = app.runner.timeout_for

    def spied_timeout(message: ReceivedMessage) -> float:
        try:
            return timeout_for(message)
        except BaseException as exc:
            outcome.errors.append(f"Runner.timeout_for raised {_short(exc)} for message {message.message_id}")
            raise

    app.runner.timeout_for = spied_timeout  # type: ignore[method-assign]
    event = receive_event(app, "default")
    try:
        response = deliver(handler, app, "default", event, FakeContext())
    except Exception as exc:
        outcome.errors.append(f"the Lambda handler raised {_short(exc)}")
        return outcome
    outcome.item_failures = {item["itemIdentifier"] for item in response["batchItemFailures"]}
    return outcome


# -- judging -------------------------------------------------------------------------------------
def judge(example: Example, outcome: Outcome) -> None:
    """Every property of one receive; one assertion listing every problem found."""
    app = example.app
    problems = list(outcome.errors)
    by_id = {s.message_id: s for s in example.crafted}
    decided = outcome.decisions
    for sent in example.crafted:
        if sent.message_id not in decided:
            problems.append(f"no decision after one receive for {sent.note}")
    if len(decided) != example.total and not outcome.errors:
        problems.append(f"{len(decided)} decisions for {example.total} messages")
    released = {mid for mid, d in decided.items() if isinstance(d, Release)}
    for mid in released:
        decision = decided[mid]
        assert isinstance(decision, Release)
        if not decision.reason:
            problems.append(f"released without a reason: {by_id[mid].note if mid in by_id else mid}")
    letters = dead_letters(app)
    for letter in letters:
        if not letter["attrs"].get("sqsjobs.reason"):
            problems.append(f"a DLQ copy without sqsjobs.reason: {letter['Body'][:120]!r} {letter['attrs']}")
    failed_bodies = Counter(outcome.bodies[mid] for mid, d in decided.items() if isinstance(d, Fail))
    dlq_bodies = Counter(letter["Body"] for letter in letters)
    if failed_bodies != dlq_bodies:
        missing = failed_bodies - dlq_bodies
        extra = dlq_bodies - failed_bodies
        problems.append(
            "the DLQ does not hold exactly the failed messages: "
            f"missing {_bodies(missing)}, unexpected {_bodies(extra)}"
        )
    for sent in example.crafted:
        decision = decided.get(sent.message_id)
        if sent.expect_dlq and decision is not None and not isinstance(decision, Fail):
            problems.append(f"cannot become a job but was decided {decision!r}: {sent.note}")
        if isinstance(decision, Release) and not sent.expect_dlq:
            # Nothing in this world is passing (no throttling, no concurrent run): a release of a
            # crafted message only brings it back, again and again, until redrive drops its reason.
            problems.append(f"a crafted message was released ({decision!r}), so it loops: {sent.note}")
        if sent.expect_dlq and isinstance(decision, Fail) and sent.body not in dlq_bodies:
            problems.append(f"failed but not in the DLQ: {sent.note}")
    runs = Counter(Recorder.runs)
    for token in example.valid_tokens:
        if runs[token] != 1:
            problems.append(f"a valid job next to the poison ran {runs[token]} times (token {token})")
    for token, n in runs.items():
        if n > 1:
            problems.append(f"a job ran {n} times in one receive (token {token})")
    left = counts(app, "default")
    on_queue = left["ApproximateNumberOfMessages"] + left["ApproximateNumberOfMessagesNotVisible"]
    if not outcome.errors and on_queue != len(released):
        problems.append(f"{on_queue} messages left on the queue, but {len(released)} were released: {left}")
    if outcome.item_failures is not None and outcome.item_failures != released:
        wrong = [(by_id[m].note if m in by_id else m, decided.get(m)) for m in outcome.item_failures ^ released]
        problems.append(f"batchItemFailures are not exactly the released records: {wrong}")
    s3 = aws.client("s3")
    for sent in example.crafted:
        if sent.foreign_key:
            try:
                s3.head_object(Bucket=FOREIGN_BUCKET, Key=sent.foreign_key)
            except Exception:
                problems.append(
                    f"a pointer made sqsjobs delete s3://{FOREIGN_BUCKET}/{sent.foreign_key}, an object in a "
                    f"bucket that is not its payload bucket ({decided.get(sent.message_id)!r}): {sent.note}"
                )
    assert not problems, "\n".join(dict.fromkeys(problems))


def _bodies(counter: Counter[str]) -> list[str]:
    return [b if len(b) < 80 else b[:60] + f"...<{len(b)} chars>" for b in counter.elements()]
