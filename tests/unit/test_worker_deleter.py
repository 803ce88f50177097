"""The worker's deleter: finished messages leave in batches of 10, and none waits on another queue's traffic."""

from __future__ import annotations

import time

from sqsjobs import App
from sqsjobs.connections.base import OutgoingMessage, ReceivedMessage
from sqsjobs.worker.deleter import Deleter


def test_a_lone_delete_on_a_quiet_queue_is_not_held_back_by_a_busy_queues_full_batches(memory_app: App) -> None:
    """One deadline was shared by every queue and restarted whenever full batches went out with a
    remainder pending: while another queue kept filling batches, a quiet queue's single finished
    message was never deleted (and, no longer extended, it came back and ran again)."""
    connection = memory_app.connection
    connection.send("quiet", OutgoingMessage(body="{}"))
    (lone,) = connection.receive("quiet", 1, 0, visibility_timeout=60)
    deleter = Deleter(connection, None, flush_s=0.2)
    deleter.add(lone)
    added = time.monotonic()
    serial = 0
    while connection.counts("quiet")["ApproximateNumberOfMessagesNotVisible"] and time.monotonic() - added < 5:
        for _ in range(10):  # a busy queue's next full batch, as finished jobs would add it
            serial += 1
            deleter.add(ReceivedMessage("busy", f"busy-{serial}", f"receipt-{serial}", "{}", 1, 0.0))
        deleter.flush()
    assert connection.counts("quiet")["ApproximateNumberOfMessagesNotVisible"] == 0, "the lone delete never went"
