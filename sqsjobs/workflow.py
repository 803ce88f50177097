"""What a job's end means for the chain and the batch it belongs to.

The runner calls these two functions, and nothing else knows about chains or
batches at the end of a job. Both run *before* the job's message is deleted, so
what they send or count survives a crash (design §7); both are safe to run again
for a redelivered message (dispatch-once marks, per-member counting).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .app import App
    from .envelope import Envelope


def succeeded(app: App, envelope: Envelope) -> None:
    """The job succeeded: send the chain's next link; count the batch member if this ended it."""
    from . import chains

    if chains.advance(app, envelope.chain, envelope.id, envelope.batch_id):
        return  # the chain goes on; its member is counted when its last link succeeds
    if envelope.batch_id:
        from . import batches

        batches.record(app, envelope, succeeded=True)


def failed(app: App, envelope: Envelope, error: BaseException) -> None:
    """The job failed for good: the chain's catch runs once; the batch counts a failure."""
    if envelope.chain:
        from . import chains

        chains.send_catch(app, envelope.chain, envelope.id)
    if envelope.batch_id:
        from . import batches

        batches.record(app, envelope, succeeded=False, error=f"{type(error).__name__}: {error}")


def involved(envelope: Envelope | None) -> bool:
    """Whether the job belongs to a chain or a batch, or is one's callback: such a job runs once per
    job id however many copies of its message arrive (plain jobs skip all of this)."""
    return envelope is not None and bool(
        envelope.chain or envelope.batch_id or envelope.extra.get("for_batch") or envelope.extra.get("for_chain")
    )
