"""Coordination state (locks, counters, markers) behind one small protocol.

Every feature that needs shared state — unique jobs, overlap locks, rate limits,
exception counters, idempotency keys — is an algorithm over `Store`, with a
DynamoDB implementation for production and an in-memory one for tests; one
contract suite runs against both (tests/unit/test_store_contract.py).
"""

from .base import Key, Store
from .memory import MemoryStore

__all__ = ["Key", "MemoryStore", "Store"]
