"""The quick-start jobs: each one shows one path through sqsjobs."""

from __future__ import annotations

import logging

from sqsjobs import Job, PermanentError

log = logging.getLogger(__name__)


class SendWelcomeEmail(Job, name="quickstart.send-welcome-email"):
    """Succeeds on its first try."""

    queue = "high"

    user_id: int

    def handle(self) -> None:
        log.info("welcome mail sent to user %s", self.user_id)


class SyncInventory(Job, name="quickstart.sync-inventory"):
    """Fails twice (a flaky supplier API), then succeeds; retries wait 1 s, then 2 s."""

    tries = 5
    backoff = [1, 2]

    sku: str

    def handle(self) -> None:
        if self.attempts < 3:
            raise ConnectionError(f"supplier API timed out for {self.sku}")


class GenerateReport(Job, name="quickstart.generate-report"):
    """Always fails: after its 2 tries it is given up and lands in the DLQ."""

    tries = 2
    backoff = 1

    report: str

    def handle(self) -> None:
        raise RuntimeError(f"report {self.report!r}: template missing")

    def failed(self, exc: BaseException) -> None:
        log.warning("report %s given up: %s", self.report, exc)


class ChargeCard(Job, name="quickstart.charge-card"):
    """A permanent error: retrying cannot help, so it goes to the DLQ after one attempt."""

    order_id: int
    amount_cents: int

    def handle(self) -> None:
        if self.amount_cents <= 0:
            raise PermanentError(f"order {self.order_id}: refusing to charge {self.amount_cents} cents")


class SendReminder(Job, name="quickstart.send-reminder"):
    """Dispatched with a delay; runs only once the delay has passed."""

    user_id: int

    def handle(self) -> None:
        log.info("reminder sent to user %s", self.user_id)
