"""Fetch purgatory: long-polling fetches wait here until data arrives.

A fetch that found fewer than ``min_bytes`` waits on the partitions it asked
for, up to its ``max_wait_ms``. An append (or a high watermark advance, or a
topic deletion) calls ``notify`` for its partition, which wakes every fetch
waiting on it; ``wait_any`` returns the keys notified while it waited (more
than one may be, before the waiting task runs), and the fetch reads those
partitions again. A wake-up is only a hint: the fetch re-checks what it
reads, so spurious wake-ups are harmless and a missed one costs at most
``max_wait_ms``. ``close`` releases everyone at shutdown and
makes later waits return at once, so no fetch parks during shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable


class _Waiter:
    __slots__ = ("future", "woken")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.woken: set[Hashable] = set()


class FetchWaiters:
    def __init__(self) -> None:
        self._waiting: dict[Hashable, set[_Waiter]] = {}
        self.closed = False

    async def wait_any(self, keys: Iterable[Hashable], timeout_s: float) -> set[Hashable]:
        """Return the keys notified once any is, or nothing after ``timeout_s`` (or when closed)."""
        if self.closed:
            return set()
        keys = list(keys)
        waiter = _Waiter(asyncio.get_running_loop().create_future())
        for key in keys:
            self._waiting.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter.future, timeout_s)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                waiters = self._waiting.get(key)
                if waiters is not None:
                    waiters.discard(waiter)
                    if not waiters:
                        del self._waiting[key]
        return waiter.woken

    def notify(self, key: Hashable) -> None:
        for waiter in self._waiting.pop(key, ()):
            waiter.woken.add(key)
            if not waiter.future.done():
                waiter.future.set_result(None)

    def close(self) -> None:
        self.closed = True
        for key in list(self._waiting):
            self.notify(key)

    def __len__(self) -> int:
        return len({w for waiters in self._waiting.values() for w in waiters})
