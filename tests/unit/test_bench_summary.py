"""How `make bench` reduces a consumer's runs to the number its targets read.

The lowest of two runs let one fast minute on a shared machine decide a target; the median of the runs
counts now, and the table shows every run's spread so a reader sees when a target is not settled."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import report, summary, systems
from benchmarks.harness import ChildResult, Counts


def phase(
    system: systems.System, cpu_us_per_job: float, jobs: int = 1000, receives: int = 100, producer_us: float = 200.0
) -> systems.Phase:
    child = ChildResult(system.kind, cpu_us_per_job * jobs / 1e6, 10.0, jobs, 0, 50.0, 1.0, jobs)
    _, consumer = system.keys
    counts = Counts({consumer: {"sqs": {"ReceiveMessage": [receives, jobs], "DeleteMessageBatch": [100, jobs]}}})
    return systems.Phase(system, jobs, child, counts, dispatch_cpu_s=producer_us * jobs / 1e6)


def test_the_median_run_counts_not_the_lowest_nor_the_mean() -> None:
    runs = [
        phase(systems.BOTO3, us, producer_us=p)
        for us, p in ((400.0, 190.0), (700.0, 250.0), (420.0, 180.0), (460.0, 300.0))
    ]
    reduced = summary._summary(runs)
    assert reduced["worker_cpu_us"] == pytest.approx(440.0)  # (420 + 460) / 2: not 400, and not the mean 495
    assert reduced["dispatch_cpu_us"] == pytest.approx(220.0)  # the producer's too: (190 + 250) / 2
    assert reduced["typical"] is runs[2]  # the lower of the middle two is the run whose details are shown
    assert summary._span(runs) == pytest.approx((400.0, 700.0))


def test_an_odd_number_of_runs_takes_the_middle_one() -> None:
    runs = [phase(systems.BOTO3, us) for us in (390.0, 350.0, 700.0)]
    reduced = summary._summary(runs)
    assert reduced["worker_cpu_us"] == pytest.approx(390.0)  # a disturbed run (700) moves nothing
    assert reduced["typical"] is runs[0]


def test_calls_per_job_is_the_worst_run() -> None:
    runs = [phase(systems.BOTO3, us, receives=r) for us, r in ((450.0, 100), (400.0, 160), (500.0, 100))]
    assert summary._summary(runs)["calls_per_job"] == pytest.approx(0.26)  # a ceiling target: the worst run's calls


def test_a_consumer_run_once_has_no_spread() -> None:
    assert summary._span([phase(systems.BOTO3, 400.0)]) is None


def test_the_table_shows_each_consumers_runs(tmp_path: Path) -> None:
    rows = [
        report.Row("raw boto3 loop", 450.0, 1.0, (400.0, 500.0), 190.0, 0.3, 10.0, ""),
        report.Row("celery", 2900.0, 6.4, None, 2600.0, 2.1, 8.0, "run once"),
        report.Row("dramatiq", None, None, None, None, None, None, "not installed"),
    ]
    written = report.write(tmp_path, {"jobs": 1000, "wave": 200}, [], rows, {}, {})
    table = (tmp_path / "latest.md").read_text()
    assert "| raw boto3 loop | 450 | 1.00 | 400-500 | 190 |" in table
    assert "| celery | 2900 | 6.40 |  | 2600 |" in table
    assert "| dramatiq | - | - | - | - | - | - | skipped: not installed |" in table
    assert written["results_md"].endswith("latest.md")


def test_each_setting_is_read_against_sqs_workers_beside_its_own_floor() -> None:
    """sqs-workers runs its jobs on one thread: `--concurrency 10` against it is read beside what the checks on
    10 threads cost a hand-written loop, so the line says when the threads alone cost more than sqs-workers."""
    out = {
        "cpu_ratio_sqs_workers_vs_boto3": 1.32,
        "cpu_ratio_vs_boto3_defaults": 1.29,
        "cpu_ratio_checked_floor_vs_boto3": 1.14,
        "cpu_ratio_vs_boto3_concurrency4": 1.36,
        "cpu_ratio_boto3_checked_pool4_vs_boto3": 1.29,
        "cpu_ratio_vs_boto3_concurrency10": 1.54,
        "cpu_ratio_boto3_checked_pool10_vs_boto3": 1.40,
        "cpu_ratio_vs_boto3_async4": 1.35,
        "cpu_ratio_boto3_asyncio_checked_vs_boto3": 1.335,
    }
    lines = {c.name: c.line() for c in summary.checks_of(out, systems.Outcome()) if c.target_name == "sqs-workers"}
    assert lines == {
        "cpu_ratio_vs_boto3_defaults": "cpu_ratio_vs_boto3_defaults 1.29 <= sqs-workers (1.32): met "
        "(checked loop 1.14, at or below the target in this run)",
        "cpu_ratio_vs_boto3_concurrency4": "cpu_ratio_vs_boto3_concurrency4 1.36 <= sqs-workers (1.32): NOT MET "
        "(checked loop on 4 threads 1.29, at or below the target in this run)",
        "cpu_ratio_vs_boto3_concurrency10": "cpu_ratio_vs_boto3_concurrency10 1.54 <= sqs-workers (1.32): NOT MET "
        "(checked loop on 10 threads 1.40, above the target in this run)",
        "cpu_ratio_vs_boto3_async4": "cpu_ratio_vs_boto3_async4 1.35 <= sqs-workers (1.32): NOT MET "
        "(checked asyncio loop 1.33, above the target in this run)",
    }


def test_every_settings_floor_runs_the_settings_own_threads() -> None:
    """A setting read against a floor on another number of threads would be read against the wrong cost."""
    by_key = {f"cpu_ratio_{system.name}_vs_boto3": system for system in (systems.CHECKED_POOL, systems.CHECKED_POOL10)}
    for setting, (worker_args, _) in systems.SQSJOBS_SETTINGS.items():
        floor = by_key.get(summary._SETTING_FLOORS[setting])
        if floor is not None:
            assert floor.worker_args.split()[-1] == worker_args.split()[-1], setting
    assert set(by_key) <= set(summary._SETTING_FLOORS.values())


def test_the_charts_whiskers_span_each_consumers_runs_and_none_for_one_run() -> None:
    rows = [
        report.Row("raw boto3 loop", 450.0, 1.0, (400.0, 500.0), 190.0, 0.3, 10.0, ""),
        report.Row("celery", 2900.0, 6.4, None, 2600.0, 2.1, 8.0, "run once"),
    ]
    assert report._whiskers(rows) == [[50.0, 0.0], [50.0, 0.0]]  # one run once does not take the others' away


def test_the_names_of_earlier_versions_read_the_same_medians_as_the_targets() -> None:
    outcome = systems.Outcome()
    cpu = {"boto3": (350.0, 420.0, 360.0, 380.0), "sqsjobs_defaults": (450.0, 700.0, 470.0, 520.0)}
    measured = [systems.BOTO3, systems.CHECKED, systems.CHECKED_POOL, systems.CHECKED_POOL10, *systems.SQSJOBS_SYSTEMS]
    for system in measured:
        outcome.runs[system.name] = [phase(system, us) for us in cpu.get(system.name, (400.0, 410.0, 420.0, 430.0))]
    dispatch = {
        "dispatch_cpu_us_per_job_sqsjobs": 180.0,
        "dispatch_cpu_us_per_job_boto3": 190.0,
        "dispatch_many_ratio_vs_boto3": 1.0,
    }
    out = summary.results(1000, 4, dispatch, outcome, None, None)
    assert out["cpu_ratio_vs_boto3_defaults"] == pytest.approx(495.0 / 370.0)  # the medians
    assert out["worker_cpu_ratio_vs_boto3"] == pytest.approx(out["cpu_ratio_vs_boto3_defaults"])
    assert out["worker_cpu_us_per_job_sqsjobs"] == pytest.approx(495.0)  # not the typical run's 470
    assert out["cpu_ratio_vs_boto3"] == pytest.approx((180.0 + 495.0) / (190.0 + 370.0))
    assert out["worker_cpu_us_per_job_runs_sqsjobs_defaults"] == "450,700,470,520"
    consumer_floors = [key for key in summary._FLOOR_NAMES if not key.startswith("lambda_")]
    assert set(consumer_floors) - {"cpu_ratio_boto3_asyncio_checked_vs_boto3"} <= set(out)


def _sqsjobs(setting: str) -> systems.System:
    return next(system for system in systems.SQSJOBS_SYSTEMS if system.name == f"sqsjobs_{setting}")


def test_each_worker_target_says_in_how_many_runs_it_held_against_the_same_rounds_target() -> None:
    """A median 0.001 above its target read "NOT MET" with nothing to say that two of the four runs met it:
    the line counts the runs, each against the raw boto3 run of its own round and that round's target
    (sqs-workers' ratio in that round), unrounded as the median verdict compares."""
    peer = systems.PEER_SYSTEMS[[p.kind for p in systems.PEER_SYSTEMS].index("sqs-workers")]
    boto3 = [400.0, 300.0, 350.0, 250.0]

    def runs_of(system: systems.System, ratios: tuple[float, ...]) -> list[systems.Phase]:
        return [phase(system, r * b) for r, b in zip(ratios, boto3, strict=False)]

    runs = {
        "boto3": [phase(systems.BOTO3, us) for us in boto3],
        "sqsjobs_async4": runs_of(_sqsjobs("async4"), (1.49, 1.19, 1.28, 1.54)),  # two under 1.3
        # 1.3004x in every round, which prints as 1.300
        "sqsjobs_concurrency4": runs_of(_sqsjobs("concurrency4"), (1.3004,) * 4),
        # sqs-workers: only the second round's is below ours
        "sqs_workers": runs_of(peer, (1.50, 1.10, 1.30, 1.60)),
        "sqsjobs_defaults": runs_of(_sqsjobs("defaults"), (1.05, 1.2, 1.1)),  # a round short
    }
    out = {
        "cpu_ratio_vs_boto3_async4": 1.385,
        "cpu_ratio_sqs_workers_vs_boto3": 1.40,
        "cpu_ratio_vs_boto3_concurrency4": 1.3004,
        "cpu_ratio_vs_boto3_defaults": 1.1,
    }
    lines = {(c.name, c.target_name): c.line() for c in summary.checks_of(out, systems.Outcome(runs=runs))}
    assert lines[("cpu_ratio_vs_boto3_async4", None)].endswith("[met in 2 of 4 runs]")
    assert lines[("cpu_ratio_vs_boto3_async4", "sqs-workers")].endswith("[met in 3 of 4 runs]")
    # Each run at 1.3004x: the median reads NOT MET, and so does every run (not "1.300", met).
    assert "NOT MET" in lines[("cpu_ratio_vs_boto3_concurrency4", None)]
    assert lines[("cpu_ratio_vs_boto3_concurrency4", None)].endswith("[met in 0 of 4 runs]")
    # Rounds that do not pair up say nothing run by run.
    assert "runs]" not in lines[("cpu_ratio_vs_boto3_defaults", None)]


def test_a_single_run_or_a_skipped_peer_says_nothing_run_by_run() -> None:
    boto3 = [400.0, 300.0]
    runs = {
        "boto3": [phase(systems.BOTO3, us) for us in boto3],
        "sqsjobs_async4": [phase(_sqsjobs("async4"), 1.2 * b) for b in boto3],
    }
    out = {"cpu_ratio_vs_boto3_async4": 1.2}
    skipped = systems.Outcome(runs=runs, skipped={"sqs_workers": "--no-peers"})
    lines = {(c.name, c.target_name): c.line() for c in summary.checks_of(out, skipped)}
    assert lines[("cpu_ratio_vs_boto3_async4", None)].endswith("[met in 2 of 2 runs]")
    assert lines[("cpu_ratio_vs_boto3_async4", "sqs-workers")] == (
        "cpu_ratio_vs_boto3_async4 <= sqs-workers: skipped (--no-peers)"
    )
    once = systems.Outcome(runs={name: phases[:1] for name, phases in runs.items()})
    assert all("runs]" not in c.line() for c in summary.checks_of(out, once))
