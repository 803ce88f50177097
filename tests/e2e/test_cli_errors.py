"""The real `sqsjobs` process: expected failures are one line and a documented exit code, no traceback,
and never a hang; `python -m sqsjobs` is the same program."""

from __future__ import annotations

import socket
import subprocess
import sys

from tests.e2e.conftest import E2E


def one_line(result: subprocess.CompletedProcess[str], code: int, *needles: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_an_unreachable_endpoint_is_exit_3_on_the_worker_and_the_failed_verbs(e2e: E2E) -> None:
    # Bound and never listening for the whole test: connections are refused, and no other process (another
    # xdist worker's moto server) can take the port meanwhile, as it could a port picked and let go.
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{held.getsockname()[1]}"
        env = e2e.env(AWS_ENDPOINT_URL=closed, AWS_MAX_ATTEMPTS="1")  # no retries of a refused connection
        one_line(e2e.cli("failed", "list", env=env, timeout=90), 3, "cannot reach AWS", closed)
        worker = e2e.worker("--stop-when-empty", env=env)
        assert worker.wait(90) == 3, worker.stderr()
        assert "Traceback" not in worker.stderr()
        assert "cannot reach AWS" in worker.stderr()


def test_no_credentials_is_exit_3(e2e: E2E) -> None:
    env = e2e.env(AWS_SHARED_CREDENTIALS_FILE="/nonexistent", AWS_CONFIG_FILE="/nonexistent")
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    one_line(e2e.cli("check", env=env), 3, "credentials")


def test_an_invalid_setting_on_the_worker_is_exit_2_naming_the_variable(e2e: E2E) -> None:
    worker = e2e.worker("--stop-when-empty", env=e2e.env(SQSJOBS_LOG_LEVEL="loud"))
    assert worker.wait(30) == 2
    assert "SQSJOBS_LOG_LEVEL" in worker.stderr() and "Traceback" not in worker.stderr()


def test_local_on_a_busy_port_exits_with_one_line_instead_of_hanging(e2e: E2E) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = e2e.cli("local", "--port", str(port), timeout=30)  # it used to hang: the deadline fails that
    one_line(result, 2, f"port {port}", "in use")


def test_python_dash_m_sqsjobs_is_the_cli(e2e: E2E) -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "sqsjobs", "--help"],
        check=False,
        cwd=e2e.root,
        env=e2e.env(),
        capture_output=True,
        text=True,
    )
    assert shown.returncode == 0, shown.stderr
    assert "Usage: sqsjobs" in shown.stdout
    for verb in ("work", "failed", "batches", "local", "provision", "check"):
        assert verb in shown.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "sqsjobs", "failed", "list"],
        check=False,
        cwd=e2e.root,
        env=e2e.env(SQSJOBS_CONNECTION="memory"),
        capture_output=True,
        text=True,
    )
    one_line(refused, 2, "SQSJOBS_CONNECTION=sqs")
