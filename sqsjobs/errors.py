"""The errors sqsjobs raises, as one small hierarchy users can catch.

Every message says what to do next, because the person reading it is usually
looking at a log line in the middle of an incident.
"""

from __future__ import annotations


class SqsJobsError(Exception):
    """Base of every error sqsjobs raises on purpose."""


class ConfigurationError(SqsJobsError):
    """Settings, queues or job classes do not fit together; fix the named setting."""


class DispatchError(SqsJobsError):
    """One or more jobs were not queued.

    `not_queued` lists `(job_id, job_name, reason)` for each job that did not
    reach SQS, so a caller can retry exactly those and nothing twice.
    """

    def __init__(self, message: str, not_queued: list[tuple[str, str, str]] | None = None) -> None:
        super().__init__(message)
        self.not_queued = not_queued or []


class PermanentError(SqsJobsError):
    """Raise from `handle()` when retrying cannot help: the job goes to the DLQ at once."""


class BadMessageError(PermanentError):
    """A message that cannot be run as it is: malformed, unknown job, invalid payload, bad signature.

    `kind` is a short stable word (`malformed`, `unknown_job`, `invalid_payload`, `missing_payload`,
    `foreign_pointer`, `signature`, `expired_signature`) written into the DLQ attributes so failures
    can be grouped.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class JobTimeoutError(SqsJobsError):
    """A job ran past its `timeout`; counted as a failed attempt like any exception."""


class MaxAttemptsExceededError(PermanentError):
    """The message was received more times than the job's `tries` allow; it is not run again."""


class RetryUntilPassedError(PermanentError):
    """The job's `retry_until` deadline has passed; it is not run again."""


class JobFailedError(PermanentError):
    """The job called `self.fail(reason)`."""


class NeverRanError(SqsJobsError):
    """The sync connection postponed a job again and again and it never ran.

    The sync connection does not wait, so what holds a job back (a rate limit, an overlap lock, a
    busy idempotency key) is still there when it looks again; a queue would wait it out.
    """


def type_name(error: BaseException) -> str:
    """The name of the exception a job raised. A job run in a child process (the process executor) raised
    it there: what reaches the worker is an SqsJobsError carrying the original's name as `type_name`."""
    named = getattr(error, "type_name", None)
    return named if isinstance(error, SqsJobsError) and isinstance(named, str) and named else type(error).__name__
