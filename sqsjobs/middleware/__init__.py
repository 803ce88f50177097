"""Job middleware (Laravel's job middleware): each wraps `handle()`, one file each.

A job lists them in `middleware()`; the first listed is the outermost. A middleware that
does not call `next()` did not run the job: a release it asks for does not spend a try.
"""

from .base import Middleware, Next, run_through
from .fail_on_exception import FailOnException
from .rate_limited import Limit, RateLimited, rate_limiter
from .skip import Skip, SkipIfBatchCancelled
from .throttles_exceptions import ThrottlesExceptions
from .without_overlapping import WithoutOverlapping

__all__ = [
    "FailOnException",
    "Limit",
    "Middleware",
    "Next",
    "RateLimited",
    "Skip",
    "SkipIfBatchCancelled",
    "ThrottlesExceptions",
    "WithoutOverlapping",
    "rate_limiter",
    "run_through",
]
