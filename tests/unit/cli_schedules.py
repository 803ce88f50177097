"""An SQSJOBS_APP module that declares one schedule, for the CLI's error tests (`--app tests.unit.cli_schedules`)."""

from __future__ import annotations

from sqsjobs import Job, schedule
from sqsjobs.cron import daily


class CliNightly(Job, name="cli-schedules.nightly"):
    def handle(self) -> None:
        pass


schedule(CliNightly(), daily(at="03:00"), name="cli-nightly")
