"""A bounded asyncio queue that drops its OLDEST item when full, counting the drops.

Sits between capture and the encoder: a camera does not wait for a slow
encoder, it keeps the newest frames and the edge counts what it discarded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

T = TypeVar("T")


class DropOldestQueue(Generic[T]):
    """Single-loop FIFO of at most ``maxsize`` items; ``put`` never blocks."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._items: deque[T] = deque()
        self._ready = asyncio.Event()
        self._closed = False

    def put(self, item: T) -> T | None:
        """Append ``item``; returns the item dropped to make room, if any."""
        if self._closed:
            raise RuntimeError("queue is closed")
        dropped = None
        if len(self._items) >= self.maxsize:
            dropped = self._items.popleft()
            self.dropped += 1
        self._items.append(item)
        self._ready.set()
        return dropped

    def close(self) -> None:
        """No more puts; ``get`` drains what is left, then returns None."""
        self._closed = True
        self._ready.set()

    async def get(self) -> T | None:
        """The oldest item, waiting for one; None once closed and empty."""
        while not self._items:
            if self._closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def get_many(self, limit: int) -> list[T]:
        """Up to ``limit`` items that are already waiting (never waits)."""
        out: list[T] = []
        while self._items and len(out) < limit:
            out.append(self._items.popleft())
        return out

    def __len__(self) -> int:
        return len(self._items)
