"""Fetch purgatory: long-polling fetches wait here until data arrives.

A fetch that found fewer than ``min_bytes`` waits on the partitions it asked
for, up to its ``max_wait_ms``. An append (or a high watermark advance, or a
topic deletion) calls ``notify`` for its partition, which wakes every fetch
waiting on it; the fetch then reads again. A wake-up is only a hint: the
fetch re-checks everything, so spurious wake-ups are harmless and a missed
one costs at most ``max_wait_ms``. ``close`` releases everyone at shutdown and
makes later waits return at once, so no fetch parks during shutdown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable


class FetchWaiters:
    def __init__(self) -> None:
        self._waiting: dict[Hashable, set[asyncio.Future[None]]] = {}
        self.closed = False

    async def wait_any(self, keys: Iterable[Hashable], timeout_s: float) -> None:
        """Return when any key is notified, or after ``timeout_s``."""
        if self.closed:
            return
        keys = list(keys)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for key in keys:
            self._waiting.setdefault(key, set()).add(future)
        try:
            await asyncio.wait_for(future, timeout_s)
        except TimeoutError:
            pass
        finally:
            for key in keys:
                waiters = self._waiting.get(key)
                if waiters is not None:
                    waiters.discard(future)
                    if not waiters:
                        del self._waiting[key]

    def notify(self, key: Hashable) -> None:
        for future in self._waiting.pop(key, ()):
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        self.closed = True
        for key in list(self._waiting):
            self.notify(key)

    def __len__(self) -> int:
        return len({f for waiters in self._waiting.values() for f in waiters})
