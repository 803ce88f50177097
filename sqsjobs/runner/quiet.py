"""Beginning and finishing a job without a call, for the asyncio worker's loop.

A job the loop can begin and finish itself costs no hand-off to a thread and back; but the loop
must never wait on AWS or the store, or every coroutine job on it waits too. So the runner begins
such a delivery with every call refused (`Runner.begin_quiet`): each path that would call (the DLQ,
a delay hop, a sealed payload, a hook that acts on the job, a FIFO redelivery's postponement count)
raises `Loud` before anything is done, and the worker begins the message in its pool instead.
"""

from __future__ import annotations

from .hook import Delivery


class Loud(Exception):
    """A delivery begun quietly would call AWS or the store here: nothing was done, begin it in the pool."""


def refuse_if_quiet(d: Delivery) -> None:
    if d.quiet:
        raise Loud


def quiet_about(d: Delivery) -> bool:
    """Nothing in `d` can be sealed, its attempt needs no store read, and no hook acts on it."""
    envelope, message = d.envelope, d.message
    return (
        envelope is not None
        and envelope.encrypted is None
        and envelope.chain is None
        and (message.group_id is None or message.receive_count <= 1)  # else SkipLedger reads the store
        and not d.hooked  # what the acting hooks answered as the runner began the delivery (hook.Asking)
    )


def ended_quietly(d: Delivery) -> bool:
    """A quiet delivery whose job returned without releasing or failing itself: its Ack calls nothing.
    Never raises (a hook's `quiet` that does means "not quiet": `finish` then does it all)."""
    ctx = d.context
    try:
        return ctx is not None and not ctx.released and ctx.fail_reason is None and quiet_about(d)
    except Exception:
        return False
