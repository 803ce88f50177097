"""`sqsjobs work --pools`: several pollers in one process, each with its own queues and timeout."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import ClassVar

import pytest
from typer.testing import CliRunner

from sqsjobs import App, ConfigurationError, Job
from sqsjobs.cli import cli
from sqsjobs.provisioning import provision
from sqsjobs.worker.pools import load_pools, run_pools
from tests.helpers import dead_letters, work_for


class Slowish(Job, name="pools.slowish"):
    """Takes 2 s and sets no timeout of its own: the pool's timeout decides."""

    tries = 1
    done: ClassVar[list[str]] = []
    where: str

    def handle(self) -> None:
        work_for(2)
        Slowish.done.append(self.where)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pools.toml"
    path.write_text(text)
    return path


def test_each_pool_runs_its_queues_with_its_own_timeout(sqs_app: App, tmp_path: Path) -> None:
    provision(sqs_app, ["bulk"], table=False, bucket=False)
    Slowish.done.clear()
    Slowish(where="high").dispatch(queue="high")
    Slowish(where="bulk").dispatch(queue="bulk")
    pools = load_pools(
        write(
            tmp_path,
            """
[pools.fast]
queues = ["high"]
concurrency = 2
timeout = 1
sleep = 1

[pools.long]
queues = ["bulk"]
timeout = 30
sleep = 1
""",
        )
    )
    code = run_pools(sqs_app, pools, stop_when_empty=True, install_signals=False)
    assert code == 0
    assert Slowish.done == ["bulk"]  # the fast pool's 1 s timeout stopped the other copy
    reasons = [letter["MessageAttributes"]["sqsjobs.reason"]["StringValue"] for letter in dead_letters(sqs_app, "high")]
    assert reasons == ["tries_exhausted"]


def test_a_pool_sets_its_own_timeout_grace(tmp_path: Path) -> None:
    pools = load_pools(write(tmp_path, "[pools.a]\nqueues = ['x']\ntimeout_grace = 2.5\n[pools.b]\nqueues = ['y']\n"))
    assert (pools["a"].timeout_grace, pools["b"].timeout_grace) == (2.5, 10.0)
    with pytest.raises(ConfigurationError, match=r"pools\.a\.timeout_grace"):
        load_pools(write(tmp_path, "[pools.a]\nqueues = ['x']\ntimeout_grace = 0\n"))


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[pools.a]\nqueues = []\n", "pools.a.queues"),
        ("[pools.a]\nqueues = ['x']\nconcurrency = 0\n", "pools.a.concurrency"),
        ("[pools.a]\nqueues = ['x']\nthreads = 4\n", "pools.a.threads"),
        ("[pools.a\n", "not valid TOML"),
        ("[other]\n", "other"),
    ],
)
def test_a_bad_pools_file_names_the_file_and_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigurationError) as caught:
        load_pools(path)
    assert str(path) in str(caught.value) and named in str(caught.value)


def test_pools_take_their_options_from_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[pools.a]\nqueues = ['x']\n")
    result = CliRunner().invoke(cli, ["work", "--pools", str(path), "--queue", "y"])
    assert result.exit_code == 2 and "--pools takes each pool's queues" in result.output


def test_sqsjobs_pools_runs_the_pools_of_the_environment(
    sqs_app: App, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The template's WorkerPools reaches `sqsjobs work` as SQSJOBS_POOLS (JSON): no file, no --queue."""
    monkeypatch.setenv("SQSJOBS_QUEUE_PREFIX", sqs_app.settings.queue_prefix)
    monkeypatch.setenv("SQSJOBS_POOLS", '{"quick": {"queues": ["high"], "timeout": 30, "sleep": 1}}')
    Slowish.done.clear()
    Slowish(where="env").dispatch(queue="high")
    result = CliRunner().invoke(cli, ["work", "--stop-when-empty"])
    assert result.exit_code == 0, result.output
    assert Slowish.done == ["env"]
    monkeypatch.setenv("SQSJOBS_POOLS", '{"quick": {"queues": "high"}}')
    bad = CliRunner().invoke(cli, ["work", "--stop-when-empty"])
    assert bad.exit_code == 2 and "SQSJOBS_POOLS" in bad.output and "quick.queues" in bad.output


def test_a_pool_that_cannot_start_fails_the_process_like_one_worker_would(
    sqs_app: App, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pools = load_pools(
        write(tmp_path, "[pools.ok]\nqueues = ['high']\nsleep = 1\n\n[pools.ghost]\nqueues = ['nope']\n")
    )
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    with pytest.raises(Exception, match="nope") as caught:
        run_pools(sqs_app, pools, stop_when_empty=True, install_signals=False)
    assert not isinstance(caught.value, AssertionError)
    assert escaped == []  # raised once, on the caller's thread: no traceback above the CLI's error line
