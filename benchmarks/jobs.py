"""The benchmark's job: a no-op, so every microsecond measured is framework and boto3."""

from __future__ import annotations

from sqsjobs import Job


class Noop(Job, name="bench.noop"):
    """Does nothing with a small payload, like the raw boto3 consumer's `handle`."""

    n: int

    def handle(self) -> None:
        return None
