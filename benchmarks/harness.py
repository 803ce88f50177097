"""What benchmarks.bench drives: the counting moto server, clients per actor, child consumers."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqsjobs.local import free_port

ROOT = Path(__file__).resolve().parent.parent
REGION = "us-east-1"
SECRET = "testing"

# One access key id per actor, so the server's counts say who made each call.
# moto maps unknown keys to its default account: every actor sees the same queues.
SETUP_KEY = "BENCHSETUP"
MONITOR_KEY = "BENCHMONITOR"
SQSJOBS_DISPATCH_KEY = "BENCHSQSJOBSDISPATCH"
SQSJOBS_WORKER_KEY = "BENCHSQSJOBSWORKER"
BOTO3_DISPATCH_KEY = "BENCHBOTO3DISPATCH"
BOTO3_CONSUMER_KEY = "BENCHBOTO3CONSUMER"
LAMBDA_KEY = "BENCHLAMBDA"


class CountingServer:
    """benchmarks.moto_counting_server in a child process on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(workdir / "moto-server.log", "w")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.moto_counting_server", "--port", str(self.port)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the moto server exited with {self._proc.returncode}; see {self._log.name}")
            try:
                self.counts()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"the moto server did not answer on {self.endpoint} within {timeout:.0f} s")

    def counts(self) -> Counts:
        with urllib.request.urlopen(f"{self.endpoint}/_counts", timeout=10) as response:
            return Counts(json.loads(response.read()))

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/_counts/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(10)
        self._log.close()


@dataclass
class Counts:
    """{access key: {service: {action: [calls, entries]}}} as the counting server reports it."""

    raw: dict[str, dict[str, dict[str, list[int]]]]

    def calls(self, keys: tuple[str, ...], service: str, action: str | None = None) -> int:
        return sum(
            pair[0]
            for key in keys
            for name, pair in self.raw.get(key, {}).get(service, {}).items()
            if action is None or name == action
        )

    def entries(self, keys: tuple[str, ...], service: str, action: str) -> int:
        return sum(self.raw.get(key, {}).get(service, {}).get(action, [0, 0])[1] for key in keys)

    def by_action(self, keys: tuple[str, ...], service: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in keys:
            for name, pair in self.raw.get(key, {}).get(service, {}).items():
                out[name] = out.get(name, 0) + pair[0]
        return dict(sorted(out.items(), key=lambda item: -item[1]))

    def services(self, keys: tuple[str, ...]) -> set[str]:
        return {service for key in keys for service in self.raw.get(key, {})}


def sqs_client(endpoint: str, key: str) -> Any:
    """A plain boto3 SQS client (boto3's defaults) that signs as `key`."""
    import boto3

    return boto3.session.Session().client(
        "sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key, aws_secret_access_key=SECRET
    )


def child_env(endpoint: str, key: str, **extra: str) -> dict[str, str]:
    """The environment of a consumer child: our endpoint and key, no stray AWS or SQSJOBS settings."""
    # Also Powertools' and Lambda's own variables: a developer's shell must not switch on a logger or tracer
    # for one side only.
    stray = ("AWS_", "SQSJOBS_", "POWERTOOLS_", "_X_AMZN_", "LAMBDA_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(stray)}
    env.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ACCESS_KEY_ID=key,
        AWS_SECRET_ACCESS_KEY=SECRET,
        AWS_DEFAULT_REGION=REGION,
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH", "")])),
    )
    env.update(extra)
    return env


@dataclass
class ChildResult:
    """What a consumer child reported, plus the rusage of its whole life (start-up included)."""

    kind: str
    cpu_s: float
    wall_s: float
    jobs: int
    exit: int
    peak_rss_mb: float
    total_cpu_s: float
    stderr_lines: int
    extra: dict[str, Any] = field(default_factory=dict)


class Child:
    """A consumer process; reaped with os.wait4 (never Popen.wait) so its rusage is ours to read."""

    def __init__(
        self,
        kind: str,
        args: list[str],
        env: dict[str, str],
        workdir: Path,
        profile: Path | None = None,
        stoppable: bool = False,
    ) -> None:
        """`python -m benchmarks.consumers KIND ARGS --out FILE`; with `stoppable`, `stop()` writes
        a line on its stdin (for consumers that never stop by themselves)."""
        self.kind = kind
        fd, out = tempfile.mkstemp(prefix=f"{kind}-", suffix=".json", dir=workdir)
        os.close(fd)
        self.out = Path(out)
        self.stderr_path = self.out.with_suffix(".log")
        self._stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in reap()
        cmd = [sys.executable, "-m", "benchmarks.consumers", kind, *args, "--out", str(self.out)]
        if profile is not None:
            cmd += ["--profile", str(profile)]
        self._proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE if stoppable else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )
        self.pid = self._proc.pid
        self.stoppable = stoppable
        self._status: tuple[int, Any] | None = None

    def stop(self) -> None:
        """Tell a stoppable consumer that its work is done (a line on its stdin)."""
        if self.stoppable and self._proc.stdin is not None and not self._proc.stdin.closed:
            try:
                self._proc.stdin.write(b"stop\n")
                self._proc.stdin.close()
            except OSError:
                pass

    def exited(self) -> bool:
        if self._status is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self._status = (status, usage)
        return self._status is not None

    def reap(self, timeout: float) -> ChildResult:
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"{self.kind} consumer did not finish within {timeout:.0f} s; {self._tail()}")
            time.sleep(0.05)
        assert self._status is not None
        status, usage = self._status
        self._proc.returncode = os.waitstatus_to_exitcode(status)
        self._stderr.close()
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            self._proc.stdin.close()
        if self._proc.returncode != 0 or not self.out.stat().st_size:
            raise RuntimeError(f"{self.kind} consumer exited {self._proc.returncode}; {self._tail()}")
        data = json.loads(self.out.read_text())
        with open(self.stderr_path) as f:
            lines = sum(1 for _ in f)
        return ChildResult(
            kind=self.kind,
            cpu_s=data["cpu_s"],
            wall_s=data["wall_s"],
            jobs=data["jobs"],
            exit=data["exit"],
            peak_rss_mb=data["peak_rss_mb"],
            total_cpu_s=usage.ru_utime + usage.ru_stime,
            stderr_lines=lines,
            extra={
                k: data[k]
                for k in ("user_s", "sys_s", "voluntary_switches", "involuntary_switches", "children_cpu_s", "options")
                if k in data
            },
        )

    def kill(self) -> None:
        if not self.exited():
            self._proc.kill()
            _, status, usage = os.wait4(self.pid, 0)
            self._status = (status, usage)
        self._stderr.close()
        if self._proc.stdin is not None and not self._proc.stdin.closed:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()

    def _tail(self) -> str:
        text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        return "stderr tail:\n" + "\n".join(text[-15:]) if text else "no stderr"


class Producer:
    """A peer's producer in its own process (`python -m benchmarks.peers produce`): send(numbers)
    asks it for those jobs and returns the CPU seconds it spent sending them."""

    def __init__(self, peer: str, prefix: str, env: dict[str, str], workdir: Path) -> None:
        self.peer = peer
        self._stderr_path = workdir / f"producer-{peer}-{prefix}.log"
        self._stderr = open(self._stderr_path, "w")  # noqa: SIM115 - closed in close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.peers", "produce", peer, "--prefix", prefix],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._expect("ready")

    def send(self, numbers: range) -> float:
        assert self._proc.stdin is not None
        self._proc.stdin.write(f"{numbers.start} {numbers.stop}\n")
        self._proc.stdin.flush()
        return float(self._expect(None))

    def close(self) -> None:
        if self._proc.poll() is None:
            try:
                assert self._proc.stdin is not None
                self._proc.stdin.write("\n")
                self._proc.stdin.close()
                self._proc.wait(30)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait(10)
        self._stderr.close()

    def _expect(self, word: str | None) -> str:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().strip()
        if not line or (word is not None and line != word):
            self._proc.kill()
            self._proc.wait(10)
            tail = "\n".join(self._stderr_path.read_text(errors="replace").strip().splitlines()[-15:])
            raise RuntimeError(f"{self.peer} producer failed ({line!r}); stderr tail:\n{tail}")
        return line
