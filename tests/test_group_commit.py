"""GroupCommit: concurrent flushes share fsyncs, and no flush returns before a sync that began after it."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from node.group_commit import GroupCommit


def test_many_concurrent_flushes_share_few_syncs_and_each_is_covered() -> None:
    started: list[int] = []  # write count seen by each sync when it began
    writes = 0
    lock = threading.Lock()

    def sync() -> None:
        with lock:
            started.append(writes)
        time.sleep(0.02)

    async def scenario() -> None:
        nonlocal writes
        group = GroupCommit(sync)

        async def one() -> None:
            nonlocal writes
            writes += 1
            mine = writes
            await group.flush()
            assert any(seen >= mine for seen in started), "returned before a sync covering its write"

        await asyncio.gather(*(one() for _ in range(200)))
        assert 1 <= group.syncs <= 10, group.syncs
        await one()  # a later flush still gets its own sync
        assert group.syncs >= 2

    asyncio.run(scenario())


def test_a_failing_sync_fails_the_waiters() -> None:
    def broken() -> None:
        raise OSError("disk gone")

    async def scenario() -> None:
        with pytest.raises(OSError, match="disk gone"):
            await GroupCommit(broken).flush()

    asyncio.run(scenario())
