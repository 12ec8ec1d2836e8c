"""The fetch purgatory (node/fetch_waiters.py): a parked fetch learns which of its partitions woke it."""

from __future__ import annotations

import asyncio

from node.fetch_waiters import FetchWaiters


def test_wait_any_returns_every_key_notified_before_the_waiter_runs() -> None:
    async def scenario() -> set[object]:
        waiters = FetchWaiters()
        task = asyncio.create_task(waiters.wait_any([("t", 0), ("t", 1), ("t", 2)], 5))
        await asyncio.sleep(0)  # parked
        waiters.notify(("t", 2))
        waiters.notify(("t", 0))  # before the task has run again
        waiters.notify(("u", 0))  # not one of its keys
        woken = await task
        assert len(waiters) == 0  # nothing left registered
        return woken

    assert asyncio.run(scenario()) == {("t", 0), ("t", 2)}


def test_wait_any_returns_nothing_after_its_timeout_and_at_once_when_closed() -> None:
    async def scenario() -> tuple[set[object], set[object], int]:
        waiters = FetchWaiters()
        timed_out = await waiters.wait_any([("t", 0)], 0.01)
        left = len(waiters)
        waiters.close()
        return timed_out, await asyncio.wait_for(waiters.wait_any([("t", 0)], 5), 1), left

    assert asyncio.run(scenario()) == (set(), set(), 0)
