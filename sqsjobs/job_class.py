"""`Job`: a pydantic model whose fields are the payload, plus `handle()`.

Class options are plain class attributes, named as Laravel names them, so a
job reads like its documentation:

    class SendInvoice(Job, name="billing.send-invoice", aliases=("SendInvoice",)):
        queue = "high"
        tries = 5
        backoff = [10, 60, 300]
        timeout = 120

        invoice_id: int

        def handle(self) -> None: ...
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict

from . import context
from .dispatched import Dispatched
from .errors import ConfigurationError
from .registry import default_registry
from .steps import run_step
from .timing import BackoffLike, DelayLike, backoff_seconds, clamp_visibility, delay_seconds, parse_iso, seconds

if TYPE_CHECKING:
    from .envelope import Envelope
    from .triage import Rule

T = TypeVar("T")


@dataclass(slots=True)
class JobContext:
    """What the runner tells a job about the message it came in."""

    job_id: str
    attempts: int
    queue: str
    envelope: Envelope | None = None
    release_delay: int | None = None
    released: bool = False
    fail_reason: str | None = None
    #: The app running the job (the worker's, not necessarily the current one).
    app: context.Services | None = None
    #: Seconds from dispatch (or the end of its delay) to the start of this run.
    wait_s: float = 0.0
    #: (key, owner) while this run holds an idempotency key "in progress".
    idempotency: tuple[str, str] | None = None
    #: How many times this run called `self.batch.add(...)` (keys each add, see Batch.add).
    batch_adds: int = 0
    #: Set once `handle()` is entered: a release before it (a rate limit, an overlap lock) did not run
    #: the job, so it does not spend a try.
    handled: bool = False


class Job(BaseModel):
    """Base class of every job. Subclass it; fields are the payload, `handle()` the work.

    Class options (all optional):
        queue: logical queue name (default: settings' default queue).
        tries: how many times the job may be attempted (default SQSJOBS_TRIES, 3; never unlimited).
        backoff: seconds before a retry — a number, a list per attempt (the last value
            repeats), or a method `def backoff(self, attempt) -> seconds`.
        backoff_jitter: spread each wait over [wait/2, wait].
        timeout: seconds a run may take before it is interrupted and counted as failed
            (default SQSJOBS_TIMEOUT or the worker's --timeout, 60).
        fail_on_timeout: a timeout fails the job at once instead of retrying.
        retry_until: a timedelta from dispatch after which the job is not retried.
        delay: default delay for every dispatch (seconds, timedelta).
        fail_on: exception types that skip retries and go straight to the DLQ.
        max_exceptions: give up after this many raised exceptions, however many tries are
            left (releases do not count); counted in the store.
        unique_for: make the job unique (Laravel's ShouldBeUnique): while one with the same
            `unique_id()` is queued or running — at most this long — dispatching another does
            nothing and says so (`Dispatched.queued` is False).
        unique_until_processing: free the unique lock when the job starts, not when it ends.
        idempotency_ttl: how long a completed `idempotency_key()` (and a completed `step`)
            is remembered.
        encrypted: encrypt the payload (Laravel's ShouldBeEncrypted) with a KMS data key
            (SQSJOBS_KMS_KEY): only the job name, ids and scheduling fields stay readable.
        triage: rules for this job's failures, checked before the app's (sqsjobs.triage:
            `discard(...)`, `retry_later(..., after=...)`, `alert_new(...)`; docs/triage.md).

    Class keywords: `name` (the registered name; default the class name), `aliases`
    (old names that still resolve), `abstract=True` for shared base classes.
    """

    model_config = ConfigDict(extra="ignore", validate_by_name=True)

    queue: ClassVar[str | None] = None
    tries: ClassVar[int | None] = None
    backoff: ClassVar[BackoffLike] = (10, 30, 90, 300, 900)
    backoff_jitter: ClassVar[bool] = False
    timeout: ClassVar[float | None] = None
    fail_on_timeout: ClassVar[bool] = False
    retry_until: ClassVar[timedelta | None] = None
    delay: ClassVar[DelayLike | None] = None
    fail_on: ClassVar[tuple[type[BaseException], ...]] = ()
    max_exceptions: ClassVar[int | None] = None
    unique_for: ClassVar[float | timedelta | None] = None
    unique_until_processing: ClassVar[bool] = False
    idempotency_ttl: ClassVar[float | timedelta] = timedelta(days=1)
    encrypted: ClassVar[bool] = False
    triage: ClassVar[Sequence[Rule]] = ()

    job_name: ClassVar[str] = ""
    job_aliases: ClassVar[tuple[str, ...]] = ()

    # The runner's context for this run, in a slot of Job's own rather than a pydantic private attribute:
    # pydantic sets private attributes up after every validation (a post-init call, ~1.5 µs a job) and
    # reads them through `__getattr__` (3-4 µs a read, an AttributeError raised and caught inside). A copy
    # or an unpickled job has none, as a job built by hand (docs/performance.md).
    __slots__ = ("__weakref__", "_sqsjobs_ctx")

    @property
    def _ctx(self) -> JobContext | None:
        try:
            return _CTX_SLOT.__get__(self, None)  # type: ignore[no-any-return]
        except AttributeError:  # not set: a job built by hand, copied or unpickled
            return None

    @_ctx.setter
    def _ctx(self, ctx: JobContext | None) -> None:
        _CTX_SLOT.__set__(self, ctx)

    def __init_subclass__(
        cls, *, name: str | None = None, aliases: Iterable[str] = (), abstract: bool = False, **kwargs: Any
    ) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        if cls.tries is not None and (not isinstance(cls.tries, int) or cls.tries < 1):
            raise ConfigurationError(f"{cls.__qualname__}.tries must be a whole number >= 1, got {cls.tries!r}")
        cls.job_name = name or cls.__name__
        cls.job_aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)  # one name, not its letters
        default_registry.add(cls, cls.job_name, cls.job_aliases)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        # Our class keywords were consumed by __init_subclass__; pydantic must not see them.
        super().__pydantic_init_subclass__()
        if taken := {"_ctx", "_sqsjobs_ctx"} & set(cls.__private_attributes__):
            raise ConfigurationError(
                f"{cls.__qualname__} has private attribute {taken.pop()}, which Job keeps for itself"
            )
        shadowed = sorted(set(cls.model_fields) & _JOB_ATTRIBUTES)
        if shadowed:
            raise ConfigurationError(
                f"{cls.__qualname__} has payload field(s) {', '.join(shadowed)} that would hide Job's own "
                "attribute of that name; rename the field(s)"
            )
        if cls.unique_for is not None and cls.model_fields and cls.unique_id is Job.unique_id:
            raise ConfigurationError(
                f"{cls.__qualname__} is unique but has fields; define unique_id(self) to say which "
                "jobs are the same, or every dispatch would share one lock"
            )

    # -- the user's side ---------------------------------------------------------------
    def handle(self) -> Any:
        """Do the work. May be `async def`. Raise to retry; raise PermanentError to give up."""
        raise NotImplementedError(f"{type(self).__name__} must define handle()")

    def failed(self, exc: BaseException) -> None:
        """Called once when the job is given up (tries exhausted, fail(), permanent error)."""

    def middleware(self) -> list[Any]:
        """Middleware to run `handle()` through (see sqsjobs.middleware); none by default."""
        return []

    def job_tags(self) -> list[str]:
        """Tags for the job log (`sqsjobs jobs list --tag customer:42`), like Horizon's: short strings of
        letters, digits and `_.:@/#=+-`, at most 10. None by default."""
        return []

    def unique_id(self) -> str:
        """What makes two dispatches of a unique job the same (default: the job name alone)."""
        return ""

    def idempotency_key(self) -> str | None:
        """A key naming the effect of this job: a completed key is never run again."""
        return None

    # -- what a running job knows about itself -----------------------------------------
    @property
    def attempts(self) -> int:
        """1 on the first run, then one more per run (releases count; deliveries that did not run do not:
        docs/attempts.md)."""
        return self._ctx.attempts if self._ctx else 0

    @property
    def job_id(self) -> str | None:
        return self._ctx.job_id if self._ctx else None

    @property
    def batch(self) -> Any:
        """The `Batch` this job belongs to (or is a callback of), read fresh from the store; None outside one."""
        envelope = self._ctx.envelope if self._ctx else None
        batch_id = envelope and (envelope.batch_id or envelope.extra.get("for_batch"))
        if not batch_id:
            return None
        assert self._ctx is not None
        return (self._ctx.app or context.current()).find_batch(str(batch_id), caller=self._ctx)

    def release(self, delay: DelayLike | None = None) -> None:
        """Put the job back to run again later; with no delay, the job's backoff applies."""
        if self._ctx is None:
            return
        self._ctx.released = True
        if delay is not None:
            self._ctx.release_delay = clamp_visibility(delay_seconds(delay, time.time()))

    def fail(self, reason: str | BaseException = "failed by the job") -> None:
        """Give the job up now: it goes to the DLQ with `reason` and `failed()` runs."""
        if self._ctx is not None:
            self._ctx.fail_reason = str(reason)

    def step(self, name: str, fn: Callable[[], T]) -> T:
        """Run `fn` once per job: on a retry, a step that completed returns its recorded result.

        A job that failed after step 2 of 3 resumes at step 3 — what whole-call
        idempotency cannot do. The result must be JSON-serialisable.
        """
        if self._ctx is None or self._ctx.app is None:
            return fn()
        return run_step(self._ctx.app.store, self.job_id or "", name, fn, seconds(type(self).idempotency_ttl))

    def backoff_for(self, attempt: int) -> int:
        """Seconds to wait after failed attempt number `attempt`."""
        option = inspect.getattr_static(type(self), "backoff")
        if isinstance(option, staticmethod):
            return backoff_seconds(option.__func__, attempt, jitter=self.backoff_jitter)
        if inspect.isfunction(option):
            return backoff_seconds(lambda a: option(self, a), attempt, jitter=self.backoff_jitter)
        return backoff_seconds(option, attempt, jitter=self.backoff_jitter)

    # -- dispatching -------------------------------------------------------------------
    def dispatch(
        self,
        *,
        queue: str | None = None,
        delay: DelayLike | None = None,
        group: str | None = None,
        deduplication_id: str | None = None,
        after_commit: bool | None = None,
    ) -> Dispatched:
        """Queue this job. Delays over 15 minutes are carried in hops, never truncated.

        `after_commit`: True holds it until the database transaction around it commits, False sends it
        now; None (default) follows SQSJOBS_AFTER_COMMIT (docs/after-commit.md).
        """
        return context.current().dispatch(
            self, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id, after_commit=after_commit
        )

    async def dispatch_async(
        self,
        *,
        queue: str | None = None,
        delay: DelayLike | None = None,
        group: str | None = None,
        deduplication_id: str | None = None,
        after_commit: bool | None = None,
    ) -> Dispatched:
        """`dispatch` for async code (aiobotocore): never blocks the event loop."""
        return await context.current().dispatch_async(
            self, queue=queue, delay=delay, group=group, deduplication_id=deduplication_id, after_commit=after_commit
        )

    def dispatch_if(self, condition: bool, **options: Any) -> Dispatched | None:
        return self.dispatch(**options) if condition else None

    def dispatch_unless(self, condition: bool, **options: Any) -> Dispatched | None:
        return None if condition else self.dispatch(**options)

    def dispatch_sync(self) -> None:
        """Run the job now, in this process, through the same core a worker uses.

        Retries run at once; if the job is finally given up, its last exception is raised.
        """
        context.current().dispatch_sync(self)

    @classmethod
    def dispatch_many(
        cls,
        jobs: Iterable[Job],
        *,
        queue: str | None = None,
        delay: DelayLike | None = None,
        after_commit: bool | None = None,
    ) -> list[Dispatched]:
        """Queue many jobs with SendMessageBatch (10 per call, <= 1 MiB per call)."""
        return context.current().dispatch_many(jobs, queue=queue, delay=delay, after_commit=after_commit)

    @classmethod
    async def dispatch_many_async(
        cls,
        jobs: Iterable[Job],
        *,
        queue: str | None = None,
        delay: DelayLike | None = None,
        after_commit: bool | None = None,
    ) -> list[Dispatched]:
        """`dispatch_many` for async code."""
        return await context.current().dispatch_many_async(jobs, queue=queue, delay=delay, after_commit=after_commit)


#: The slot behind `Job._ctx` (its descriptor, so an unset slot raises at once, not via pydantic's `__getattr__`).
_CTX_SLOT: Any = Job.__dict__["_sqsjobs_ctx"]


def set_context(job: Job, ctx: JobContext | None) -> None:
    """`job._ctx = ctx` without pydantic's `__setattr__` (which, for a name that is not its own, looks
    the name up every time before it lets the property set it): the runner does this once per job."""
    _CTX_SLOT.__set__(job, ctx)


#: Names a payload field may not take: each would hide an option or method of Job.
_JOB_ATTRIBUTES = frozenset(name for name in vars(Job) if not name.startswith("_"))


def dispatched_at(job: Job) -> datetime | None:
    """When the message `job` runs from was dispatched (UTC); None for a job not running from a message
    (`handle()` called directly). Kept through retries and `failed retry`, so a job that works on "the
    day before it was sent" does not move its day when it runs late. A function, not a `Job`
    attribute, so no payload field name is taken from users."""
    envelope = job._ctx.envelope if job._ctx is not None else None
    return datetime.fromtimestamp(parse_iso(envelope.dispatched_at), UTC) if envelope is not None else None
