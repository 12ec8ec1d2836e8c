"""GroupCommit: one fsync of the RocksDB WAL covers every append written before it started.

Topics with ``flush.messages=1`` promise that an acknowledged record is on
disk. Appends are written to the WAL without a sync, on the event loop, and
the request then awaits ``flush()``: it returns once an fsync that *started
after* the call has finished. While one fsync runs (in a worker thread, so
the event loop keeps serving), every append that arrives waits for the next
one, which then covers all of them — many produce requests (and follower
appends) share one fsync instead of paying one each.

Rule: call ``flush()`` only after the write it must cover has returned;
the generation counter does the rest (a sync started after a request's
generation was taken covers that request's write).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class GroupCommit:
    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._requested = 0
        self._done = 0
        self._task: asyncio.Task[None] | None = None
        self._advanced = asyncio.Event()
        self.syncs = 0

    async def flush(self) -> None:
        self._requested += 1
        mine = self._requested
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        while self._done < mine:
            event = self._advanced
            await event.wait()
            if self._task is not None and self._task.done() and self._task.exception() is not None:
                raise self._task.exception()  # type: ignore[misc]

    async def _run(self) -> None:
        try:
            while self._done < self._requested:
                target = self._requested
                await asyncio.to_thread(self._sync)
                self.syncs += 1
                self._done = target
                self._wake()
        finally:
            self._wake()

    def _wake(self) -> None:
        event, self._advanced = self._advanced, asyncio.Event()
        event.set()
