"""Jobs for the chain/batch crash tests (`sqsjobs work --app tests.e2e.e2e_workflow_jobs`).

A `Step` appends `<tag> <attempt> <job_id>` to `$E2E_DIR/steps.log`, so a test counts runs by tag
(a batch callback's job id is not known in advance). It can also kill its own worker with SIGKILL
right after its `processed` event: the chain/batch work of its success is done by then, and its
message is not deleted yet (the poller deletes later, in batches). That is the crash window the
"sent once, counted once" promises are about.

Arming: `$E2E_DIR/crash-once` holds a Step's tag, or `last-member` for whichever batch member
runs while it is the only one pending. The listener removes the file before it kills, so the
redelivered run does not crash again.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from sqsjobs import Job
from sqsjobs.events import JobEvent
from tests.e2e.e2e_jobs import e2e_dir

LAST_MEMBER = "last-member"

#: Job ids, in this worker process, whose `processed` event kills it.
_armed: set[str] = set()
_listening: set[int] = set()


def crash_file(directory: Path) -> Path:
    return directory / "crash-once"


def steps(directory: Path) -> list[tuple[str, int]]:
    """(tag, attempt) of every Step run so far in `directory` (a test's E2E_DIR), in the order they ran."""
    path = directory / "steps.log"
    if not path.exists():
        return []
    return [(tag, int(attempt)) for tag, attempt, _ in (line.split() for line in path.read_text().splitlines())]


def _kill_after_success(event: JobEvent) -> None:
    if event.kind != "processed" or event.job_id not in _armed:
        return
    try:
        os.remove(crash_file(e2e_dir()))
    except FileNotFoundError:
        return
    os.kill(os.getpid(), signal.SIGKILL)


class Step(Job, name="e2e.workflow.step"):
    """Records its run; kills the worker right after its success when `crash-once` names it."""

    tries = 3  # the redelivery after the kill is an attempt too

    tag: str

    def handle(self) -> None:
        with open(e2e_dir() / "steps.log", "a") as f:
            f.write(f"{self.tag} {self.attempts} {self.job_id}\n")
        try:
            target = crash_file(e2e_dir()).read_text().strip()
        except FileNotFoundError:
            return
        if target == self.tag or (target == LAST_MEMBER and (b := self.batch) is not None and b.pending == 1):
            assert self._ctx is not None and self.job_id is not None
            app = self._ctx.app
            if id(app) not in _listening:
                app.events.listen(_kill_after_success)
                _listening.add(id(app))
            _armed.add(self.job_id)
