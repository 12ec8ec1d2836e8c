"""The group coordinator's driver: the pure ``GroupCoordinator`` over ``__consumer_offsets`` partitions.

A group lives on the leader of its partition of the internal offsets topic
(``offsets_partition(group_id, partitions)``). This broker runs one pure
``coordinator.groups.GroupCoordinator`` per offsets partition it leads. What
every internal-topic coordinator shares — creating the topic on first use
(``offsets_topic_num_partitions`` partitions, replication factor
``offsets_topic_replication_factor``), loading a partition's log when this
broker becomes its leader, one call at a time per partition with its records
appended (acks=all) before the lock is released, answers only after those
records commit, dropping the coordinator when leadership moves — is written
once in node/internal_topic.py. What is particular to groups:

- Parked JoinGroup/SyncGroup requests wait on a future until a later call's
  ``completed`` answers them (bounded by the rebalance timeout + 5 s); they are
  completed only after the records of the call that answered them commit.
- ``run()`` ticks every coordinator every ``TICK_S`` (sessions, rebalance and
  sync timeouts) and reconciles leadership.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from coordinator.groups import GroupConfig, GroupCoordinator, GroupResult, decode_record, encode_record
from coordinator.groups.records import GroupRecord
from ketch.errors import ErrorCode, KetchError
from ketch.records import build_batch
from node.broker import Broker
from node.fetch_waiters import FetchWaiters
from node.internal_topic import InternalTopicCoordinators, LoadedPartition
from node.metrics import NodeMetrics
from node.topic_admin import TopicAdmin

log = logging.getLogger("ketch.node.groups")
R = TypeVar("R")
OFFSETS_TOPIC = "__consumer_offsets"
TICK_S = 0.2


class GroupManager(InternalTopicCoordinators[GroupCoordinator]):
    topic = OFFSETS_TOPIC
    what = "group"

    def __init__(
        self,
        broker: Broker,
        admin: TopicAdmin,
        waiters: FetchWaiters,
        metrics: NodeMetrics,
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        config = broker.config
        super().__init__(
            broker,
            admin,
            waiters,
            metrics,
            num_partitions=config.offsets_topic_num_partitions,
            replication_factor=config.offsets_topic_replication_factor,
            wall_ms=wall_ms,
        )
        self.clock_ms = clock_ms
        self.group_config = GroupConfig(
            min_session_timeout_ms=config.group_min_session_timeout_ms,
            max_session_timeout_ms=config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        )
        self._ids = itertools.count(1)
        self._generations: dict[str, int] = {}

    # -- the internal-topic hooks ----------------------------------------------------

    def build(self, index: int, items: list[Any]) -> GroupCoordinator:
        records = [decode_record(key or b"", value) for key, value in items]
        return GroupCoordinator.load(records, now_ms=self.clock_ms(), config=self.group_config)

    def describe_loaded(self, coordinator: GroupCoordinator) -> str:
        return f", {len(coordinator.groups)} groups"

    async def find_coordinator(self, key: str) -> tuple[int, str, int]:
        if not key:
            raise KetchError("group id is empty", code=ErrorCode.INVALID_GROUP_ID)
        return await super().find_coordinator(key)

    # -- calls ---------------------------------------------------------------------

    async def call(self, group_id: str, command: Callable[[GroupCoordinator, int], GroupResult[R]], wait_s: float) -> R:
        """Run ``command(coordinator, request_id)``; persist its records; answer after they commit."""
        loaded, coordinator = self.loaded(group_id)
        request_id = next(self._ids)
        async with loaded.lock:
            if loaded.coordinator is not coordinator:
                raise KetchError(f"group {group_id!r} moved", code=ErrorCode.NOT_COORDINATOR)
            result = command(coordinator, request_id)
            parked = None
            if result.response is None:
                parked = asyncio.get_running_loop().create_future()
                loaded.parked[request_id] = parked
            self._append(loaded, result.records)
        await self._settle(loaded, result)
        if parked is None:
            assert result.response is not None
            return result.response
        try:
            response: R = await asyncio.wait_for(parked, wait_s)
            return response
        except TimeoutError:
            raise KetchError(
                f"group {group_id!r}: no answer within {wait_s:.0f} s", code=ErrorCode.REBALANCE_IN_PROGRESS
            ) from None
        finally:
            loaded.parked.pop(request_id, None)

    def _append(self, loaded: LoadedPartition[GroupCoordinator], records: tuple[GroupRecord, ...]) -> None:
        if records:
            self.append(loaded, build_batch([encode_record(r) for r in records], timestamp=self.wall_ms()))

    async def _settle(self, loaded: LoadedPartition[GroupCoordinator], result: GroupResult[Any]) -> None:
        """After the records commit: complete the parked requests this result answered."""
        await self.committed(loaded)
        for reply in result.completed:
            future = loaded.parked.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply.response)

    # -- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.reconcile()
                for loaded in list(self.partitions.values()):
                    await self._tick(loaded)
            except Exception:
                log.exception("group coordinator tick failed")

    async def _tick(self, loaded: LoadedPartition[GroupCoordinator]) -> None:
        coordinator = loaded.coordinator
        if coordinator is None:
            return
        async with loaded.lock:
            if loaded.coordinator is not coordinator:
                return
            result = coordinator.tick(self.clock_ms())
            try:
                self._append(loaded, result.records)
            except KetchError:
                return
        with contextlib.suppress(KetchError):
            await self._settle(loaded, result)
        self._count_rebalances(coordinator)

    def _count_rebalances(self, coordinator: GroupCoordinator) -> None:
        for group_id, group in coordinator.groups.items():
            before = self._generations.get(group_id)
            if before is not None and group.generation > before:
                self.metrics.group_rebalances.labels(group_id).inc(group.generation - before)
            self._generations[group_id] = group.generation

    def lags(self) -> list[tuple[str, str, int, int, int | None]]:
        """(group, topic, partition, committed offset, lag) for metrics; lag when a local replica knows the HW."""
        high_watermarks = {(p.topic, p.index): p.high_watermark for p in self.broker.partitions()}
        out = []
        for coordinator in self.coordinators():
            for group_id, group in coordinator.groups.items():
                for tp, committed in group.offsets.items():
                    hw = high_watermarks.get((tp.topic, tp.partition))
                    lag = None if hw is None else max(hw - committed.offset, 0)
                    out.append((group_id, tp.topic, tp.partition, committed.offset, lag))
        return out

    def member_counts(self) -> dict[str, int]:
        return {
            group_id: len(group.members)
            for coordinator in self.coordinators()
            for group_id, group in coordinator.groups.items()
        }
