"""`max_exceptions`: raised exceptions per job life, counted in the store (releases do not count).

0 store calls on success; 1 per raised exception. A job retried from the DLQ starts a new life:
`forget` clears its count, so `max_exceptions` does not survive `sqsjobs failed retry`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores.base import Store

#: Counts outlive any sensible retry schedule, and then expire.
_TTL_S = 14 * 24 * 3600


def count(store: Store, job_id: str) -> int:
    """Raised exceptions of this job so far, this one included."""
    return store.incr(("exceptions", job_id), 1, ttl=_TTL_S) or 0


def forget(store: Store, job_id: str) -> None:
    store.delete(("exceptions", job_id))
