"""An idle worker long-polls: on SQS every empty receive is billed, so a worker that stopped waiting
(WaitTimeSeconds 0) would cost money in a hot loop. In this project's tests moto ends the poll of an
empty queue early (tests/moto_polls.py), so a receive count cannot tell the two apart; the request can.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from sqsjobs import App
from sqsjobs.worker import Worker, WorkerOptions
from tests.helpers import sqs_requests, wait_for


def test_the_worker_waits_at_least_a_second_on_an_idle_queue(sqs_app: App) -> None:
    """Every receive of a worker that finds its queue empty is a long poll of at least a second."""
    receives = sqs_requests("ReceiveMessage")
    assert Worker(sqs_app, WorkerOptions(sleep=1, stop_when_empty=True)).run(install_signals=False) == 0
    assert receives and all(call["WaitTimeSeconds"] >= 1 for call in receives)


def _wakes(thread: threading.Thread) -> int:
    """How often the kernel has put `thread` back to sleep at its own request (it waited for something)."""
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return int(status.split("\nvoluntary_ctxt_switches:")[1].split()[0])


@pytest.mark.parametrize("event_loop", [False, True], ids=["threads", "async"])
def test_an_idle_workers_own_threads_sleep_instead_of_ticking(sqs_app: App, event_loop: bool) -> None:
    """The heartbeat, the deleter and the timeout watchdog each woke ten times a second whether or not
    they had anything to do: thirty wake-ups a second for an idle worker, more CPU than its long polls.
    They now sleep until something is due (at most a second at a time). The `--async` loop kept a beat
    ten times a second too, read only when a job ignored its timeout; it is now asked then instead."""
    worker = Worker(sqs_app, WorkerOptions(sleep=1, event_loop=event_loop))
    running = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    running.start()
    try:
        names = ("sqsjobs-heartbeat", "sqsjobs-deleter", "sqsjobs-watchdog", *(("sqsjobs-loop",) if event_loop else ()))
        # A thread is listed from `start()` on, but its kernel id is known only once it runs: wait for both.
        threads = wait_for(
            lambda: (
                (found := {t.name: t for t in threading.enumerate() if t.name in names}).keys() == set(names)
                and all(t.native_id is not None for t in found.values())
                and found
            ),
            what="the worker's threads",
        )
        before = {name: _wakes(thread) for name, thread in threads.items()}
        start = time.monotonic()
        wait_for(lambda: time.monotonic() - start >= 3, timeout=10, what="three idle seconds")
        woke = {name: _wakes(thread) - before[name] for name, thread in threads.items()}
    finally:
        worker.stop()
        running.join(30)
    assert all(count <= 12 for count in woke.values()), f"wake-ups in 3 idle seconds: {woke} (a tick would be ~30)"
