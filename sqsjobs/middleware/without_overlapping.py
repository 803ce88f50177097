"""One job per key at a time, across all workers (a lock in the store)."""

from __future__ import annotations

from typing import Any

from .. import policy
from ..job_class import Job
from .base import Middleware, Next, app_of, store_of


class WithoutOverlapping(Middleware):
    """Never run two jobs with the same key at the same time, across all workers.

    Parameters:
        key: the lock key (default: the job's name, i.e. one at a time per job class).
        release_after: seconds to wait before trying again when the lock is taken.
        expire_after: the lock's upper bound, so a crashed worker cannot hold it forever
            (default: the job's timeout plus a minute).
        dont_release: drop (acknowledge) an overlapping job instead of retrying it.
        shared: share the lock across job classes (the key alone names it).
    """

    def __init__(
        self,
        key: str = "",
        *,
        release_after: int = 5,
        expire_after: int | None = None,
        dont_release: bool = False,
        shared: bool = False,
    ) -> None:
        self.key = key
        self.release_after = release_after
        self.expire_after = expire_after
        self.dont_release = dont_release
        self.shared = shared

    def handle(self, job: Job, next: Next) -> Any:
        name = self.key if self.shared else f"{type(job).job_name}:{self.key}"
        owner = job.job_id or ""
        # The job's timeout by the one rule (policy.timeout), plus a minute: a crashed holder frees it.
        ttl = self.expire_after or policy.timeout(type(job).timeout, None, app_of(job).settings.timeout) + 60
        store = store_of(job)
        if not store.add(("overlap", name), {"owner": owner}, ttl=ttl):
            if not self.dont_release:
                job.release(self.release_after)
            return None
        try:
            return next()
        finally:
            store.delete(("overlap", name), owner=owner)
