"""`Job.step`: a named piece of a job that runs once per job id, its result recorded.

1 store read per step, +1 write the first time it completes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from .stores.base import Store

T = TypeVar("T")


def run_step(store: Store, job_id: str, name: str, fn: Callable[[], T], ttl: float) -> T:
    where = ("step", f"{job_id}:{name}")
    done = store.get(where)
    if done is not None:
        return json.loads(done["result"])  # type: ignore[no-any-return]
    result = fn()
    store.put(where, {"result": json.dumps(result)}, ttl=ttl)
    return result
