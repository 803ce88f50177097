"""What `@job(...)` accepts, what it refuses, and what it tells a Celery or Dramatiq user instead.

Apart from sqsjobs.function_jobs so the tables read on their own; a new `Job` class option is an
option here too, since the value options are read from `Job`'s class variables.
"""

from __future__ import annotations

from .job_class import Job

#: Options that are plain values on a `Job` class (its ClassVars, so a new one is an option here too).
VALUE_OPTIONS = frozenset(Job.__class_vars__) - {"job_name", "job_aliases"}
#: Options that are methods on a `Job` class: here, functions given the job (parameters as attributes).
METHOD_OPTIONS = frozenset({"middleware", "unique_id", "idempotency_key", "job_tags", "failed"})
OPTIONS = VALUE_OPTIONS | METHOD_OPTIONS | {"name", "aliases"}
#: What a Celery or Dramatiq user may reach for, and what says it here.
HINTS = {
    "max_retries": "tries= (runs in all, not retries after the first)",
    "retry_backoff": "backoff= (seconds: a number, a list per retry, or a function of the attempt)",
    "retry_jitter": "backoff_jitter=True",
    "autoretry_for": "nothing: every exception is retried; list the ones that must not be in fail_on=",
    "dont_autoretry_for": "fail_on=",
    "time_limit": "timeout= (in seconds)",
    "soft_time_limit": "timeout= (in seconds)",
    "max_age": "retry_until= (a timedelta from dispatch)",
    "queue_name": "queue=",
    "actor_name": "name=",
    "bind": "current_job() inside the function",
    "rate_limit": "middleware=[RateLimited(...)] (sqsjobs.middleware)",
    "acks_late": "nothing: a message is always deleted after its job finishes",
    "countdown": "dispatch(delay=...)",
}
#: Keyword arguments of `dispatch()` itself: a parameter of that name could not be passed to it.
DISPATCH_OPTIONS = frozenset({"queue", "delay", "group", "deduplication_id", "after_commit"})
#: Parameter names the payload may not take: each would hide an attribute or method of `Job`.
RESERVED = frozenset(n for n in dir(Job) if not n.startswith("_")) | DISPATCH_OPTIONS
