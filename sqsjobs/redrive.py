"""Redrive: move the messages of a queue's DLQ back to that queue in bulk, as SQS's dead-letter queue redrive does.

`start` asks SQS for a message move task (StartMessageMoveTask) from the DLQ to its queue; SQS moves
the messages itself, at `rate` per second if given, and `last_task` / `cancel` follow and stop it.
The destination is always named: sqsjobs' workers write DLQ copies with SendMessage, and SQS can only
send a message "back to its source" when its redrive policy moved it there (otherwise the task fails
with CouldNotDetermineMessageSource).

An endpoint without message move tasks (moto; `sqsjobs local`) raises `Unsupported`, and `move` does
the same work here: ReceiveMessage from the DLQ, SendMessageBatch to the queue (at most 10 entries and
1 MiB a call), then DeleteMessageBatch of exactly what SQS took. A message is always sent before it is
deleted, so a crash duplicates one at worst and never loses one. Like SQS's move, it moves each message
as it is: the body (an S3 pointer stays a pointer, its object untouched), every message attribute -- the
`sqsjobs.*` failure attributes included, which the runner ignores on a message it receives -- and, on
FIFO queues, the message group. The copy is a new message (new id, SentTimestamp and receive count),
as a redriven one is.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from . import aws
from .app import App
from .chunks import bounded
from .connections.sqs import SqsConnection
from .errors import ConfigurationError
from .provisioning import known_queues

#: What the operator is told when the endpoint has no message move tasks.
NO_MOVE_TASKS = (
    "this endpoint has no StartMessageMoveTask (moto / sqsjobs local): moving with sqsjobs' own batched move"
)
#: StartMessageMoveTask: "The maximum value for messages per second is 500."
MAX_RATE = 500
_OPERATIONS = ("StartMessageMoveTask", "ListMessageMoveTasks", "CancelMessageMoveTask")
#: Error codes of endpoints that do not know an operation (SQS-compatible servers, gateways).
_UNKNOWN_OPERATION = {"InvalidAction", "UnknownOperationException", "UnknownOperation", "NotImplemented"}
#: SendMessageBatch: at most 10 entries and 1 MiB (bodies plus attribute names, types and values).
_BATCH_ENTRIES = 10
_BATCH_BYTES = 1_048_576
#: How long `move` hides what it received: one batch is sent and deleted well within it.
_HIDE_S = 60
#: Receives in a row that bring nothing new before `move` gives up on a DLQ that still counts messages.
_MAX_IDLE_RECEIVES = 10


class Unsupported(Exception):
    """The endpoint has no message move tasks (moto, `sqsjobs local`): `move` does the work instead."""


@dataclass(frozen=True, slots=True)
class Redrivable:
    """A queue of the app, its DLQ, and how many messages the DLQ holds (ApproximateNumberOfMessages)."""

    queue: str
    queue_url: str
    queue_arn: str
    dlq_url: str
    dlq_arn: str
    fifo: bool
    depth: int


@dataclass(slots=True)
class MoveResult:
    """What `move` did with one DLQ."""

    moved: int = 0
    #: Sent to the queue, but their DLQ copy could not be deleted: they are on both (a duplicate, never a loss).
    doubled: int = 0
    #: DLQ message id -> why SQS did not take it (it stays in the DLQ).
    refused: dict[str, str] = field(default_factory=dict)
    #: Why the move stopped before the DLQ was empty (empty: it was not stopped).
    stopped: str = ""


def redrivable(app: App, queues: list[str] | None = None) -> tuple[list[Redrivable], dict[str, str]]:
    """The named queues (default: every known queue that has a DLQ), and those that cannot be redriven, with why.

    A queue named in `queues` that does not exist or has no DLQ is a ConfigurationError. A DLQ that several
    queues share is refused: a move task sends all of its messages to one destination.
    """
    connection = app.connection
    if not isinstance(connection, SqsConnection):
        raise ConfigurationError("failed redrive needs the sqs connection (SQSJOBS_CONNECTION=sqs)")
    named = list(dict.fromkeys(queues or known_queues(app)))
    sharing: dict[str, list[str]] = {}
    for name in known_queues(app, named):
        try:
            info = connection.queue_info(name)
        except ConfigurationError:
            if queues and name in queues:
                raise
            continue
        if info.dlq_url:
            sharing.setdefault(info.dlq_url, []).append(name)
        elif queues and name in queues:
            raise ConfigurationError(
                f"queue {name!r} has no dead-letter queue (RedrivePolicy), so nothing to redrive; "
                "`sqsjobs provision` attaches one"
            )
    sqs = aws.client("sqs")
    out: list[Redrivable] = []
    refused: dict[str, str] = {}
    for name in named:
        if not any(name in names for names in sharing.values()):
            continue
        info = connection.queue_info(name)
        assert info.dlq_url is not None
        others = [other for other in sharing[info.dlq_url] if other != name]
        # SQS knows every queue whose redrive policy names this DLQ, another app's too; the app only its own.
        known = {connection.queue_info(other).url.rstrip("/") for other in others} | {info.url.rstrip("/")}
        pages = sqs.get_paginator("list_dead_letter_source_queues").paginate(QueueUrl=info.dlq_url)
        for url in (url for page in pages for url in page.get("queueUrls", [])):
            if url.rstrip("/") not in known:
                others.append(url.rstrip("/").rsplit("/", 1)[-1])
        if others:
            refused[name] = (
                f"its DLQ is also the DLQ of {', '.join(others)}, and a redrive sends all of a DLQ's messages to "
                f"one queue; `sqsjobs failed retry --queue {name}` sends each job back to its own"
            )
            continue
        dlq = sqs.get_queue_attributes(
            QueueUrl=info.dlq_url, AttributeNames=["QueueArn", "ApproximateNumberOfMessages"]
        )
        source = sqs.get_queue_attributes(QueueUrl=info.url, AttributeNames=["QueueArn"])
        out.append(
            Redrivable(
                queue=name,
                queue_url=info.url,
                queue_arn=source["Attributes"]["QueueArn"],
                dlq_url=info.dlq_url,
                dlq_arn=dlq["Attributes"]["QueueArn"],
                fifo=info.fifo,
                depth=int(dlq["Attributes"].get("ApproximateNumberOfMessages", 0)),
            )
        )
    return out, refused


# -- message move tasks (SQS) -------------------------------------------------------------------------


def start(target: Redrivable, rate: int | None = None) -> str:
    """Start SQS's move of the DLQ's messages to the queue; the task handle. Unsupported without the API;
    SQS's refusals (a task already running, AccessDenied, ...) are its ClientError."""
    params: dict[str, Any] = {"SourceArn": target.dlq_arn, "DestinationArn": target.queue_arn}
    if rate is not None:
        params["MaxNumberOfMessagesPerSecond"] = rate
    return str(_call(lambda sqs: sqs.start_message_move_task(**params))["TaskHandle"])


def last_task(target: Redrivable) -> dict[str, Any] | None:
    """The DLQ's running or most recent move task as SQS lists it (ListMessageMoveTasksResultEntry), or None."""
    listed = _call(lambda sqs: sqs.list_message_move_tasks(SourceArn=target.dlq_arn, MaxResults=1))
    results = listed.get("Results") or []
    return dict(results[0]) if results else None


def cancel(handle: str) -> int | None:
    """Cancel a running move task; how many messages SQS says it had moved (the rest stay in the DLQ)."""
    moved = _call(lambda sqs: sqs.cancel_message_move_task(TaskHandle=handle)).get("ApproximateNumberOfMessagesMoved")
    return int(moved) if moved is not None else None


def _call(call: Callable[[Any], Any]) -> dict[str, Any]:
    """`call(sqs)`, named explicitly by each caller (so a reader, and the IAM tests, see every operation)."""
    sqs = aws.client("sqs")
    for name in _OPERATIONS:
        sqs.meta.events.register_first(
            f"needs-retry.sqs.{name}", _final_when_unknown, unique_id=f"sqsjobs-redrive-final-{name}"
        )
    try:
        return dict(call(sqs))
    except NotImplementedError as exc:  # in-process moto: "The ... action has not been implemented"
        raise Unsupported(str(exc)) from None
    except ClientError as exc:
        if unknown_operation(exc):
            raise Unsupported(str(exc)) from None
        raise


def unknown_operation(exc: ClientError) -> bool:
    """Whether the endpoint answered that it has no such operation, rather than refusing the call.

    moto's server answers an operation it lacks with an HTML page (HTTP 500), which botocore cannot read
    as an AWS error: its code is then the bare status. AWS's own errors always carry a named code.
    """
    code = str(exc.response.get("Error", {}).get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in _UNKNOWN_OPERATION or (code.isdigit() and status in (404, 405, 500, 501))


def _final_when_unknown(response: Any = None, **_: Any) -> None:
    """Keep botocore from retrying (4 times, with backoff) an answer that says the operation does not exist:
    an HTML 500 becomes the 501 it means. A 500 with an AWS error code is retried as before."""
    if not response:
        return
    http, parsed = response
    code = str((parsed or {}).get("Error", {}).get("Code", ""))
    if getattr(http, "status_code", None) == 500 and code.isdigit():
        http.status_code = 501


# -- sqsjobs' own move ----------------------------------------------------------------------------------


def move(
    target: Redrivable,
    *,
    rate: int | None = None,
    limit: int | None = None,
    on_moved: Callable[[int], None] = lambda n: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> MoveResult:
    """Move the DLQ's messages to the queue, as they are: send, then delete what SQS took.

    At most `limit` messages (default: the depth counted when the target was read, as SQS's task counts
    what it will move when it starts: a job failing meanwhile is not chased), at most `rate` a second.
    A message SQS refuses stays in the DLQ (`refused`); an error stops the move (`stopped`) with what
    was received and not sent made visible again.
    """
    sqs = aws.client("sqs")
    result = MoveResult()
    budget = target.depth if limit is None else limit
    pace = _Pace(rate, clock, sleep)
    seen: set[str] = set()
    idle = 0
    while result.moved + result.doubled + len(result.refused) < budget:
        left = budget - result.moved - result.doubled - len(result.refused)
        got = sqs.receive_message(
            QueueUrl=target.dlq_url,
            MaxNumberOfMessages=max(1, min(_BATCH_ENTRIES, left, rate or _BATCH_ENTRIES)),
            VisibilityTimeout=_HIDE_S,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId", "AWSTraceHeader"],
        ).get("Messages", [])
        fresh = [m for m in got if m["MessageId"] not in seen]
        _give_back(sqs, target.dlq_url, [m for m in got if m["MessageId"] in seen])
        if not fresh:
            idle += 1
            if not got and _visible(sqs, target.dlq_url) == 0:
                break
            if idle >= _MAX_IDLE_RECEIVES:
                result.stopped = (
                    "SQS kept returning nothing, or only messages it had refused, while it still counted messages "
                    "in the DLQ"
                )
                break
            continue
        idle = 0
        seen.update(m["MessageId"] for m in fresh)
        chunks = list(_batches([_entry(str(i), m, target.fifo) for i, m in enumerate(fresh)]))
        for n, chunk in enumerate(chunks):
            pace.wait(len(chunk))
            by_id = {entry["Id"]: fresh[int(entry["Id"])] for entry in chunk}
            if not _send(sqs, target, chunk, by_id, result, on_moved):
                _give_back(sqs, target.dlq_url, [fresh[int(e["Id"])] for later in chunks[n + 1 :] for e in later])
                return result
    return result


def _send(
    sqs: Any,
    target: Redrivable,
    chunk: list[dict[str, Any]],
    by_id: dict[str, dict[str, Any]],
    result: MoveResult,
    on_moved: Callable[[int], None],
) -> bool:
    """Send one batch, delete what SQS took; False when the move must stop (`result.stopped` says why)."""
    try:
        response = sqs.send_message_batch(QueueUrl=target.queue_url, Entries=chunk)
    except Exception as exc:
        result.stopped = f"SendMessageBatch to {target.queue} failed ({exc}); nothing of this batch was deleted"
        _give_back(sqs, target.dlq_url, list(by_id.values()))
        return False
    for failure in response.get("Failed", []):
        message = by_id[failure["Id"]]
        result.refused[message["MessageId"]] = f"{failure.get('Code', '')}: {failure.get('Message', '')}"
    _give_back(sqs, target.dlq_url, [by_id[f["Id"]] for f in response.get("Failed", [])])
    sent = [by_id[item["Id"]] for item in response.get("Successful", [])]
    if not sent:
        return True
    try:
        deleted = sqs.delete_message_batch(
            QueueUrl=target.dlq_url,
            Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(sent)],
        )
    except Exception as exc:
        result.doubled += len(sent)
        result.stopped = f"DeleteMessageBatch on the DLQ of {target.queue} failed ({exc}) after the send"
        return False
    kept = len(deleted.get("Failed", []))
    result.doubled += kept
    result.moved += len(sent) - kept
    on_moved(len(sent))
    if kept:
        result.stopped = f"{kept} DLQ message(s) of {target.queue} could not be deleted after they were sent"
        return False
    return True


def _entry(entry_id: str, message: dict[str, Any], fifo: bool) -> dict[str, Any]:
    """The SendMessageBatch entry that moves a received message as it is."""
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message["Body"]}
    attributes = {name: _attribute(value) for name, value in (message.get("MessageAttributes") or {}).items()}
    if attributes:
        entry["MessageAttributes"] = attributes
    system = message.get("Attributes") or {}
    if system.get("AWSTraceHeader"):
        entry["MessageSystemAttributes"] = {
            "AWSTraceHeader": {"DataType": "String", "StringValue": system["AWSTraceHeader"]}
        }
    if fifo:
        # Its group, as a redrive keeps it; the DLQ message's id deduplicates a move run again after a crash.
        entry["MessageGroupId"] = system.get("MessageGroupId") or "failed"
        entry["MessageDeduplicationId"] = message["MessageId"]
    return entry


def _attribute(value: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"DataType": value["DataType"]}
    if "BinaryValue" in value:
        out["BinaryValue"] = value["BinaryValue"]
    else:
        out["StringValue"] = value.get("StringValue", "")
    return out


def _size(entry: dict[str, Any]) -> int:
    size = len(entry["MessageBody"].encode("utf-8", "surrogatepass"))
    for name, value in (entry.get("MessageAttributes") or {}).items():
        raw = value.get("BinaryValue", value.get("StringValue", ""))
        size += len(name) + len(value["DataType"]) + (len(raw) if isinstance(raw, bytes) else len(raw.encode()))
    return size


def _batches(entries: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Consecutive entries in batches SQS takes: at most 10, and 1 MiB together (one message alone always fits)."""
    return bounded(entries, count=_BATCH_ENTRIES, size=_BATCH_BYTES, size_of=_size)


def _give_back(sqs: Any, dlq_url: str, messages: list[dict[str, Any]]) -> None:
    """Make received messages visible in the DLQ again (best effort: otherwise they reappear after the hide)."""
    for start_at in range(0, len(messages), _BATCH_ENTRIES):
        chunk = messages[start_at : start_at + _BATCH_ENTRIES]
        with contextlib.suppress(Exception):  # otherwise they turn visible again after _HIDE_S
            sqs.change_message_visibility_batch(
                QueueUrl=dlq_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                    for i, m in enumerate(chunk)
                ],
            )


def _visible(sqs: Any, dlq_url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
    return int(attrs["Attributes"].get("ApproximateNumberOfMessages", 0))


class _Pace:
    """At most `rate` messages a second (None: as fast as SQS takes them)."""

    def __init__(self, rate: int | None, clock: Callable[[], float], sleep: Callable[[float], None]) -> None:
        self.rate, self.clock, self.sleep = rate, clock, sleep
        self.next_at: float | None = None

    def wait(self, count: int) -> None:
        if not self.rate:
            return
        now = self.clock()
        if self.next_at is not None and now < self.next_at:
            self.sleep(self.next_at - now)
            now = self.next_at
        self.next_at = now + count / self.rate
