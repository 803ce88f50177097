"""Per-job metrics from the poller and the Lambda handler alike, as CloudWatch EMF or PutMetricData.

Both ways in feed the same `JobMetrics` listener and flush it on their own rhythm (the poller every
SQSJOBS_METRICS_INTERVAL seconds and when it stops, the Lambda handler at the end of each
invocation), so a dashboard or an alarm reads one set of numbers whichever way a queue is consumed.

What is emitted (namespace SQSJOBS_METRICS_NAMESPACE, or POWERTOOLS_METRICS_NAMESPACE on Lambda):

- `processed`, `failed`, `released` (Count) and `runtime`, `wait` (Milliseconds, dispatch or end of
  delay to start), with two dimension sets, `[queue]` and `[queue, job]`;
- `handed_back`, `held_back` (Count, Lambda: records given back unrun) with the same dimensions;
- `worker_alive` (Count, 1 per poller per queue per flush) with `[queue]` only: an alarm on its
  absence is "no worker is consuming this queue".

Dimensions are bounded: the job is its registered name or `unknown` (a message cannot create a
metric), the queue one the worker or the function was configured with. Counts are summed between
flushes, so a busy worker writes one document per queue and job per flush rather than one per job;
`runtime` and `wait` keep at most `SAMPLES` values per flush (a uniform sample that always keeps
the largest), so their percentiles and maximum stay right while the log volume stays flat.
"""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .chunks import bounded
from .events import JobEvent
from .registry import Registry

#: Job events counted, and the metric each becomes (a rejected message failed without running).
_COUNTED = {"processed": "processed", "failed": "failed", "rejected": "failed", "released": "released"}
#: The job events the metrics count.
COUNTED_KINDS = tuple(_COUNTED)
#: Counts a flush always writes for a queue and job it saw, so a rate over them has no gaps.
COUNTS = ("processed", "failed", "released")
#: Values of `runtime` and of `wait` kept per queue and job between flushes. Powertools' EMF
#: provider prints a document by itself when a metric reaches 100 values; 99 keeps printing ours.
SAMPLES = 99
#: PutMetricData takes at most 1,000 metric data items and 150 distinct values per item.
_PUT_MAX_ITEMS = 1000
_PUT_MAX_VALUES = 150
#: ... in a request of at most 1 MB; kept well below it.
_PUT_MAX_BYTES = 900_000


class Sample:
    """A uniform sample of at most `size` values (reservoir), always keeping the largest."""

    def __init__(self, size: int = SAMPLES, rng: random.Random | None = None) -> None:
        self.size = size
        self.seen = 0
        self.values: list[float] = []
        self.largest: float | None = None
        self._rng = rng or random.Random()

    def add(self, value: float) -> None:
        self.seen += 1
        if self.largest is None or value > self.largest:
            self.largest = value
        if len(self.values) < self.size:
            self.values.append(value)
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.size:
            self.values[slot] = value

    def kept(self) -> list[float]:
        """The sample, with the largest value in it (replacing a random one when it was dropped)."""
        values = list(self.values)
        if self.largest is not None and self.largest not in values:
            values[self._rng.randrange(len(values))] = self.largest
        return values


@dataclass
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)
    runtime: Sample = field(default_factory=Sample)
    wait: Sample = field(default_factory=Sample)


class JobMetrics:
    """Collects job events between flushes; `flush` writes them out. Safe across threads."""

    def __init__(
        self,
        registry: Registry,
        namespace: str,
        write: Callable[[list[dict[str, Any]]], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = registry
        self.namespace = namespace
        self._write = write or print_emf
        self._clock = clock
        self._lock = threading.Lock()
        self._tallies: dict[tuple[str, str], _Tally] = {}
        self._alive: set[str] = set()

    # -- collecting ----------------------------------------------------------------------
    def listen(self, event: JobEvent) -> None:
        """The events listener (`app.events.listen(metrics.listen)`)."""
        metric = _COUNTED.get(event.kind)
        if metric is None:
            return
        job = self.registry.known_name(event.job_name)
        with self._lock:
            tally = self._tally(event.queue, job)
            tally.counts[metric] += 1
            if event.kind != "rejected":  # it never started: no runtime, no wait
                tally.runtime.add(event.runtime_s * 1000)
                if event.dispatched_at:
                    tally.wait.add(event.wait_s * 1000)

    def count(self, metric: str, queue: str, job: str, n: int = 1) -> None:
        """Count something that is no job event (`handed_back`, `held_back`)."""
        with self._lock:
            self._tally(queue, self.registry.known_name(job)).counts[metric] += n

    def alive(self, queues: Iterable[str]) -> None:
        """This process consumes these queues (`worker_alive` on the next flush)."""
        with self._lock:
            self._alive.update(queues)

    def _tally(self, queue: str, job: str) -> _Tally:
        tally = self._tallies.get((queue, job))
        if tally is None:
            tally = self._tallies[(queue, job)] = _Tally()
        return tally

    # -- writing -------------------------------------------------------------------------
    def drain(self) -> tuple[dict[tuple[str, str], _Tally], set[str]]:
        with self._lock:
            tallies, self._tallies = self._tallies, {}
            alive, self._alive = self._alive, set()
        return tallies, alive

    def documents(self) -> list[dict[str, Any]]:
        """What was collected since the last call, as EMF documents (and forgotten here)."""
        tallies, alive = self.drain()
        stamp = int(self._clock() * 1000)
        docs = [self._emf(stamp, {"queue": q}, [("worker_alive", "Count", [1.0])]) for q in sorted(alive)]
        for (queue, job), tally in sorted(tallies.items()):
            metrics: list[tuple[str, str, list[float]]] = [
                (name, "Count", [float(tally.counts.get(name, 0))]) for name in dict.fromkeys([*COUNTS, *tally.counts])
            ]
            if tally.runtime.values:
                metrics.append(("runtime", "Milliseconds", tally.runtime.kept()))
            if tally.wait.values:
                metrics.append(("wait", "Milliseconds", tally.wait.kept()))
            docs.append(self._emf(stamp, {"queue": queue, "job": job}, metrics))
        return docs

    def flush(self) -> int:
        """Write what was collected; returns how many documents. Never raises: metrics must not
        change what happens to a job (a failure is reported on stderr)."""
        try:
            docs = self.documents()
            if docs:
                self._write(docs)
            return len(docs)
        except Exception as exc:  # a broken pipe, a refused PutMetricData
            print(f"sqsjobs: could not write metrics: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 0

    def _emf(self, stamp: int, dims: dict[str, str], metrics: list[tuple[str, str, list[float]]]) -> dict[str, Any]:
        """One EMF document through Powertools' provider (it checks names, units and sizes)."""
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider

        emf = AmazonCloudWatchEMFProvider(namespace=self.namespace)
        emf.service = ""  # POWERTOOLS_SERVICE_NAME would add a `service` dimension the alarms do not name
        emf.add_dimension(name="queue", value=dims["queue"])
        if "job" in dims:
            emf.add_dimensions(queue=dims["queue"], job=dims["job"])
        for name, unit, values in metrics:
            for value in values:
                emf.add_metric(name=name, unit=unit, value=value)
        emf.timestamp = stamp
        doc = dict(emf.serialize_metric_set())
        for name, _, values in metrics:
            if len(values) == 1:
                doc[name] = values[0]  # a count reads as a number, not a list of one
        return doc


def print_emf(docs: list[dict[str, Any]]) -> None:
    """Each document as one line on stdout: Lambda and ECS (awslogs) ship it to CloudWatch Logs,
    which turns it into metrics."""
    out = sys.stdout
    for doc in docs:
        out.write(json.dumps(doc, separators=(",", ":")) + "\n")
    out.flush()


class PutMetricData:
    """The writer where no log agent reads EMF: the documents as batched PutMetricData calls."""

    def __init__(self, cloudwatch: Any) -> None:
        self._cloudwatch = cloudwatch

    def __call__(self, docs: list[dict[str, Any]]) -> None:
        by_namespace: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            for directive in doc["_aws"]["CloudWatchMetrics"]:
                items = by_namespace.setdefault(directive["Namespace"], [])
                items.extend(_metric_data(doc, directive))
        for namespace, items in by_namespace.items():
            for chunk in _chunks(items):
                self._cloudwatch.put_metric_data(Namespace=namespace, MetricData=chunk)


def _chunks(items: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """At most 1,000 items and, measured as JSON (larger than the CBOR botocore sends), under 1 MB."""
    return bounded(items, count=_PUT_MAX_ITEMS, size=_PUT_MAX_BYTES, size_of=lambda item: len(json.dumps(item)) + 2)


def _metric_data(doc: dict[str, Any], directive: dict[str, Any]) -> list[dict[str, Any]]:
    """The MetricDatum items of one EMF directive: one per metric and dimension set, equal values
    folded into Values/Counts."""
    stamp = doc["_aws"]["Timestamp"] / 1000
    items: list[dict[str, Any]] = []
    for dim_names in directive["Dimensions"]:
        dimensions = [{"Name": name, "Value": str(doc[name])} for name in dim_names]
        for metric in directive["Metrics"]:
            raw = doc[metric["Name"]]
            counted = Counter(float(v) for v in (raw if isinstance(raw, list) else [raw]))
            pairs = sorted(counted.items())
            for start in range(0, len(pairs), _PUT_MAX_VALUES):
                chunk = pairs[start : start + _PUT_MAX_VALUES]
                items.append(
                    {
                        "MetricName": metric["Name"],
                        "Dimensions": dimensions,
                        "Timestamp": stamp,
                        "Unit": metric["Unit"],
                        "Values": [v for v, _ in chunk],
                        "Counts": [float(c) for _, c in chunk],
                    }
                )
    return items
