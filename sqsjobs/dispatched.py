"""`Dispatched`: what one dispatch did, as every dispatch path returns it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dispatched:
    """What a dispatch did: the job's id, where it went, and whether it was queued."""

    job_id: str
    job: str
    queue: str
    message_id: str = ""
    queued: bool = True
