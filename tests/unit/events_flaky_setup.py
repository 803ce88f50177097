"""A jobs module whose `sqsjobs_setup` fails the first time (tests/unit/test_events.py)."""

from __future__ import annotations

from typing import Any

CALLS: list[int] = []


def sqsjobs_setup(app: Any) -> None:
    CALLS.append(id(app))
    if len(CALLS) == 1:
        raise RuntimeError("the secrets service did not answer")
    app.triage.append("configured")
