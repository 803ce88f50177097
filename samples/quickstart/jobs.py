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


class ResizePhoto(Job, name="quickstart.resize-photo"):
    """A link of a chain: the next link is sent only after this one succeeds."""

    photo_id: int

    def handle(self) -> None:
        log.info("photo %s resized", self.photo_id)


class PublishAlbum(Job, name="quickstart.publish-album"):
    """The last link of the chain."""

    album_id: int

    def handle(self) -> None:
        log.info("album %s published", self.album_id)


class ImportRow(Job, name="quickstart.import-row"):
    """One job of a batch; the batch counts each row once, however often SQS delivers it."""

    row: int

    def handle(self) -> None:
        log.info("row %s imported", self.row)


class ImportFinished(Job, name="quickstart.import-finished"):
    """The batch's `then` callback: sent once, when every row succeeded."""

    def handle(self) -> None:
        found = self.batch
        log.info("import done: %s of %s rows", found.processed if found else "?", found.total if found else "?")


class ArchiveLog(Job, name="quickstart.archive-log"):
    """A 2 MiB payload: too big for SQS, so the body travels through S3 and the message holds a pointer."""

    lines: list[str]

    def handle(self) -> None:
        log.info("archived %d log lines", len(self.lines))
