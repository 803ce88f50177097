"""Jobs for the process executor's tests: a module the job processes import, as they would SQSJOBS_APP."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqsjobs import Job, PermanentError
from sqsjobs.triage import discard


class Spin(Job, name="executor.spin"):
    """CPU-bound and deaf: swallows the interrupt it is sent, so only SIGKILL ends it."""

    def handle(self) -> None:
        while True:
            with contextlib.suppress(BaseException):
                while True:
                    pass


class Nap(Job, name="executor.nap"):
    """Blocked in C (a sleep), but lets the interrupt through: its `finally` runs before the process ends."""

    out: str

    def handle(self) -> None:
        try:
            time.sleep(3600)
        finally:
            Path(self.out).write_text("cleaned up")


class Broken(Job, name="executor.broken"):
    invoice_id: int

    def handle(self) -> None:
        raise ValueError(f"no invoice {self.invoice_id}")


class Refused(Job, name="executor.refused"):
    def handle(self) -> None:
        raise PermanentError("card declined")


class Picky(Job, name="executor.picky"):
    fail_on = (KeyError,)

    def handle(self) -> None:
        raise KeyError("sku-9")


class Later(Job, name="executor.later"):
    def handle(self) -> None:
        self.release(17)


class OutOfStock(Job, name="executor.out-of-stock"):
    def handle(self) -> None:
        self.fail("out of stock")


class Dies(Job, name="executor.dies"):
    def handle(self) -> None:
        os._exit(3)


class Echo(Job, name="executor.echo"):
    """Writes down what it saw in its process, for the test to compare with what was sent."""

    out: str
    when: datetime | None = None
    amounts: list[Decimal] = []
    note: str = ""
    meta: dict[str, Any] = {}
    probe: str = ""

    async def handle(self) -> None:
        ctx = self._ctx
        seen = {
            "payload": self.model_dump(mode="json"),
            "attempts": self.attempts,
            "job_id": self.job_id,
            "pid": os.getpid(),
            "probe_imported": bool(self.probe) and self.probe in sys.modules,
            "app_queue": ctx.app.settings.default_queue if ctx and ctx.app else None,
        }
        Path(self.out).write_text(json.dumps(seen))


class RowGone(Exception):
    """Raised in the child: only its name comes back to the worker."""


class Gone(Job, name="executor.gone"):
    """Its triage rule names an exception the worker only knows by name (the job runs in a child)."""

    tries = 1
    triage = [discard(RowGone)]
    other: bool = False

    def handle(self) -> None:
        if self.other:
            raise KeyError("another failure")
        raise RowGone("order 7 was deleted")
