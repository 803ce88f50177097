"""`sqsjobs work`: run a worker (the long-running poller)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Annotated

import typer

from ..app import App
from ..errors import ConfigurationError
from ..worker import Worker, WorkerOptions
from .common import AppOption, QueueOption, build_app, split

EXAMPLES = """[bold]Examples[/]

  sqsjobs work --app myapp.jobs --queue high,default --concurrency 8

  sqsjobs work -a myapp.jobs --stop-when-empty        [dim]# drain, then exit 0[/]

  sqsjobs work -a myapp.jobs --max-jobs 1000 --memory 512   [dim]# recycle the process[/]

  sqsjobs work -a myapp.jobs --async --concurrency 100     [dim]# async def handle jobs on one event loop[/]

  sqsjobs work -a myapp.jobs --executor process -c 4       [dim]# CPU-bound jobs in child processes[/]

  sqsjobs work -a myapp.jobs --pools pools.toml    [dim]# several pools in one process (docs/worker.md)[/]

  sqsjobs work -a myapp.jobs --schedule     [dim]# and dispatch the schedules' ticks (docs/scheduler.md)[/]

SIGTERM or Ctrl-C: stop receiving, hand held messages back at once (no try spent), finish running jobs, exit 0.
Exit codes: 0 stopped, 1 a job could not be interrupted after its timeout, 2 configuration error,
3 AWS unreachable or no credentials/region, 12 memory limit reached.
"""


def work(
    app: AppOption = None,
    queue: QueueOption = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Jobs run at once.")] = 1,
    prefetch: Annotated[
        int | None,
        typer.Option(
            min=0,
            help="Extra messages held so the next job starts sooner. Default: 10 - concurrency (every receive "
            "carries 10); 0 for long jobs shared by many workers.",
            show_default=False,
        ),
    ] = None,
    sleep: Annotated[float, typer.Option(min=1, max=20, help="Long-poll seconds when every queue is empty.")] = 10,
    tries: Annotated[int | None, typer.Option(min=1, help="Tries for jobs that do not set their own.")] = None,
    timeout: Annotated[
        float | None, typer.Option(min=1, help="Seconds a job may run when it does not set its own.")
    ] = None,
    timeout_grace: Annotated[
        float,
        typer.Option(
            min=1,
            help="Seconds a timed-out job gets to stop once interrupted (thread executor and --async; the process "
            "executor kills its child instead); past them the worker stops taking work and exits 1, for its "
            "supervisor to start a fresh one.",
        ),
    ] = 10.0,
    memory: Annotated[int | None, typer.Option(min=16, help="Stop (exit 12) above this many MB of RSS.")] = None,
    max_jobs: Annotated[int | None, typer.Option(min=1, help="Stop after this many jobs.")] = None,
    max_time: Annotated[float | None, typer.Option(min=1, help="Stop after this many seconds.")] = None,
    stop_when_empty: Annotated[bool, typer.Option(help="Stop once every queue is empty.")] = False,
    once: Annotated[bool, typer.Option(help="Run a single job, then stop.")] = False,
    async_: Annotated[
        bool, typer.Option("--async", help="Run jobs as tasks on one asyncio event loop (async def handle).")
    ] = False,
    executor: Annotated[
        str,
        typer.Option(
            help="thread (interrupted at the timeout) or process (a child process, killed at the timeout: "
            "CPU-bound jobs, code that ignores interrupts)."
        ),
    ] = "thread",
    log_format: Annotated[str | None, typer.Option(help="text or json (SQSJOBS_LOG_FORMAT).")] = None,
    pools: Annotated[
        str | None,
        typer.Option(
            help="A TOML file of worker pools (queues, concurrency, timeout... per pool), run in one process "
            "instead of the options above.",
            show_default=False,
        ),
    ] = None,
    schedule: Annotated[
        bool,
        typer.Option(
            "--schedule",
            help="Also run the schedules SQSJOBS_APP declares (a pass every minute; any number of workers agree).",
        ),
    ] = False,
) -> None:
    """Run jobs from one or more queues until stopped."""
    application = build_app(app, tries=tries, timeout=timeout, log_format=log_format)
    if pools is not None or (application.settings.pools and not queue):
        from ..worker.pools import load_pools, parse_pools, run_pools

        per_pool = [concurrency != 1, prefetch is not None, async_, executor != "thread", once, sleep != 10]
        per_pool += [memory is not None, max_jobs is not None, max_time is not None, timeout_grace != 10.0]
        if queue or any(per_pool):
            raise ConfigurationError(
                "--pools takes each pool's queues, concurrency, prefetch, sleep, memory, max_jobs, max_time, "
                "timeout_grace, async and executor from its file (or SQSJOBS_POOLS); drop those options"
            )
        found = load_pools(pools) if pools is not None else parse_pools(application.settings.pools or "")
        raise typer.Exit(run_pools(application, found, stop_when_empty=stop_when_empty))
    options = WorkerOptions(
        queues=split(queue) or list(application.settings.queues) or [application.settings.default_queue],
        concurrency=concurrency,
        prefetch=prefetch,
        sleep=sleep,
        timeout=timeout,
        timeout_grace=timeout_grace,
        memory_mb=memory,
        max_jobs=max_jobs,
        max_time=max_time,
        stop_when_empty=stop_when_empty,
        once=once,
        event_loop=async_,
        executor=executor,
    )
    with _scheduler(application, schedule):
        code = Worker(application, options).run()
    raise typer.Exit(code)


@contextlib.contextmanager
def _scheduler(application: App, wanted: bool) -> Iterator[None]:
    """`--schedule`: the scheduler's passes on a thread of this worker, stopped with it."""
    if not wanted:
        yield
        return
    import os
    import socket

    from ..scheduling import Scheduler

    if not len(application.schedules):
        raise ConfigurationError("--schedule: no schedules are declared; is SQSJOBS_APP (--app) the module with them?")
    stop = threading.Event()
    scheduler = Scheduler(application, owner=f"{socket.gethostname()}:{os.getpid()}")
    thread = threading.Thread(target=scheduler.run_forever, args=(stop,), name="sqsjobs-scheduler", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(30)
