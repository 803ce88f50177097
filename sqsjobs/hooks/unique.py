"""Unique jobs in the runner: the lock taken at dispatch is freed when the job ends, on every path.

One rule in one place: a terminal decision (done, failed, rejected, a duplicate) frees it; a retry,
a postponement or a delay hop keeps it. `unique_until_processing` frees it as the job starts.
"""

from __future__ import annotations

from collections.abc import Callable

from .. import unique
from ..decisions import Ack, Decision, Fail
from ..runner import Delivery, Hook
from ..stores.base import Store


class UniqueLocks(Hook):
    name = "unique"
    features_only = True  # the unique key

    def __init__(self, store: Callable[[], Store]) -> None:
        self._store = store

    def quiet(self, delivery: Delivery) -> bool:
        return delivery.envelope is None or not delivery.envelope.unique_key

    def on_start(self, delivery: Delivery) -> Decision | None:
        envelope = delivery.envelope
        if (
            envelope is not None
            and envelope.unique_key
            and delivery.job_cls
            and delivery.job_cls.unique_until_processing
        ):
            unique.release(self._store(), envelope)
        return None

    def on_decided(self, delivery: Delivery, decision: Decision, error: BaseException | None) -> Decision | None:
        # Before the chain/batch bookkeeping (a later hook): the next link may be an equal unique job.
        envelope = delivery.envelope
        if envelope is not None and envelope.unique_key and isinstance(decision, Ack | Fail):
            unique.release(self._store(), envelope)
        return None
