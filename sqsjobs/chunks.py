"""Splitting a list into the batches an AWS call takes: at most so many entries and so many bytes each.

SendMessageBatch (10 entries, 1 MiB), PutMetricData (1,000 items, 1 MB) and the redrive's own move all
cut the same way; one rule, here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def bounded(items: Iterable[T], *, count: int, size: int, size_of: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive batches of `items`, each at most `count` long and (unless one item alone is larger)
    at most `size` in total by `size_of`."""
    batch: list[T] = []
    total = 0
    for item in items:
        item_size = size_of(item)
        if batch and (len(batch) == count or total + item_size > size):
            yield batch
            batch, total = [], 0
        batch.append(item)
        total += item_size
    if batch:
        yield batch
