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

A ``Watch`` is a standing subscription (a follower's fetch session,
node/fetch_session.py): it collects every key notified, between fetches as
well as while one is parked, until ``take`` hands them over; ``wait`` parks
until one is there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Iterable


class _Waiter:
    __slots__ = ("future", "woken")

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future
        self.woken: set[Hashable] = set()


class Watch:
    __slots__ = ("_future", "_waiters", "keys", "notified")

    def __init__(self, waiters: FetchWaiters) -> None:
        self._waiters = waiters
        self.keys: set[Hashable] = set()
        self.notified: set[Hashable] = set()
        self._future: asyncio.Future[None] | None = None

    def take(self) -> set[Hashable]:
        """The keys notified since the last ``take``."""
        notified, self.notified = self.notified, set()
        return notified

    async def wait(self, timeout_s: float) -> None:
        """Return once a key is notified (at once if one is already, or when closed or watching nothing),
        or after ``timeout_s``."""
        if self.notified or self._waiters.closed or not self.keys:
            return
        self._future = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(self._future, timeout_s)
        except TimeoutError:
            pass
        finally:
            self._future = None

    def _notified(self, key: Hashable) -> None:
        self.notified.add(key)
        self._wake()

    def _wake(self) -> None:
        if self._future is not None and not self._future.done():
            self._future.set_result(None)


class FetchWaiters:
    def __init__(self) -> None:
        self._waiting: dict[Hashable, set[_Waiter]] = {}
        self._watching: dict[Hashable, set[Watch]] = {}
        self.closed = False

    def watch(self) -> Watch:
        """A new standing subscription, watching nothing yet (``add`` keys to it)."""
        return Watch(self)

    def add(self, watch: Watch, keys: Iterable[Hashable]) -> None:
        for key in keys:
            if key not in watch.keys:
                watch.keys.add(key)
                self._watching.setdefault(key, set()).add(watch)

    def unwatch(self, watch: Watch) -> None:
        for key in watch.keys:
            watches = self._watching.get(key)
            if watches is not None:
                watches.discard(watch)
                if not watches:
                    del self._watching[key]
        watch.keys = set()
        watch._wake()  # a fetch parked on it returns

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
        for watch in self._watching.get(key, ()):
            watch._notified(key)
        for waiter in self._waiting.pop(key, ()):
            waiter.woken.add(key)
            if not waiter.future.done():
                waiter.future.set_result(None)

    def close(self) -> None:
        self.closed = True
        for key in list(self._waiting):
            self.notify(key)
        for watches in list(self._watching.values()):
            for watch in watches:
                watch._wake()

    def __len__(self) -> int:
        return len({w for waiters in self._waiting.values() for w in waiters})
