"""The soak driver: a moto server, three workers that get SIGKILLed, waves of jobs, then the checks.
The last `async_workers` of them (one by default) run `sqsjobs work --async`.

Everything AWS runs in subprocesses: moto's HTTP server, and `sqsjobs work` pollers that import
`sqsjobs.testing.boot` (fault injection) when `fault_rate` > 0. The driver dispatches without
faults, keeps the queue shallow (moto's receive cost grows with queue depth), kills a random
worker every `kill_every` seconds (± 50 %) and starts it again at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqsjobs import App, aws
from sqsjobs.provisioning import provision
from tests.helpers import wait_for

from . import plan as planning

ROOT = Path(__file__).resolve().parents[2]
JOBS_MODULE = "tests.soak.jobs"
QUEUE = "default"
FAULTS_FILES = (ROOT / "sqsjobs" / "testing" / "faults.py", ROOT / "sqsjobs" / "testing" / "boot.py")


def faults_available() -> bool:
    return all(path.exists() for path in FAULTS_FILES)


@dataclass
class Options:
    jobs: int = 10_000
    workers: int = 3
    kill_every: float = 5.0
    fault_rate: float | None = None  # None: 0.1 when sqsjobs/testing/faults.py exists, else 0
    seed: int = 1
    timeout: float = 1800.0
    concurrency: int = 4
    #: How many of the workers (the last slots) run `--async`: jobs as tasks on one event loop.
    async_workers: int = 1
    threshold: int = 4096
    max_depth: int = 60
    visibility: int = 5
    workdir: Path | None = None
    quiet: bool = False
    ddb_lock: bool = True
    #: Kills go on this long after the last dispatch, then stop, so the tail (the leases a killed run
    #: leaves: an idempotency key "in progress" for timeout + 60 s, a "sending" mark for 60 s) ends.
    kill_grace: float = 15.0

    def effective_fault_rate(self) -> float:
        if self.fault_rate is not None:
            return self.fault_rate
        return 0.1 if faults_available() else 0.0


@dataclass
class WorkerProc:
    slot: int
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    started: float = field(default_factory=time.time)


@dataclass
class RunData:
    """What the run produced, for the checks."""

    options: Options
    fault_rate: float
    workdir: Path
    markers: Path
    units: list[planning.Unit]
    app: App
    started: float
    finished: float = 0.0
    drained: bool = False
    kills: list[dict[str, Any]] = field(default_factory=list)
    exits: list[dict[str, Any]] = field(default_factory=list)
    worker_logs: list[Path] = field(default_factory=list)
    endpoint: str = ""
    prefix: str = ""


def _answers(endpoint: str) -> bool:
    try:
        urllib.request.urlopen(endpoint + "/", timeout=1).close()
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False
    return True


@contextlib.contextmanager
def moto_server(workdir: Path, ddb_lock: bool = True) -> Iterator[str]:
    """tests/soak/moto_server.py (moto's server, DynamoDB serialised unless `ddb_lock` is False).

    The server binds a port of the system's choosing and names it: a port picked here and bound there
    could be taken in between by another xdist worker's server, and the soak would talk to that one."""
    log = workdir / "moto-server.log"
    cmd = [sys.executable, "-m", "tests.soak.moto_server", *([] if ddb_lock else ["--no-ddb-lock"])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    ready = re.compile(rb"^ready (http://127\.0\.0\.1:\d+)$", re.MULTILINE)
    found: list[str] = []

    def started() -> bool:
        match = ready.search(log.read_bytes())
        if match and not found:
            found.append(match.group(1).decode())
        return proc.poll() is not None or bool(found)

    try:
        wait_for(started, timeout=30, what="the moto server")
        if proc.poll() is not None or not found:
            raise RuntimeError(f"the moto server did not start; see {log}")
        endpoint = found[0]
        wait_for(lambda: proc.poll() is not None or _answers(endpoint), timeout=30, what="the moto server's answer")
        if proc.poll() is not None:
            raise RuntimeError(f"the moto server stopped; see {log}")
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def pointed_at(endpoint: str) -> Iterator[None]:
    """This process's boto3 clients talk to `endpoint` (restored afterwards)."""
    wanted = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    aws.reset_clients()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        aws.reset_clients()


class Soak:
    def __init__(self, options: Options) -> None:
        self.o = options
        self.rng = random.Random(options.seed)
        self.fault_rate = options.effective_fault_rate()
        if self.fault_rate > 0 and not faults_available():
            raise SystemExit("--fault-rate > 0 needs sqsjobs/testing/faults.py and boot.py")
        self.workdir = options.workdir or Path(tempfile.mkdtemp(prefix="sqsjobs-soak-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.markers = self.workdir / "markers"
        self.markers.mkdir(exist_ok=True)
        self.logs = self.workdir / "logs"
        self.logs.mkdir(exist_ok=True)
        self.prefix = f"soak{uuid.uuid4().hex[:8]}-"
        self.workers: list[WorkerProc] = []
        self.kills: list[dict[str, Any]] = []
        self.exits: list[dict[str, Any]] = []
        self.worker_logs: list[Path] = []
        self._lock = threading.Lock()
        self._stop_killing = threading.Event()
        self._spawned = 0
        self._all_dispatched_at: float | None = None

    def say(self, text: str) -> None:
        if not self.o.quiet:
            print(f"[soak {time.strftime('%H:%M:%S')}] {text}", flush=True)

    # -- workers -----------------------------------------------------------------------
    def asynchronous(self, slot: int) -> bool:
        """Whether the worker in `slot` runs `--async` (the last `async_workers` slots)."""
        return slot >= self.o.workers - self.o.async_workers

    def worker_env(self, endpoint: str, slot: int) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SQSJOBS_"))}
        env.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="testing",
            AWS_SECRET_ACCESS_KEY="testing",
            AWS_DEFAULT_REGION="us-east-1",
            SQSJOBS_QUEUE_PREFIX=self.prefix,
            SQSJOBS_QUEUES=QUEUE,
            SQSJOBS_TABLE=f"{self.prefix}table",
            SQSJOBS_BUCKET=f"{self.prefix}payloads",
            # One worker sends every body it dispatches (next links, callbacks) through S3.
            SQSJOBS_PAYLOAD_THRESHOLD="always" if slot == 0 else str(self.o.threshold),
            SQSJOBS_LOG_FORMAT="json",
            # Every worker runs on this host's one clock: no skew to allow for. (A killed worker's chain link
            # or idempotent job is taken over after its timeout plus the skew; 60 s each would only slow the run.)
            SQSJOBS_CLOCK_SKEW="1",
            # The longest soak job takes 1 s: a 10 s default timeout lets a killed run's claim be taken over
            # after 11 s instead of 2 minutes, so the run drains in its usual time.
            SQSJOBS_TIMEOUT="10",
            SOAK_DIR=str(self.markers),
            # Written into every start marker: the checks tell the workers' kinds apart by it, not by pid
            # (a soak kills and restarts a hundred workers, and the kernel reuses pids).
            SOAK_WORKER="async" if self.asynchronous(slot) else "threads",
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            PYTHONUNBUFFERED="1",
        )
        if faults_available():  # the strict layer also validates parameters (production clients skip it)
            env["SQSJOBS_TEST_STRICT"] = "1"
        if self.fault_rate > 0:
            env["SQSJOBS_TEST_FAULTS"] = (
                f"rate={self.fault_rate};services=sqs,dynamodb,s3;kinds=throttle,500,reset,after,slow;"
                f"seed={self.o.seed * 100 + self._spawned}"
            )
        return env

    def spawn(self, endpoint: str, slot: int) -> WorkerProc:
        self._spawned += 1
        boot = "import sqsjobs.testing.boot; " if faults_available() else ""
        cmd = [sys.executable, "-c", f"{boot}from sqsjobs.cli import main; main()"]
        cmd += ["work", "--app", JOBS_MODULE, "--sleep", "1", "--concurrency", str(self.o.concurrency)]
        if self.asynchronous(slot):
            cmd.append("--async")
        err = self.logs / f"worker-{self._spawned:03d}-slot{slot}.err"
        with open(err, "wb") as stderr:
            popen = subprocess.Popen(
                cmd, cwd=ROOT, env=self.worker_env(endpoint, slot), stdout=subprocess.DEVNULL, stderr=stderr
            )
        final = err.with_name(f"worker-{self._spawned:03d}-slot{slot}-pid{popen.pid}.err")
        err.rename(final)  # the open file follows the rename
        self.worker_logs.append(final)
        return WorkerProc(slot, popen, final)

    def killer(self, endpoint: str) -> None:
        next_kill = time.monotonic() + self.o.kill_every * self.rng.uniform(0.5, 1.5)
        while not self._stop_killing.wait(0.2):
            with self._lock:
                for i, w in enumerate(self.workers):
                    code = w.popen.poll()
                    if code is not None:  # exited on its own: that is news
                        self.exits.append(
                            {"pid": w.popen.pid, "code": code, "at": time.time(), "log": str(w.stderr_path)}
                        )
                        self.say(f"worker pid {w.popen.pid} exited with {code} on its own; restarting")
                        self.workers[i] = self.spawn(endpoint, w.slot)
                done_at = self._all_dispatched_at
                killing = done_at is None or time.monotonic() < done_at + self.o.kill_grace
                if killing and self.o.kill_every > 0 and time.monotonic() >= next_kill and self.workers:
                    i = self.rng.randrange(len(self.workers))
                    victim = self.workers[i]
                    victim.popen.send_signal(signal.SIGKILL)
                    victim.popen.wait()
                    self.kills.append({"pid": victim.popen.pid, "at": time.time(), "slot": victim.slot})
                    self.workers[i] = self.spawn(endpoint, victim.slot)
                    next_kill = time.monotonic() + self.o.kill_every * self.rng.uniform(0.5, 1.5)

    def stop_workers(self) -> None:
        with self._lock:
            for w in self.workers:
                if w.popen.poll() is None:
                    w.popen.send_signal(signal.SIGTERM)
            for w in self.workers:
                try:
                    w.popen.wait(20)
                except subprocess.TimeoutExpired:
                    w.popen.kill()
                    w.popen.wait()
                    self.exits.append({"pid": w.popen.pid, "code": "no exit 20 s after SIGTERM", "at": time.time()})

    # -- the run -----------------------------------------------------------------------
    def run(self) -> RunData:
        units = planning.make_plan(self.o.jobs, self.o.seed)
        total = sum(u.size for u in units)
        self.say(
            f"{total} jobs in {len(units)} units; {self.o.workers} workers x {self.o.concurrency} threads "
            f"({min(self.o.async_workers, self.o.workers)} of them --async); "
            f"kill every ~{self.o.kill_every}s; faults {self.fault_rate:.0%}; workdir {self.workdir}"
        )
        with moto_server(self.workdir, self.o.ddb_lock) as endpoint, pointed_at(endpoint):
            app = App(
                connection="sqs",
                queue_prefix=self.prefix,
                queues=[QUEUE],
                table=f"{self.prefix}table",
                bucket=f"{self.prefix}payloads",
                payload_threshold=self.o.threshold,
                visibility_timeout=self.o.visibility,
            )
            provision(app, [QUEUE])
            data = RunData(self.o, self.fault_rate, self.workdir, self.markers, units, app, time.time())
            data.endpoint, data.prefix = endpoint, self.prefix
            sqs = aws.client("sqs")
            url = sqs.get_queue_url(QueueName=f"{self.prefix}{QUEUE}")["QueueUrl"]
            with self._lock:
                self.workers = [self.spawn(endpoint, slot) for slot in range(self.o.workers)]
            killer = threading.Thread(target=self.killer, args=(endpoint,), daemon=True)
            killer.start()
            deadline = time.monotonic() + self.o.timeout
            try:
                data.drained = self._drive(app, units, sqs, url, deadline)
            finally:
                self._stop_killing.set()
                killer.join(10)
                self.stop_workers()
            data.finished = time.time()
            data.kills, data.exits, data.worker_logs = self.kills, self.exits, self.worker_logs
            from .checks import check

            return check(data, self.say)

    def _drive(self, app: App, units: list[planning.Unit], sqs: Any, url: str, deadline: float) -> bool:
        pending = list(reversed(units))
        sent = 0
        empty_looks = 0
        last_report = 0.0
        with app.activate():
            while time.monotonic() < deadline:
                depth = _depth(sqs, url)
                if pending:
                    budget = self.o.max_depth - depth
                    while pending and budget > 0:
                        unit = pending.pop()
                        unit.dispatched_at = time.time()
                        try:
                            planning.dispatch(app, unit, sqs, url)
                        except Exception as exc:  # the driver has no faults: this is news
                            unit.result["dispatch_error"] = f"{type(exc).__name__}: {exc}"
                        budget -= unit.size
                        sent += unit.size
                    if not pending:
                        self._all_dispatched_at = time.monotonic()
                    empty_looks = 0
                elif depth == 0:
                    empty_looks += 1
                    if empty_looks >= 3:
                        self.say(f"queue drained; {sent} jobs dispatched")
                        return True
                else:
                    empty_looks = 0
                if time.monotonic() - last_report > 15:
                    last_report = time.monotonic()
                    self.say(f"dispatched {sent}, queue depth {depth}, kills {len(self.kills)}")
                time.sleep(0.25 if pending else 1.0)
        self.say(f"timeout: queue not drained ({len(pending)} units not dispatched)")
        return False


def _depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(v) for v in attrs.values())


def run(options: Options) -> Any:
    return Soak(options).run()


def dump(result: Any, path: Path) -> None:
    path.write_text(json.dumps({"figures": result.figures, "violations": result.violations}, indent=2, default=str))
