"""The overview's charts, drawn on the server as inline SVG from the metric snapshots: no script, no library.

Each chart is one series over the chosen hours, one point per minute, summed over the queues shown:
throughput (jobs that ended a minute), failure rate (failed of those, %), mean wait (dispatch to start)
and mean runtime. A minute no writer recorded counts as no jobs for the counts and is left out of
the means (there was nothing to average).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..metric_snapshots import Minute, minute_of

WIDTH = 600
HEIGHT = 120


@dataclass
class Chart:
    testid: str
    title: str
    unit: str
    #: (minute start, value) in time order.
    values: list[tuple[int, float]] = field(default_factory=list)
    start: int = 0
    end: int = 0

    @property
    def top(self) -> float:
        return max((v for _, v in self.values), default=0.0)

    @property
    def latest(self) -> float | None:
        return self.values[-1][1] if self.values else None

    @property
    def points(self) -> str:
        """The SVG polyline's points: x by time across the window, y scaled to the largest value."""
        span = max(1, self.end - self.start)
        top = self.top or 1.0
        return " ".join(
            f"{(at - self.start) * WIDTH / span:.1f},{HEIGHT - value * (HEIGHT - 4) / top:.1f}"
            for at, value in self.values
        )


def totals(series: dict[str, list[Minute]]) -> dict[int, Minute]:
    """Minute -> the counters of every queue added up."""
    out: dict[int, Minute] = {}
    for minutes in series.values():
        for minute in minutes:
            out.setdefault(minute.at, Minute("*", minute.at)).merge(minute)
    return out


def charts(series: dict[str, list[Minute]], since: float, until: float) -> list[Chart]:
    start, end = minute_of(since), minute_of(until)
    by_minute = totals(series)
    every = range(start, end + 1, 60)
    throughput = Chart("chart-throughput", "Throughput", "jobs/min", start=start, end=end)
    failures = Chart("chart-failure-rate", "Failure rate", "%", start=start, end=end)
    wait = Chart("chart-wait", "Wait (mean)", "s", start=start, end=end)
    runtime = Chart("chart-runtime", "Runtime (mean)", "ms", start=start, end=end)
    for at in every:
        minute = by_minute.get(at, Minute("*", at))
        ended = minute.processed + minute.failed
        throughput.values.append((at, float(ended)))
        failures.values.append((at, 100.0 * minute.failed / ended if ended else 0.0))
        if minute.waits:
            wait.values.append((at, minute.wait_ms / minute.waits / 1000))
        if minute.runs:
            runtime.values.append((at, minute.runtime_ms / minute.runs))
    return [throughput, failures, wait, runtime]


@dataclass
class QueueTotals:
    """One queue's counters over the window, for the queue table."""

    processed: int = 0
    failed: int = 0
    released: int = 0
    mean_wait_s: float | None = None
    mean_runtime_ms: float | None = None
    max_runtime_ms: int = 0


def queue_totals(minutes: list[Minute]) -> QueueTotals:
    summed = Minute("*", 0)
    for minute in minutes:
        summed.merge(minute)
    return QueueTotals(
        processed=summed.processed,
        failed=summed.failed,
        released=summed.released,
        mean_wait_s=summed.wait_ms / summed.waits / 1000 if summed.waits else None,
        mean_runtime_ms=summed.runtime_ms / summed.runs if summed.runs else None,
        max_runtime_ms=summed.runtime_max_ms,
    )
