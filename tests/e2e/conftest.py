"""End-to-end fixtures: a moto server subprocess over real HTTP, and workers as real subprocesses.

The test process reaches the server through `AWS_ENDPOINT_URL` (set per test, so unit tests
in the same process keep their in-process moto); every worker or CLI subprocess gets the same
endpoint, fake credentials, a fresh queue prefix and `E2E_DIR`, where the jobs in
`tests/e2e/e2e_jobs.py` leave their markers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sqsjobs import App, Dispatched, Job, aws
from sqsjobs.local import free_port
from sqsjobs.provisioning import provision
from tests.helpers import dlq_url, queue_url, wait_for

JOBS_MODULE = "tests.e2e.e2e_jobs"
# `sqsjobs.testing.boot` first: with SQSJOBS_TEST_STRICT=1 (set by `E2E.env`) every subprocess runs
# under the strict-AWS-rules layer, and SQSJOBS_TEST_FAULTS (`E2E.env(faults=...)`) injects faults.
CLI = [sys.executable, "-c", "import sqsjobs.testing.boot; from sqsjobs.cli import main; main()"]


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1).close()
    except urllib.error.HTTPError:
        return True  # any HTTP answer means the server is up
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's HTTP server as a subprocess on loopback, one per pytest (xdist) process.

    Started through tests/moto_polls.py: its long polls end when SQS's would, as in-process moto's do.
    """
    log = tmp_path_factory.mktemp("moto") / "server.log"
    for attempt in range(5):  # a free port may be taken by another process before the server binds it: pick again
        port = free_port()
        with open(log, "ab") as out:
            out.write(f"--- try {attempt + 1}, port {port}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.moto_polls", "--host", "127.0.0.1", "--port", str(port)],
                cwd=Path(__file__).resolve().parents[2],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        endpoint = f"http://127.0.0.1:{port}"
        # werkzeug says it runs only once it has bound the port: the answer then comes from this server,
        # not from another one (another xdist worker's) that took the port first.
        bound = f"Running on {endpoint}\n".encode()
        try:
            wait_for(
                lambda proc=proc, bound=bound: proc.poll() is not None or bound in log.read_bytes(),
                timeout=30,
                what="the moto server",
            )
            wait_for(
                lambda proc=proc, endpoint=endpoint: proc.poll() is not None or _answers(endpoint),
                timeout=30,
                what="the moto server's answer",
            )
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.poll() is None:
            break
    else:
        raise RuntimeError(f"moto server exited {proc.returncode}: {log.read_text()[-2000:]}")
    try:
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Mark:
    event: str
    attempt: int
    at: float


@dataclass
class Process:
    """A worker or CLI subprocess with its output in files."""

    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal(self, signum: int) -> None:
        self.popen.send_signal(signum)

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"process still running after {timeout}s; stderr tail:\n{self.stderr()[-3000:]}"
            ) from None

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def log_records(self) -> list[dict[str, Any]]:
        """The worker's JSON log lines (SQSJOBS_LOG_FORMAT=json writes them to stderr)."""
        records = []
        for line in self.stderr().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    records.append(record)
        return records


class E2E:
    """One test's world: fresh queue names, a markers directory, tracked subprocesses."""

    def __init__(self, endpoint: str, root: Path, workdir: Path) -> None:
        self.endpoint = endpoint
        self.root = root
        self.dir = workdir / "markers"
        self.dir.mkdir()
        self.logs = workdir / "logs"
        self.logs.mkdir()
        self.prefix = f"e2e{uuid.uuid4().hex[:10]}-"
        self.queues: list[str] = ["default"]
        self.app: App = App(connection="sqs", queue_prefix=self.prefix, queues=self.queues)
        self.processes: list[Process] = []

    # -- AWS side ----------------------------------------------------------------------
    def setup(self, queues: Sequence[str] = ("default",), visibility: int = 30, **overrides: Any) -> App:
        """Provision `queues` (each with its DLQ) and make the App that dispatches to them.

        Visibility timeouts below the settings' minimum (5 s) are set on the queues directly.
        """
        self.queues = list(queues)
        self.app = App(
            connection="sqs",
            queue_prefix=self.prefix,
            queues=self.queues,
            visibility_timeout=max(5, visibility),
            **overrides,
        )
        provision(self.app, self.queues)
        if visibility < 5:
            for queue in self.queues:
                self.set_visibility(queue, visibility)
        return self.app

    def set_visibility(self, queue: str, seconds: int) -> None:
        aws.client("sqs").set_queue_attributes(
            QueueUrl=queue_url(self.app, queue), Attributes={"VisibilityTimeout": str(seconds)}
        )

    def dispatch(self, job: Job, **options: Any) -> Dispatched:
        with self.app.activate():
            return job.dispatch(**options)

    def send_raw(self, body: str, queue: str = "default") -> str:
        return str(aws.client("sqs").send_message(QueueUrl=queue_url(self.app, queue), MessageBody=body)["MessageId"])

    def depth(self, url: str) -> int:
        """Every message on a queue: visible, in flight and delayed (moto's counts are exact)."""
        attrs = aws.client("sqs").get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())

    def queue_depth(self, queue: str = "default") -> int:
        return self.depth(queue_url(self.app, queue))

    def dlq_depth(self, queue: str = "default") -> int:
        return self.depth(dlq_url(self.app, queue))

    # -- markers -----------------------------------------------------------------------
    def marks(self, job_id: str) -> list[Mark]:
        path = self.dir / f"{job_id}.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            event, attempt, at = line.split()
            out.append(Mark(event, int(attempt), float(at)))
        return out

    def events(self, job_id: str) -> list[tuple[str, int]]:
        return [(m.event, m.attempt) for m in self.marks(job_id)]

    def wait_mark(self, job_id: str, event: str, timeout: float = 15) -> Mark:
        return wait_for(
            lambda: next((m for m in self.marks(job_id) if m.event == event), None),
            timeout=timeout,
            what=f"{event!r} marker of job {job_id}",
        )

    # -- subprocesses ------------------------------------------------------------------
    def env(self, faults: str | None = None, strict: bool = True, **extra: str) -> dict[str, str]:
        """The subprocess environment; `faults` is a SQSJOBS_TEST_FAULTS spec (see docs/testing.md)."""
        env = dict(os.environ)
        env.update(
            AWS_ENDPOINT_URL=self.endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            SQSJOBS_QUEUE_PREFIX=self.prefix,
            SQSJOBS_QUEUES=",".join(self.queues),
            SQSJOBS_LOG_FORMAT="json",
            PYTHONPATH=os.pathsep.join(p for p in (str(self.root), os.environ.get("PYTHONPATH", "")) if p),
            PYTHONUNBUFFERED="1",
            E2E_DIR=str(self.dir),
            COLUMNS="250",  # rich tables: never fold a job id across lines
            SQSJOBS_TEST_STRICT="1" if strict else "0",
        )
        if faults:
            env["SQSJOBS_TEST_FAULTS"] = faults
        env.update(extra)
        return env

    def spawn(self, args: Sequence[str], env: dict[str, str] | None = None) -> Process:
        n = len(self.processes)
        out, err = self.logs / f"{n}.out", self.logs / f"{n}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            popen = subprocess.Popen([*CLI, *args], cwd=self.root, env=env or self.env(), stdout=stdout, stderr=stderr)
        process = Process(popen, out, err)
        self.processes.append(process)
        return process

    def worker(self, *args: str, env: dict[str, str] | None = None) -> Process:
        """`sqsjobs work --app tests.e2e.e2e_jobs --sleep 1 ARGS` as a subprocess."""
        return self.spawn(["work", "--app", JOBS_MODULE, "--sleep", "1", *args], env)

    def cli(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        process = self.spawn(args, env)
        code = process.wait(timeout)
        return subprocess.CompletedProcess(process.popen.args, code, process.stdout(), process.stderr())

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.popen.wait(10)


@pytest.fixture
def e2e(
    moto_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[E2E]:
    """Point this test (only) at the moto server; kill every subprocess it started afterwards."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    aws.reset_clients()
    world = E2E(moto_server, request.config.rootpath, tmp_path)
    try:
        yield world
    finally:
        world.stop_all()
        aws.reset_clients()
