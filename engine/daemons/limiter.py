"""PushLimiter: at most N pushes at once, urgent ones served before normal ones.

A semaphore with two queues. When a slot frees up it goes to the longest-waiting urgent
push if there is one, else to the longest-waiting normal push, so a node past its urgent
disk threshold gets its pressure pushes out ahead of routine work already queued.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PushLimiter:
    """Bounded push concurrency with urgent-first hand-off."""

    def __init__(self, slots: int) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.slots = slots
        """How many pushes may run at once."""
        self.active = 0
        """Pushes holding a slot now."""
        self._waiting: dict[bool, deque[asyncio.Future[None]]] = {True: deque(), False: deque()}

    def waiting(self, urgent: bool | None = None) -> int:
        """Pushes queued for a slot (urgent, normal, or both)."""
        if urgent is None:
            return len(self._waiting[True]) + len(self._waiting[False])
        return len(self._waiting[urgent])

    @asynccontextmanager
    async def slot(self, urgent: bool = False) -> AsyncIterator[None]:
        await self._acquire(urgent)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, urgent: bool) -> None:
        if self.active < self.slots and not self.waiting():
            self.active += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting[urgent]
        queue.append(future)
        try:
            await future  # the releaser counted us in before waking us
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # handed a slot just as we were cancelled: pass it on
            else:
                queue.remove(future)
            raise

    def _release(self) -> None:
        for urgent in (True, False):
            queue = self._waiting[urgent]
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_result(None)  # the slot passes straight to the waiter
                    return
        self.active -= 1
