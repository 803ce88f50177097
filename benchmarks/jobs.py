"""The benchmark's jobs: no-ops, so every microsecond measured is framework and boto3."""

from __future__ import annotations

from sqsjobs import Job


class Noop(Job, name="bench.noop"):
    """Does nothing with a small payload, like the raw boto3 consumer's `handle`."""

    n: int

    def handle(self) -> None:
        return None


class AsyncNoop(Job, name="bench.async_noop"):
    """The same as an `async def handle`, the kind of job `sqsjobs work --async` is for."""

    n: int

    async def handle(self) -> None:
        return None


class Blob(Job, name="bench.blob"):
    """A payload of a given size (dispatch CPU at 1 KB, 200 KB, 2 MB; the last one through S3)."""

    n: int
    data: str

    def handle(self) -> None:
        return None
