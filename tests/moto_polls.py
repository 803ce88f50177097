"""moto's SQS long poll, made to end when SQS's would: the test suite spent half its time in empty polls.

moto's `ReceiveMessage` with `WaitTimeSeconds` sleeps on a condition that only a *send* wakes: a message
whose visibility timeout runs out during the poll is not returned until the poll's full wait is over,
and a poll of a queue that has nothing left (its last message deleted meanwhile) waits out its time
for nothing. Each `stop_when_empty` worker in a test ends with such polls, at least a second each
(the worker never asks for less), which made up over half of many test files' time.

`install()` replaces moto's wait with one that looks again every `STEP_S`:

- a message that becomes visible (its visibility timeout or delay over) is returned at once, as SQS does;
- a poll of a queue that holds nothing at all (no message visible, in flight or delayed) ends after
  `EMPTY_S`: the only thing that could end it is a send, which it never misses, since a send wakes it
  and the worker polls again at once.

Receives of a queue with messages in flight and none visible still wait their full time, so the
number of receives a busy worker makes is unchanged (tests count them). Used by tests/conftest.py
(in-process moto) and the moto server of the e2e tests (`python -m tests.moto_polls --port N`).
"""

from __future__ import annotations

import argparse
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
    from moto.sqs.models import SQSBackend

    original = SQSBackend.receive_message

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
