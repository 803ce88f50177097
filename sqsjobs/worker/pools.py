"""Worker pools: several pollers in one process, each with its queues, concurrency and timeout.

Why: the topology teams run (high / default / low / bulk / long, like Horizon's supervisors) should
not need one container per pool. `sqsjobs work --pools pools.toml` starts one Worker per pool, each
with its own App (so a pool's `timeout` is that pool's default, never another's), its own lanes,
heartbeat and beat in `sqsjobs workers`. SIGTERM stops them all the same way one worker stops.

    [pools.high]
    queues = ["high"]
    concurrency = 10
    timeout = 30

    [pools.bulk]
    queues = ["bulk", "low"]
    concurrency = 2
    timeout = 900
    executor = "process"
"""

from __future__ import annotations

import json
import signal
import threading
import tomllib
from pathlib import Path
from types import FrameType
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..app import App
from ..errors import ConfigurationError
from .control import EXIT_OK
from .options import WorkerOptions
from .poller import Worker


class Pool(BaseModel):
    """One pool of a pools file; fields are `sqsjobs work`'s options."""

    model_config = ConfigDict(extra="forbid")

    queues: list[str] = Field(min_length=1)
    concurrency: int = Field(default=1, ge=1, le=1000)
    prefetch: int | None = Field(default=None, ge=0, le=1000)
    timeout: float | None = Field(default=None, gt=0, le=43200)
    #: At least 1 s, as on the command line: with none, a job is called stuck before it could see its interrupt.
    timeout_grace: float = Field(default=10.0, ge=1)
    tries: int | None = Field(default=None, ge=1, le=1000)
    sleep: float = Field(default=10, ge=1, le=20)
    memory: int | None = Field(default=None, ge=16)
    max_jobs: int | None = Field(default=None, ge=1)
    max_time: float | None = Field(default=None, ge=1)
    executor: Literal["thread", "process"] = "thread"
    event_loop: bool = Field(default=False, alias="async")


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pools: dict[str, Pool] = Field(min_length=1)


def load_pools(path: str | Path) -> dict[str, Pool]:
    """The pools of a TOML file, validated; every error names the file and the key."""
    where = Path(path)
    try:
        data = tomllib.loads(where.read_text())
    except OSError as exc:
        raise ConfigurationError(f"--pools {where}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"--pools {where}: not valid TOML ({exc})") from None
    return _validated(data, f"--pools {where}")


def parse_pools(text: str) -> dict[str, Pool]:
    """SQSJOBS_POOLS: the same pools as a JSON object (`{"high": {"queues": ["high"], ...}}`), for a
    container whose command cannot carry a file (the template's WorkerPools)."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigurationError(f"SQSJOBS_POOLS: not valid JSON ({exc})") from None
    return _validated({"pools": data}, "SQSJOBS_POOLS")


def _validated(data: object, where: str) -> dict[str, Pool]:
    try:
        return _File.model_validate(data).pools
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
        raise ConfigurationError(f"{where}: {problems}") from None


def run_pools(base: App, pools: dict[str, Pool], *, stop_when_empty: bool = False, install_signals: bool = True) -> int:
    """Run every pool until stopped; the exit code is the first non-zero one of a pool (else 0)."""
    workers: dict[str, Worker] = {}
    for name, pool in pools.items():
        overrides = {k: v for k, v in {"timeout": pool.timeout, "tries": pool.tries}.items() if v is not None}
        app = App(settings=base.settings.model_copy(update=overrides), registry=base.registry)
        app.load_jobs()
        options = WorkerOptions(
            queues=pool.queues,
            concurrency=pool.concurrency,
            prefetch=pool.prefetch,
            sleep=pool.sleep,
            timeout=pool.timeout,
            timeout_grace=pool.timeout_grace,
            memory_mb=pool.memory,
            max_jobs=pool.max_jobs,
            max_time=pool.max_time,
            stop_when_empty=stop_when_empty,
            event_loop=pool.event_loop,
            executor=pool.executor,
        )
        workers[name] = Worker(app, options)
    codes: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name: str, worker: Worker) -> None:
        code = 1
        try:
            code = codes[name] = worker.run(install_signals=False)
        except BaseException as exc:
            # Raised again on the main thread, where the CLI gives it its one error line and exit code;
            # raising it here too would print a traceback above that line (threading's excepthook).
            errors.append(exc)
        finally:
            if code != EXIT_OK:
                # A pool that must be replaced (a wedged job, a memory limit, a config error) ends the
                # process: its supervisor restarts every pool, as it would one worker.
                for other in workers.values():
                    other.stop(f"pool {name} stopped with exit {code}")

    if install_signals and threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            for worker in workers.values():
                worker.stop(signal.Signals(signum).name)

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    threads = [threading.Thread(target=run, args=item, name=f"sqsjobs-pool-{item[0]}") for item in workers.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # short joins: the main thread must stay free to take signals
    if errors:
        raise errors[0]  # a queue without a DLQ, AWS unreachable: exit 2 or 3, as one worker would
    return next((code for code in codes.values() if code != EXIT_OK), EXIT_OK)
