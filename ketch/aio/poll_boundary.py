"""Poll boundaries: a consumer group's rebalance waits until the application is between batches.

The group protocol runs in the background (group_member.py), but a revoke
and the application of a new assignment take effect only while the
application is inside ``poll()`` (or before its first records), as in Kafka
where they run inside poll.

Rules:
- The application is *idle* from the moment ``poll()`` is entered until
  ``poll()`` returns records (``polling`` / ``handed_out``); it is idle
  before its first poll and while the consumer closes.
- ``wait_for_app`` blocks the member until the application is idle; it
  raises ``PollTimeout`` when ``max_poll_interval_ms`` runs out first (the
  member then leaves the group).
- While a change is applied (``applying``), and while the member is
  about to take its turn after being woken by a poll, ``settled`` blocks
  ``poll()``, which therefore returns nothing meanwhile. So records the
  application holds always belong to partitions it still owns, and a
  partition is never reassigned under a batch still being processed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

__all__ = ["PollBoundary", "PollTimeout"]


class PollTimeout(Exception):
    """The application did not poll within max_poll_interval_ms."""


class PollBoundary:
    """Where the member's rebalance meets the application's ``poll()`` (see the module docstring)."""

    def __init__(self) -> None:
        self._idle = asyncio.Event()  # the application holds no records (it is inside poll)
        self._idle.set()
        self._settled = asyncio.Event()  # no revoke or assignment is being applied
        self._settled.set()
        self._waiting = False  # a revoke or an assignment waits for the next poll()

    def polling(self) -> None:
        """The application entered ``poll()`` (or is closing): it holds no records."""
        self._idle.set()

    def handed_out(self) -> None:
        """``poll()`` returned records: the application is busy with them until its next poll."""
        self._idle.clear()

    async def settled(self) -> None:
        """Wait while a revoke or a new assignment waits for this poll or is being applied."""
        while True:
            if self._waiting:  # the member was woken by this poll: let it take its turn first
                await asyncio.sleep(0)
            elif self._settled.is_set():
                return
            else:
                await self._settled.wait()

    async def wait_for_app(self, remaining: Callable[[], float]) -> None:
        """Wait until the application is idle; ``remaining()``: seconds left of ``max_poll_interval_ms``."""
        try:
            while not self._idle.is_set():
                left = remaining()
                if left <= 0:
                    raise PollTimeout()
                self._waiting = True
                with contextlib.suppress(asyncio.TimeoutError):
                    async with asyncio.timeout(left):
                        await self._idle.wait()
        finally:
            self._waiting = False

    @contextlib.contextmanager
    def applying(self) -> Iterator[None]:
        """Hold ``poll()`` back while a revoke or an assignment is applied."""
        self._settled.clear()
        try:
            yield
        finally:
            self._settled.set()
