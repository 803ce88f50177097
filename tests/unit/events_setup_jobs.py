"""A jobs module with `sqsjobs_setup`, as a user's SQSJOBS_APP module would have (tests/unit/test_events.py)."""

from __future__ import annotations

from typing import Any

from sqsjobs import App, Job

HEARD: list[tuple[int, str]] = []


class Noted(Job, name="events.noted"):
    def handle(self) -> None:
        return None


def sqsjobs_setup(app: App) -> None:
    @app.events.on("processed")
    def note(event: Any) -> None:
        HEARD.append((id(app), event.job_name))
