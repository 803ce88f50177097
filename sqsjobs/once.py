"""Dispatch once, whoever races: the next link of a chain, a batch's callbacks.

2 store calls per send: add "sending", put "sent".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .stores.base import Key, Store

#: "Sent" marks outlive any queue's retention (14 days) with room to spare.
_ONCE_TTL_S = 30 * 24 * 3600

#: How long a "sending" mark is trusted before another run may take the send over: longer than a
#: send takes (creating a batch of thousands of jobs included), short enough to recover promptly.
SEND_LEASE_S = 60


#: How long to watch someone else's fresh "sending" mark turn "sent" before coming back later: the
#: usual race (the last two jobs of a batch finishing together) settles in milliseconds.
WATCH_S = 3.0


class SendInProgress(Exception):
    """Another run claimed this send moments ago and has not finished it; look again later."""


def dispatch_once(
    store: Store,
    clock: Callable[[], float],
    key: Key,
    owner: str,
    send: Callable[[], object],
    ttl: float = _ONCE_TTL_S,
) -> bool:
    """Call `send` once for `key`: the next link of a chain, a batch's `then`, ...

    The first caller marks the key "sending", sends, then marks it "sent"; whoever finds
    "sent" does nothing. Whoever finds a fresh "sending" mark watches it for a moment and,
    if it is still not "sent", raises SendInProgress, so its message comes back later rather
    than being settled on a promise that may not be kept. A failed send frees its mark. A
    "sending" mark older than SEND_LEASE_S (plus the store's clock skew: the mark's time is its
    claimant's clock) means its sender died in between: the next caller takes it over (atomically:
    delete-if-unchanged, then add) and sends. A duplicate is possible only if a live sender needs
    longer than the lease; a loss is not.
    True if this call sent. `ttl`: how long the "sent" mark is kept (as long as anyone may still try).
    """
    now = clock()
    claim = {"state": "sending", "owner": f"{owner}@{now:.3f}", "claimed_ms": int(now * 1000)}
    if not _claim(store, clock, key, claim, ttl):
        return False
    try:
        send()
    except BaseException:
        # Nothing (or not all) was sent: free the key at once, so the retry need not wait out the lease.
        store.delete(key, owner=str(claim["owner"]))
        raise
    store.put(key, {"state": "sent", "owner": claim["owner"]}, ttl=ttl)
    return True


def _claim(store: Store, clock: Callable[[], float], key: Key, claim: dict[str, object], ttl: float) -> bool:
    """True when this run now holds the "sending" mark; False when the thing was sent already."""
    deadline = time.monotonic() + WATCH_S
    pause = 0.02
    while True:
        if store.add(key, claim, ttl=ttl):
            return True
        mark = store.get(key)
        if mark is not None and mark.get("state") == "sent":
            return False
        # The lease started on the claimant's clock; ours may be ahead of it by up to the store's skew.
        if mark is not None and clock() * 1000 - int(mark.get("claimed_ms", 0)) >= (SEND_LEASE_S + store.skew) * 1000:
            # Its sender died between the mark and the send: take over, unless someone else just did.
            if store.delete(key, owner=str(mark.get("owner"))) and store.add(key, claim, ttl=ttl):
                return True
            raise SendInProgress(f"{key[0]}/{key[1]} was taken over by another run")
        if time.monotonic() >= deadline:
            owner = mark.get("owner") if mark else "?"
            raise SendInProgress(f"{key[0]}/{key[1]} is being sent by {owner}")
        time.sleep(pause)
        pause = min(pause * 2, 0.5)
