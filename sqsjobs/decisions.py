"""What the runner decides for one received message.

Decisions are plain values so every way in (poller, Lambda adapter, sync
connection) applies the same outcome without knowing why it was reached. Side
effects that must survive a crash (the DLQ copy, a long-delay hop) are already
written when a decision is returned; applying it only deletes the source
message or changes its visibility.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Ack:
    """The job succeeded (or was skipped on purpose): delete the message."""

    outcome: str = "done"


@dataclass(frozen=True, slots=True)
class Release:
    """Try again later on the *same* message: set its visibility to `delay` seconds."""

    delay: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Postpone:
    """The job did not run (rate-limited, blocked, handed back unstarted): bring the message back
    after `delay` seconds *without spending a try*. How is the settler's business (docs/attempts.md)."""

    delay: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Fail:
    """The job is given up; the DLQ already holds its copy, so delete the source message."""

    reason: str
    error_type: str
    exception: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Defer:
    """A long delay is not over; the next hop was re-sent, so delete this message."""

    delay: int


Decision = Ack | Release | Postpone | Fail | Defer


def deletes_source(decision: Decision) -> bool:
    """Whether applying the decision removes the source message from its queue."""
    return not isinstance(decision, (Release, Postpone))


def drops_payload(decision: Decision) -> bool:
    """Whether an offloaded body's S3 object is no longer needed once the source is deleted.

    Only a finished job lets go of it: a DLQ copy and a delay hop carry the same pointer.
    """
    return isinstance(decision, Ack)
