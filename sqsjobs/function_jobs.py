"""`@job`: a typed function as a job, for teams used to Celery's or Dramatiq's decorated tasks.

    @job(queue="emails", tries=5, backoff=[10, 60])
    def send_welcome(user_id: int, template: str = "welcome") -> None: ...

    send_welcome.dispatch(user_id=7)       # queued, as Job.dispatch queues
    send_welcome(7)                        # just a call, here and now

The decorator builds an ordinary `Job` subclass whose fields are the function's parameters and whose
`handle()` calls the function, and registers it like any class. Everything after that — envelope,
registry, runner, retries, chains, batches, fakes, the process executor, encryption — sees a plain job,
so function jobs get no code path of their own to drift. A running function asks `current_job()` for
what `self` gives a class: attempts, job id, `release()`, `fail()`, `step()`.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from pydantic import PydanticUserError

from . import context
from .dispatched import Dispatched
from .errors import ConfigurationError, SqsJobsError
from .function_job_options import HINTS, OPTIONS, RESERVED, VALUE_OPTIONS
from .job_class import Job
from .registry import NAME_PATTERN
from .timing import BackoffLike, DelayLike

if TYPE_CHECKING:
    from .triage import Rule

P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[Job | None] = contextvars.ContextVar("sqsjobs_function_job", default=None)


def current_job() -> Job:
    """The job the running function job is (attempts, job_id, release(), fail(), step(), batch).

    Called directly (`send_welcome(7)`), the function gets a job that is not running, as a `Job`
    class's `handle()` called directly does: attempts 0, job_id None, release() and fail() do nothing.
    """
    running = _current.get()
    if running is None:
        raise SqsJobsError(
            "current_job() is called outside a function job; call it inside a function decorated with "
            "@job (a Job class uses self instead)"
        )
    return running


class FunctionJob(Generic[P, R]):
    """A function made a job by `@job`: call it to run it here, `dispatch()` it to queue it.

    `job_class` is the registered `Job` subclass; its fields are the function's parameters.
    """

    __name__: str  # the function's, as functools.update_wrapper copies them
    __qualname__: str

    def __init__(self, fn: Callable[P, R], job_class: type[Job], signature: inspect.Signature) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.job_class = job_class
        self._signature = signature

    @property
    def job_name(self) -> str:
        return self.job_class.job_name

    def __repr__(self) -> str:
        return f"<function job {self.job_name!r} ({self.fn.__module__}.{self.fn.__qualname__})>"

    def __call__(self, /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, unvalidated, as a plain call (Celery calls tasks so too)."""
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError:
            return self.fn(*args, **kwargs)  # Python says what is wrong with the call
        bound.apply_defaults()
        detached = self.job_class.model_construct(**bound.arguments)
        if inspect.iscoroutinefunction(self.fn):
            return cast(R, _awaited_as(detached, cast(Callable[..., Any], self.fn), args, kwargs))
        token = _current.set(detached)
        try:
            return self.fn(*args, **kwargs)
        finally:
            _current.reset(token)

    def make(self, /, *args: P.args, **kwargs: P.kwargs) -> Job:
        """The job for these arguments, validated but not dispatched: for `chain([...])` and `batch([...])`."""
        return self._build(args, kwargs)

    def _build(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Job:
        try:
            bound = self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.job_name}: {exc}") from None
        return self.job_class(**bound.arguments)

    def dispatch(
        self,
        /,
        *args: Any,
        queue: str | None = None,
        delay: DelayLike | None = None,
        group: str | None = None,
        deduplication_id: str | None = None,
        after_commit: bool | None = None,
        **kwargs: Any,
    ) -> Dispatched:
        """Queue a run with these arguments; the options are `Job.dispatch`'s."""
        made = self._build(args, kwargs)
        return made.dispatch(
            queue=queue, delay=delay, group=group, deduplication_id=deduplication_id, after_commit=after_commit
        )

    async def dispatch_async(
        self,
        /,
        *args: Any,
        queue: str | None = None,
        delay: DelayLike | None = None,
        group: str | None = None,
        deduplication_id: str | None = None,
        after_commit: bool | None = None,
        **kwargs: Any,
    ) -> Dispatched:
        """`dispatch` for async code (aiobotocore): never blocks the event loop."""
        made = self._build(args, kwargs)
        return await made.dispatch_async(
            queue=queue, delay=delay, group=group, deduplication_id=deduplication_id, after_commit=after_commit
        )

    def dispatch_sync(self, /, *args: P.args, **kwargs: P.kwargs) -> None:
        """Run it now through the same core a worker uses (retries at once; raises if given up)."""
        self.make(*args, **kwargs).dispatch_sync()

    def dispatch_many(self, calls: Iterable[Mapping[str, Any] | Job], **options: Any) -> list[Dispatched]:
        """Queue many runs with SendMessageBatch: each a mapping of keyword arguments, or a `make()`;
        the options are `sqsjobs.dispatch_many`'s (queue, delay, after_commit)."""
        return context.current().dispatch_many(self._jobs(calls), **options)

    async def dispatch_many_async(self, calls: Iterable[Mapping[str, Any] | Job], **options: Any) -> list[Dispatched]:
        """`dispatch_many` for async code."""
        return await context.current().dispatch_many_async(self._jobs(calls), **options)

    def _jobs(self, calls: Iterable[Mapping[str, Any] | Job]) -> list[Job]:
        jobs: list[Job] = []
        for call in calls:
            if isinstance(call, Job):
                if type(call) is not self.job_class:
                    raise TypeError(f"{self.job_name}.dispatch_many got a {type(call).job_name} job; pass its own")
                jobs.append(call)
            elif isinstance(call, Mapping):
                jobs.append(self._build((), call))
            else:
                raise TypeError(
                    f"{self.job_name}.dispatch_many takes mappings of keyword arguments or make() jobs, "
                    f"not {type(call).__name__}"
                )
        return jobs


async def _awaited_as(job: Job, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
    token = _current.set(job)
    try:
        return await fn(*args, **kwargs)
    finally:
        _current.reset(token)


@overload
def job(fn: Callable[P, R], /) -> FunctionJob[P, R]: ...


@overload
def job(
    *,
    name: str | None = None,
    aliases: Iterable[str] = (),
    queue: str | None = None,
    tries: int | None = None,
    backoff: BackoffLike = ...,
    backoff_jitter: bool = False,
    timeout: float | None = None,
    fail_on_timeout: bool = False,
    retry_until: timedelta | None = None,
    delay: DelayLike | None = None,
    fail_on: type[BaseException] | Iterable[type[BaseException]] = (),
    max_exceptions: int | None = None,
    unique_for: float | timedelta | None = None,
    unique_until_processing: bool = False,
    idempotency_ttl: float | timedelta = ...,
    encrypted: bool = False,
    triage: Sequence[Rule] = (),
    middleware: Sequence[Any] | Callable[[Any], Sequence[Any]] = (),
    unique_id: Callable[[Any], str] | None = None,
    idempotency_key: Callable[[Any], str | None] | None = None,
    job_tags: Callable[[Any], list[str]] | None = None,
    failed: Callable[[Any, BaseException], None] | None = None,
) -> Callable[[Callable[P, R]], FunctionJob[P, R]]: ...


def job(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a typed function a job. Bare (`@job`) or with the options a `Job` class takes as attributes
    (`@job(queue="emails", tries=5, backoff=[10, 60], timeout=30)`), plus `name=` and `aliases=`.

    The payload is the parameters: each needs an annotation, defaults are kept, pydantic validates them
    as it validates a `Job`'s fields. The options that are methods on a class (`middleware`, `unique_id`,
    `idempotency_key`, `job_tags`, `failed`) are functions given the job, whose attributes are the
    parameters. The job's name defaults to the function's `__name__`, as a class's defaults to its own.
    """
    unknown = sorted(set(options) - OPTIONS)
    if unknown:
        hints = "; ".join(f"{o}: use {HINTS[o]}" for o in unknown if o in HINTS)
        raise ConfigurationError(
            f"@job got unknown option(s) {', '.join(unknown)}"
            + (f" ({hints})" if hints else "")
            + f"; the options are {', '.join(sorted(OPTIONS))} (docs/function-jobs.md)"
        )
    if fn is None:
        return lambda f: _make(f, options)
    return _make(fn, options)


def _make(fn: Callable[..., Any], options: dict[str, Any]) -> FunctionJob[Any, Any]:
    where = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    if isinstance(fn, FunctionJob) or not inspect.isfunction(fn):
        raise ConfigurationError(
            f"@job decorates a plain function (def or async def), not {where}; for a class, subclass sqsjobs.Job"
        )
    name = options.get("name") or fn.__name__
    aliases = options.get("aliases") or ()
    aliases = (aliases,) if isinstance(aliases, str) else tuple(aliases)  # one name, not its letters
    for key in (name, *aliases):
        if not isinstance(key, str) or re.fullmatch(NAME_PATTERN, key) is None:
            raise ConfigurationError(
                f"{where}: job name {key!r} does not match {NAME_PATTERN} (a letter, then up to 127 letters, "
                "digits or _ . : / -); choose another: @job(name='...')"
            )
    signature = _signature(fn, where)
    namespace: dict[str, Any] = {
        "__module__": fn.__module__,
        "__qualname__": fn.__qualname__,
        "__doc__": fn.__doc__,
        "__annotations__": {p.name: p.annotation for p in signature.parameters.values()},
    }
    for p in signature.parameters.values():
        if p.default is not inspect.Parameter.empty:
            namespace[p.name] = p.default
    namespace.update(_class_options(options, where, bool(signature.parameters)))
    namespace["handle"] = _handle_for(fn, signature)
    try:
        cls = cast(Any, type(Job))(fn.__name__, (Job,), namespace, name=name, aliases=aliases)
    except PydanticUserError as exc:
        raise ConfigurationError(
            f"{where}: a parameter's annotation cannot be a payload field ({exc}); use JSON-friendly types "
            "(numbers, strings, lists, dicts, pydantic models, datetimes)"
        ) from exc
    return FunctionJob(fn, cast(type[Job], cls), signature)


def _signature(fn: Callable[..., Any], where: str) -> inspect.Signature:
    """The function's signature with its annotations resolved, checked to make a payload."""
    try:
        signature = inspect.signature(fn, eval_str=True)
    except NameError as exc:
        raise ConfigurationError(
            f"{where}: an annotation names something not importable at module level ({exc}); "
            "define the type at module level"
        ) from exc
    for p in signature.parameters.values():
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise ConfigurationError(
                f"{where}: parameter {p} cannot be a payload; a job's payload is named parameters only"
            )
        if p.annotation is inspect.Parameter.empty:
            raise ConfigurationError(
                f"{where}: parameter {p.name!r} has no annotation; annotate it (e.g. {p.name}: int) so "
                "the payload is validated on both ends"
            )
        if p.name.startswith("_"):
            raise ConfigurationError(f"{where}: parameter {p.name!r} starts with _; a payload field may not")
        if p.name in RESERVED:
            raise ConfigurationError(
                f"{where}: parameter {p.name!r} would hide Job's own {p.name!r} (or a dispatch() option); "
                f"rename it (e.g. {p.name}_)"
            )
    return signature


def _class_options(options: dict[str, Any], where: str, has_fields: bool) -> dict[str, Any]:
    """The decorator's options as the class attributes and methods a `Job` subclass would declare."""
    out: dict[str, Any] = {k: v for k, v in options.items() if k in VALUE_OPTIONS}
    if callable(out.get("backoff")):
        out["backoff"] = staticmethod(out["backoff"])  # a function of the attempt, not a method
    if isinstance(out.get("fail_on"), type):
        out["fail_on"] = (out["fail_on"],)
    elif "fail_on" in out:
        out["fail_on"] = tuple(out["fail_on"])
    if options.get("unique_for") is not None and has_fields and options.get("unique_id") is None:
        raise ConfigurationError(
            f"{where} is unique but has parameters; pass unique_id=lambda job: ... (say which runs are the "
            "same), or every dispatch would share one lock"
        )
    middleware = options.get("middleware")
    if middleware is not None:
        if callable(middleware):
            out["middleware"] = lambda self: list(middleware(self))
        else:
            listed = list(middleware)
            out["middleware"] = lambda self: list(listed)
    for key in ("unique_id", "idempotency_key", "job_tags"):
        given = options.get(key)
        if given is not None:
            out[key] = _method(given)
    failed = options.get("failed")
    if failed is not None:

        def on_failed(self: Job, exc: BaseException) -> None:
            failed(self, exc)

        out["failed"] = on_failed
    return out


def _method(fn: Callable[[Any], Any]) -> Callable[[Job], Any]:
    """`fn` as a method: bound to the job even when it is not a plain function (a partial, a callable)."""

    def method(self: Job) -> Any:
        return fn(self)

    return method


def _handle_for(fn: Callable[..., Any], signature: inspect.Signature) -> Callable[[Job], Any]:
    """`handle()` of the generated class: the function called with the payload, the job current."""
    positional = [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.POSITIONAL_ONLY]
    named = [p.name for p in signature.parameters.values() if p.kind is not inspect.Parameter.POSITIONAL_ONLY]

    def arguments(job: Job) -> tuple[list[Any], dict[str, Any]]:
        return [getattr(job, n) for n in positional], {n: getattr(job, n) for n in named}

    if inspect.iscoroutinefunction(fn):

        async def handle_async(self: Job) -> None:
            args, kwargs = arguments(self)
            await _awaited_as(self, fn, args, kwargs)

        return handle_async

    def handle(self: Job) -> Any:
        args, kwargs = arguments(self)
        token = _current.set(self)
        try:
            result = fn(*args, **kwargs)
        finally:
            _current.reset(token)
        # A plain decorator around an `async def` hides the coroutine function: its result is awaited
        # by the runner (as for a class's `handle`), with this job still current.
        return _awaited_as(self, lambda: result, [], {}) if inspect.isawaitable(result) else None

    return handle


def wrapped_job_class(target: Any) -> Any:
    """The `Job` class behind a function job, else `target` itself (for APIs that take job classes)."""
    return target.job_class if isinstance(target, FunctionJob) else target


__all__ = ["FunctionJob", "current_job", "job", "wrapped_job_class"]
