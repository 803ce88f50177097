"""How full each queue is, and whether that is too full: the numbers behind `sqsjobs monitor`.

Everything here reads queue *metadata* (GetQueueAttributes, CloudWatch), never a message: a receive
would hide the oldest messages from the workers and spend their receive counts, and nothing a
message says would be worth trusting for a depth anyway.

SQS keeps no "age of the oldest message" attribute; only CloudWatch has it, as the metric
`AWS/SQS ApproximateAgeOfOldestMessage` (1-minute datapoints, published while the queue is
active). Where no datapoint is found (moto, a local endpoint, an idle queue, no
`cloudwatch:GetMetricData` permission) the age is None -- "unknown" -- and never 0, because an
`--max-age` check that quietly read 0 would never fire.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .app import App
from .errors import ConfigurationError
from .events import QueueEvent

#: SQS's counts, all approximate (they settle about a minute after producers stop).
COUNTS = ("ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed")
AGE_METRIC = "AWS/SQS ApproximateAgeOfOldestMessage"
#: How far back a datapoint still counts: SQS publishes every minute and CloudWatch shows it a few
#: minutes late; an older one would describe a queue that may have been drained since.
AGE_WINDOW_S = 600
#: GetMetricData takes at most 500 queries per call.
_MAX_QUERIES = 500
_MISSING = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")


@dataclass(frozen=True, slots=True)
class Limits:
    """One threshold for every queue, and per-queue ones that win over it (None: not checked)."""

    every: int | None = None
    per_queue: Mapping[str, int] = field(default_factory=dict)

    def of(self, queue: str) -> int | None:
        return self.per_queue.get(queue, self.every)


def parse_limits(values: Iterable[str], option: str) -> Limits:
    """`["100"]`, `["default=100,high=10"]`, `["50", "high=10"]` -> Limits; ValueError says what is wrong.

    Option values are whole numbers: depths are counts and CloudWatch reports the age in seconds."""
    every: int | None = None
    per_queue: dict[str, int] = {}
    for value in values:
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, _, number = item.rpartition("=")
            if not number.strip().isdigit():
                raise ValueError(f"{option} takes N or QUEUE=N (a whole number >= 0), got {item!r}")
            if not name:
                if every is not None:
                    raise ValueError(f"{option} got two values for every queue ({every} and {number.strip()})")
                every = int(number)
            elif name.strip() in per_queue:
                raise ValueError(f"{option} got two values for queue {name.strip()!r}")
            else:
                per_queue[name.strip()] = int(number)
    return Limits(every, per_queue)


def unmonitored(limits: Limits, queues: Sequence[str]) -> list[str]:
    """Queues a per-queue threshold names that this run does not look at (a typo would never fire)."""
    return [name for name in limits.per_queue if name not in queues]


@dataclass(slots=True)
class QueueRow:
    """One queue at one moment. None means "not known": a missing queue, or no age datapoint."""

    queue: str
    sqs_name: str
    exists: bool = True
    #: Why the queue could not be read (it does not exist), with what to do.
    error: str = ""
    depth: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    age_s: float | None = None
    age_as_of: datetime | None = None
    dlq: str | None = None
    dlq_depth: int | None = None
    #: Why there is no DLQ depth (no redrive policy, or it names a queue that does not exist).
    dlq_note: str = ""
    max_depth: int | None = None
    max_age_s: int | None = None
    #: The thresholds crossed: "depth", "age".
    over: tuple[str, ...] = ()

    @property
    def busy(self) -> bool:
        return bool(self.over)

    def detail(self) -> dict[str, Any]:
        """The `queue_busy` event's detail (JSON-ready)."""
        return {"depth": self.depth, "max_depth": self.max_depth, "age_s": self.age_s, "max_age_s": self.max_age_s}

    def as_dict(self) -> dict[str, Any]:
        return {
            "queue": self.queue,
            "sqs_name": self.sqs_name,
            "exists": self.exists,
            "error": self.error or None,
            "depth": self.depth,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "age_s": self.age_s,
            "age_as_of": _iso(self.age_as_of) if self.age_as_of else None,
            "dlq": self.dlq,
            "dlq_depth": self.dlq_depth,
            "dlq_note": self.dlq_note or None,
            "max_depth": self.max_depth,
            "max_age_s": self.max_age_s,
            "busy": self.busy,
            "over": list(self.over),
        }


@dataclass(slots=True)
class Report:
    """Every monitored queue at one moment, and why ages are unknown when they are."""

    rows: list[QueueRow]
    checked_at: datetime
    age_note: str = ""

    @property
    def busy(self) -> list[str]:
        return [row.queue for row in self.rows if row.busy]

    @property
    def missing(self) -> list[str]:
        return [row.queue for row in self.rows if not row.exists]

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked_at": _iso(self.checked_at),
            "age_source": AGE_METRIC,
            "age_note": self.age_note or None,
            "queues": [row.as_dict() for row in self.rows],
            "busy": self.busy,
            "missing": self.missing,
        }


class Monitor:
    """Reads the queues' numbers, judges them against the thresholds and announces `queue_busy`.

    Kept across `--watch` refreshes, so a queue is announced when it *becomes* busy, not on every
    refresh while it stays busy (a listener that pages someone would page them every few seconds),
    and the CloudWatch age -- a 1-minute metric that costs money per query -- is read at most once
    per `age_every` seconds.

    Parameters:
        app: the App whose settings name the queues and whose event bus gets `queue_busy`.
        queues: logical queue names, in the order to show them.
        max_depth, max_age: thresholds on depth (visible messages) and on the age in seconds.
        age_every: seconds between CloudWatch reads (0: every check).
    """

    def __init__(
        self,
        app: App,
        queues: Sequence[str],
        max_depth: Limits | None = None,
        max_age: Limits | None = None,
        *,
        age_every: float = 0,
    ) -> None:
        if app.settings.connection != "sqs":
            raise ConfigurationError(
                f"monitor reads SQS queues; SQSJOBS_CONNECTION is {app.settings.connection!r}: set it to sqs"
            )
        self.app = app
        self.queues = list(queues)
        self.max_depth = max_depth or Limits()
        self.max_age = max_age or Limits()
        self.age_every = age_every
        self._sqs = aws.client("sqs")
        self._urls: dict[str, str] = {}
        self._dlq_urls: dict[str, str] = {}
        self._busy: set[str] = set()
        self._ages: dict[str, tuple[float, datetime]] = {}
        self._age_note = ""
        self._ages_read_at: float | None = None

    def check(self) -> Report:
        """Read every queue once, then emit `queue_busy` for each queue that has just become busy."""
        now = self.app.clock()
        rows = [self._read(queue) for queue in self.queues]
        self._refresh_ages(now, [row.sqs_name for row in rows if row.exists])
        for row in rows:
            if not row.exists:
                continue
            row.age_s, row.age_as_of = self._ages.get(row.sqs_name, (None, None))
            row.max_depth, row.max_age_s = self.max_depth.of(row.queue), self.max_age.of(row.queue)
            row.over = over(row)
        for row in rows:
            if row.busy and row.queue not in self._busy:
                self.app.events.emit(QueueEvent("queue_busy", row.queue, row.detail()))
        self._busy = {row.queue for row in rows if row.busy}
        return Report(rows, datetime.fromtimestamp(now, UTC), self._age_note)

    # -- SQS ---------------------------------------------------------------------------------

    def _read(self, queue: str) -> QueueRow:
        physical = self.app.settings.physical_queue_name(queue)
        row = QueueRow(queue, _queue_name(physical))
        try:
            url = self._url(queue, physical)
            attrs = self._attributes(url, [*COUNTS, "RedrivePolicy"])
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise
            self._urls.pop(queue, None)
            row.exists = False
            row.error = (
                f"queue {queue!r} (SQS name {row.sqs_name!r}) does not exist; run `sqsjobs provision` "
                "to create it (with its DLQ), or map it to an existing queue in SQSJOBS_QUEUES"
            )
            return row
        row.depth, row.in_flight, row.delayed = (int(attrs.get(name, 0)) for name in COUNTS)
        self._read_dlq(row, attrs.get("RedrivePolicy"))
        return row

    def _url(self, queue: str, physical: str) -> str:
        found = self._urls.get(queue)
        if found is None:
            if physical.startswith(("https://", "http://")):
                found = physical
            else:
                found = str(self._sqs.get_queue_url(QueueName=physical)["QueueUrl"])
            self._urls[queue] = found
        return found

    def _attributes(self, url: str, names: list[str]) -> dict[str, str]:
        answer = self._sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
        return dict(answer.get("Attributes", {}))

    def _read_dlq(self, row: QueueRow, redrive: str | None) -> None:
        """The DLQ the queue's redrive policy names: the one SQS and sqsjobs' failures really use."""
        arn = _dlq_arn(redrive)
        if arn is None:
            row.dlq_note = "no redrive policy: failed jobs have nowhere to go (`sqsjobs provision` attaches one)"
            return
        parts = arn.split(":")
        row.dlq = parts[5]
        try:
            url = self._dlq_urls.get(arn)
            if url is None:
                answer = self._sqs.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])
                url = self._dlq_urls[arn] = str(answer["QueueUrl"])
            attrs = self._attributes(url, list(COUNTS))
        except ClientError as exc:
            if _code(exc) not in _MISSING:
                raise
            self._dlq_urls.pop(arn, None)
            row.dlq_note = f"the redrive policy names {parts[5]!r}, which does not exist (`sqsjobs provision`)"
            return
        # Every message it holds: a `failed list` that is reading it hides them, it does not remove them.
        row.dlq_depth = sum(int(attrs.get(name, 0)) for name in COUNTS)

    # -- CloudWatch --------------------------------------------------------------------------

    def _refresh_ages(self, now: float, names: list[str]) -> None:
        if self._ages_read_at is not None and now - self._ages_read_at < self.age_every:
            return
        self._ages, self._age_note = oldest_ages(names, now)
        self._ages_read_at = now


def oldest_ages(names: Sequence[str], now: float) -> tuple[dict[str, tuple[float, datetime]], str]:
    """SQS name -> (age in seconds, when CloudWatch measured it), from each queue's newest datapoint of
    the last AGE_WINDOW_S seconds; plus why some or all are unknown ("" when every queue has one).

    A CloudWatch that refuses or cannot be reached makes the ages unknown, not the command fail: the
    depths are still worth showing, and `cloudwatch:GetMetricData` is a permission an operator may lack.
    """
    if not names:
        return {}, ""
    end = datetime.fromtimestamp(now, UTC)
    start = end - timedelta(seconds=AGE_WINDOW_S)
    newest: dict[str, tuple[float, datetime]] = {}
    cloudwatch = aws.client("cloudwatch")
    try:
        for first in range(0, len(names), _MAX_QUERIES):
            chunk = names[first : first + _MAX_QUERIES]
            queries = [_age_query(f"q{i}", name) for i, name in enumerate(chunk)]
            token: str | None = None
            while True:
                page = cloudwatch.get_metric_data(
                    MetricDataQueries=queries,
                    StartTime=start,
                    EndTime=end,
                    ScanBy="TimestampDescending",
                    **({"NextToken": token} if token else {}),
                )
                for result in page.get("MetricDataResults", []):
                    name = chunk[int(result["Id"][1:])]
                    for at, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                        if name not in newest or at > newest[name][1]:
                            newest[name] = (float(value), at)
                token = page.get("NextToken")
                if not token:
                    break
    except ClientError as exc:
        return {}, f"CloudWatch refused GetMetricData ({_code(exc)}): allow cloudwatch:GetMetricData to see ages"
    except BotoCoreError as exc:
        return {}, f"CloudWatch could not be read ({type(exc).__name__})"
    if len(newest) == len(names):
        return newest, ""
    return newest, (
        f"no {AGE_METRIC} datapoint in the last {AGE_WINDOW_S // 60} minutes for "
        f"{', '.join(name for name in names if name not in newest)} (an idle queue, or an endpoint without "
        "CloudWatch metrics such as moto)"
    )


def over(row: QueueRow) -> tuple[str, ...]:
    """The thresholds a row crosses; an unknown age crosses none (it is reported, not guessed)."""
    crossed = []
    if row.max_depth is not None and row.depth is not None and row.depth > row.max_depth:
        crossed.append("depth")
    if row.max_age_s is not None and row.age_s is not None and row.age_s > row.max_age_s:
        crossed.append("age")
    return tuple(crossed)


def _age_query(query_id: str, queue_name: str) -> dict[str, Any]:
    # Id: a lowercase letter first, then letters, digits, underscores (GetMetricData's rule); the
    # queue name cannot be used as it is (hyphens, `.fifo`).
    metric = {
        "Namespace": "AWS/SQS",
        "MetricName": "ApproximateAgeOfOldestMessage",
        "Dimensions": [{"Name": "QueueName", "Value": queue_name}],
    }
    return {"Id": query_id, "MetricStat": {"Metric": metric, "Period": 60, "Stat": "Maximum"}, "ReturnData": True}


def _dlq_arn(redrive: str | None) -> str | None:
    """The deadLetterTargetArn of a RedrivePolicy, or None when there is none that names a queue."""
    if not redrive:
        return None
    try:
        arn = json.loads(redrive).get("deadLetterTargetArn", "")
    except (ValueError, AttributeError):
        return None
    return arn if isinstance(arn, str) and len(arn.split(":")) == 6 else None


def _queue_name(physical: str) -> str:
    """The SQS name (CloudWatch's QueueName dimension) of a name or a queue URL."""
    return physical.rstrip("/").rsplit("/", 1)[-1] if physical.startswith(("https://", "http://")) else physical


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
