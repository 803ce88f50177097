"""The thread job loop: `concurrency` threads, each taking the next message its lane allows.

Each thread runs one message at a time through the runner core under the timeout interrupt and
hands the decision to the applier; it never decides anything itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .. import context
from ..connections.base import Connection, ReceivedMessage
from ..runner import Call, Runner
from .apply import Applier
from .lanes import Lanes
from .timeouts import TimeoutEnforcer

log = logging.getLogger("sqsjobs.worker")


class ThreadJobs:
    """Job threads (daemons: a thread stuck in C must not keep the process alive at exit)."""

    def __init__(
        self,
        runner: Runner,
        connection: Connection,
        lanes: Lanes,
        applier: Applier,
        enforcer: TimeoutEnforcer,
        concurrency: int,
        call: Call | None = None,
    ) -> None:
        self._runner = runner
        #: Set with the process executor: it runs `handle()` in a child and kills it at the timeout
        #: itself, so this thread is never interrupted (and never wedged).
        self._call = call
        self._connection = connection
        self._lanes = lanes
        self._applier = applier
        self._enforcer = enforcer
        self._threads = [
            threading.Thread(target=self.loop, name=f"sqsjobs-job-{index}", daemon=True) for index in range(concurrency)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self, abandoned: Callable[[threading.Thread], bool]) -> None:
        """Wait for every thread, except one `abandoned` says is stuck in a job that ignored its timeout."""
        for thread in self._threads:
            while thread.is_alive() and not abandoned(thread):
                thread.join(0.2)

    def loop(self) -> None:
        """Run messages until the lanes hand out no more (the worker stops, or `--max-jobs` started).

        The worker's app is the current one here: a job that dispatches another (`Other().dispatch()`)
        sends it with the app that runs it, not the process default (a thread starts with no context)."""
        context.activate(self._runner.app)
        while (message := self._lanes.take()) is not None:
            self.run_one(message)

    def run_one(self, message: ReceivedMessage) -> None:
        """Run one message on the calling thread and apply its decision."""
        try:
            guard = None if self._call is not None else self._enforcer.guard_for(message)
            decision = self._runner.process(message, self._connection, guard, self._call)
        except BaseException:
            # The runner never raises for a job's own errors; this is our bug or an
            # interpreter exit. Leave the message to its visibility timeout.
            log.exception("runner crashed on message %s; it will be redelivered", message.message_id)
            self._applier.crashed(message)
            return
        self._applier.done(message, decision)
