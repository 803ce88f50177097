"""moto's SQS long poll made quicker for this project's tests: the suite spent half its time in idle polls.

moto's `ReceiveMessage` with `WaitTimeSeconds` looks at the queue again once a second (a send wakes it at
once), and a poll of a queue that has nothing left (its last message deleted meanwhile) waits out its
whole time. Each `stop_when_empty` worker in a test ends with two such polls of at least a second each
(the worker never asks for less), which made up over half of many test files' time.

`install()` replaces moto's wait with one that looks again every `STEP_S`:

- a message that becomes visible (its visibility timeout or delay over, or the next of its FIFO group
  once the one before is deleted) is returned within `STEP_S`, as SQS returns it;
- a poll of a queue that holds nothing at all (no message visible, in flight or delayed) ends after
  `EMPTY_S`. This is where it differs from SQS, on purpose: SQS answers an empty queue's long poll only
  when its wait time is over. So in tests an idle worker's receives come ~10 times a second, and a
  receive count cannot tell a long-polling worker from a hot loop: what guards that is
  tests/unit/test_idle_worker_long_polls.py, which checks the WaitTimeSeconds the worker asks for.

A queue with messages in flight keeps its wait until it holds nothing. Used by tests/conftest.py
(in-process moto) and the moto server of the e2e tests (`python -m tests.moto_polls --port N`).
"""

from __future__ import annotations

import argparse
import inspect
import re
from typing import Any

#: How often a waiting poll looks at the queue again.
STEP_S = 0.05
#: How long a poll of a queue that holds nothing waits for a send before it answers "no message".
EMPTY_S = 0.1

_installed = False


def install() -> None:
    """Patch moto's SQS backend (in this process); idempotent."""
    global _installed
    if _installed:
        return
    from moto.core.utils import unix_time
    from moto.sqs.models import Queue, SQSBackend

    # The wait below reads moto internals: a moto that renamed them must fail here, not in every poll.
    original = SQSBackend.receive_message
    params = list(inspect.signature(original).parameters)
    queue_init = inspect.getsource(Queue.__init__)
    if params[1:4] != ["queue_name", "count", "wait_seconds_timeout"] or not all(
        re.search(rf"self\.{name}\b", queue_init) for name in ("_messages", "_messages_lock")
    ):
        raise RuntimeError(f"tests/moto_polls.py does not know this moto's SQS backend ({params[:5]}); update it")

    def receive_message(
        self: Any, queue_name: str, count: int, wait_seconds_timeout: int, *args: Any, **kwargs: Any
    ) -> Any:
        got = original(self, queue_name, count, 0, *args, **kwargs)
        if got or not wait_seconds_timeout:
            return got
        queue = self.get_queue(queue_name)
        start = unix_time()
        deadline = start + wait_seconds_timeout
        while True:
            now = unix_time()
            if now >= deadline or (not queue._messages and now >= start + EMPTY_S):
                return got
            with queue._messages_lock:  # a send notifies it
                queue._messages_lock.wait(min(STEP_S, deadline - now))
            got = original(self, queue_name, count, 0, *args, **kwargs)
            if got:
                return got

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]
    _installed = True


def main(argv: list[str] | None = None) -> None:
    """moto's server with `install()` applied, for the e2e tests' moto server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    install()
    from moto.server import main as moto_main

    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
