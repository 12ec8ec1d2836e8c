"""The group coordinator's driver: the pure ``GroupCoordinator`` over ``__consumer_offsets`` partitions.

A group lives on the leader of its partition of the internal offsets topic
(``offsets_partition(group_id, partitions)``). This broker runs one pure
``coordinator.groups.GroupCoordinator`` per offsets partition it leads, and
follows the driver contract written in coordinator/groups/coordinator.py:

- The offsets topic is created on first use (FindCoordinator), through the
  controller like any topic: ``offsets_topic_num_partitions`` partitions,
  replication factor ``offsets_topic_replication_factor`` (-1: the broker's
  ``default_replication_factor``), retention forever. It is not compacted
  (compaction is not built): its log grows with every commit.
- Load: when this broker becomes the leader of offsets partition P (checked on
  every partition change and every tick), it reads P's whole local log —
  the leader's log is the truth — decodes the records and builds the
  coordinator. Until then group calls for P are answered
  COORDINATOR_LOAD_IN_PROGRESS; for a partition it does not lead,
  NOT_COORDINATOR (the client looks the coordinator up again).
- Calls run one at a time per coordinator (a lock): the pure call, then the
  records it returns are appended to P as one batch (acks=all) before the
  lock is released, so the log order is the call order. The response (and the
  replies of parked requests it completed) are sent once P's high watermark
  has passed everything appended so far — also for calls without records.
- Parked JoinGroup/SyncGroup requests wait on a future until a later call's
  ``completed`` answers them (bounded by the rebalance timeout + 5 s).
- Losing leadership of P (or an append that fails) drops its coordinator:
  every parked request is answered NOT_COORDINATOR, and the next leader loads
  P from its log.
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
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coordinator.groups import GroupConfig, GroupCoordinator, GroupResult, decode_record, encode_record
from coordinator.groups import offsets_partition as group_partition
from coordinator.groups.records import GroupRecord
from coordinator.metadata import TopicIdPartition
from coordinator.metadata.topic_config import RETENTION_MS
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from ketch.records import build_batch, decode_batches
from node.broker import Broker
from node.catalog import effective_config
from node.fetch_waiters import FetchWaiters
from node.metrics import NodeMetrics
from node.produce_purgatory import await_replication
from node.topic_admin import TopicAdmin
from replication.partition import Partition

log = logging.getLogger("ketch.node.groups")
R = TypeVar("R")
OFFSETS_TOPIC = "__consumer_offsets"
TICK_S = 0.2
APPEND_TIMEOUT_MS = 30_000


@dataclass
class LoadedPartition:
    """One offsets partition this broker leads: its coordinator once loaded."""

    index: int
    part: Partition
    leader_epoch: int
    coordinator: GroupCoordinator | None = None  # None while loading
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    parked: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    appended_end: int = 0  # the log end after this coordinator's last append


class GroupManager:
    def __init__(
        self,
        broker: Broker,
        admin: TopicAdmin,
        waiters: FetchWaiters,
        metrics: NodeMetrics,
        clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.broker = broker
        self.admin = admin
        self.waiters = waiters
        self.metrics = metrics
        self.config = broker.config
        self.clock_ms = clock_ms
        self.wall_ms = wall_ms
        self.group_config = GroupConfig(
            min_session_timeout_ms=self.config.group_min_session_timeout_ms,
            max_session_timeout_ms=self.config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms=self.config.group_initial_rebalance_delay_ms,
        )
        self.partitions: dict[int, LoadedPartition] = {}
        self._ids = itertools.count(1)
        self._loads: set[asyncio.Task[None]] = set()
        self._generations: dict[str, int] = {}

    # -- where groups live ------------------------------------------------------

    def partition_count(self) -> int:
        topic = self.broker.image.topic(OFFSETS_TOPIC)
        if topic is None:
            raise KetchError(
                f"the offsets topic {OFFSETS_TOPIC} does not exist yet; find the coordinator first",
                code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
            )
        return len(topic.partitions)

    async def find_coordinator(self, group_id: str) -> tuple[int, str, int]:
        """(node id, host, port) of ``group_id``'s coordinator; creates the offsets topic when missing."""
        if not group_id:
            raise KetchError("group id is empty", code=ErrorCode.INVALID_GROUP_ID)
        if self.broker.image.topic(OFFSETS_TOPIC) is None:
            await self._create_offsets_topic()
        image = self.broker.image
        topic = image.topic(OFFSETS_TOPIC)
        index = group_partition(group_id, self.partition_count())
        state = topic.partitions.get(index) if topic is not None else None
        leader = image.broker(state.leader) if state is not None and state.leader >= 0 else None
        if leader is None:
            raise KetchError(
                f"{OFFSETS_TOPIC}-{index}, which holds group {group_id!r}, has no leader right now",
                code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
            )
        return leader.broker_id, leader.host, leader.port

    async def _create_offsets_topic(self) -> None:
        rf = self.config.offsets_topic_replication_factor
        request = pb.CreateTopicsRequest()
        request.topics.add(
            name=OFFSETS_TOPIC,
            num_partitions=self.config.offsets_topic_num_partitions,
            replication_factor=rf if rf > 0 else self.config.default_replication_factor,
            configs={RETENTION_MS: "-1"},
        )
        result = (await self.admin.create(request)).topics[0]
        if result.error_code not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KetchError(
                f"cannot create {OFFSETS_TOPIC}: {result.error_message}", code=ErrorCode.COORDINATOR_NOT_AVAILABLE
            )
        log.info("created %s", OFFSETS_TOPIC)

    def loaded(self, group_id: str) -> tuple[LoadedPartition, GroupCoordinator]:
        index = group_partition(group_id, self.partition_count())
        if index not in self.partitions:
            self.reconcile()  # leadership may have arrived since the last tick
        loaded = self.partitions.get(index)
        if loaded is None or not self._still_leads(loaded):
            raise KetchError(
                f"this broker is not the coordinator of group {group_id!r} ({OFFSETS_TOPIC}-{index})",
                code=ErrorCode.NOT_COORDINATOR,
            )
        if loaded.coordinator is None:
            raise KetchError(
                f"group {group_id!r}: {OFFSETS_TOPIC}-{index} is still loading",
                code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
            )
        return loaded, loaded.coordinator

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

    async def read(self, group_id: str, query: Callable[[GroupCoordinator], R]) -> R:
        """A call that writes nothing; answered once everything appended before it has committed."""
        loaded, coordinator = self.loaded(group_id)
        response = query(coordinator)
        await self._committed(loaded)
        return response

    def _append(self, loaded: LoadedPartition, records: tuple[GroupRecord, ...]) -> None:
        if not records:
            return
        batch = build_batch([encode_record(r) for r in records], timestamp=self.wall_ms())
        topic = self.broker.image.topic(OFFSETS_TOPIC)
        config = effective_config(topic.configs if topic is not None else {}, self.config)
        try:
            loaded.part.append(
                batch,
                max_message_bytes=max(config.max_message_bytes, len(batch)),
                acks=-1,
                min_insync_replicas=config.min_insync_replicas,
                sync=False,
            )
        except KetchError as exc:
            self._drop(loaded, f"append failed: {exc.message}")
            raise KetchError(f"{OFFSETS_TOPIC}-{loaded.index}: {exc.message}", code=ErrorCode.NOT_COORDINATOR) from None
        loaded.appended_end = loaded.part.log.log_end_offset
        self.waiters.notify((OFFSETS_TOPIC, loaded.index))

    async def _committed(self, loaded: LoadedPartition) -> None:
        """Wait until the high watermark passes everything this coordinator appended."""
        if loaded.part.high_watermark >= loaded.appended_end:
            return
        topic = self.broker.image.topic(OFFSETS_TOPIC)
        min_isr = effective_config(topic.configs if topic is not None else {}, self.config).min_insync_replicas
        try:
            await await_replication(
                loaded.part, loaded.appended_end - 1, APPEND_TIMEOUT_MS, min_isr, self.waiters, self.metrics
            )
        except KetchError as exc:
            self._drop(loaded, f"write not replicated: {exc.message}")
            raise KetchError(f"{OFFSETS_TOPIC}-{loaded.index}: {exc.message}", code=ErrorCode.NOT_COORDINATOR) from None

    async def _settle(self, loaded: LoadedPartition, result: GroupResult[Any]) -> None:
        """After the records commit: complete the parked requests this result answered."""
        await self._committed(loaded)
        for reply in result.completed:
            future = loaded.parked.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply.response)

    # -- leadership --------------------------------------------------------------------

    def _still_leads(self, loaded: LoadedPartition) -> bool:
        part = loaded.part
        return part.is_leader and part.leader_epoch == loaded.leader_epoch

    def reconcile(self) -> None:
        """Load the offsets partitions this broker newly leads; drop those it lost."""
        topic = self.broker.image.topic(OFFSETS_TOPIC)
        replicas = self.broker.replicas()
        for index, loaded in list(self.partitions.items()):
            tp = TopicIdPartition(topic.topic_id if topic is not None else "", index)
            if not self._still_leads(loaded) or replicas.get(tp) is not loaded.part:
                self._drop(loaded, "leadership moved")
        if topic is None:
            return
        for tp, part in replicas.items():
            if tp.topic_id != topic.topic_id or not part.is_leader or tp.partition in self.partitions:
                continue
            loaded = LoadedPartition(tp.partition, part, part.leader_epoch)
            self.partitions[tp.partition] = loaded
            task = asyncio.get_running_loop().create_task(self._load(loaded), name=f"load-offsets-{tp.partition}")
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)

    async def _load(self, loaded: LoadedPartition) -> None:
        started = time.monotonic()
        records: list[GroupRecord] = []
        plog = loaded.part.log
        offset, end = plog.log_start_offset, plog.log_end_offset
        try:
            while offset < end:
                decoded = decode_batches(OFFSETS_TOPIC, loaded.index, plog.read(offset, 1 << 20), offset)
                if decoded.next_offset <= offset:
                    raise RuntimeError(f"no progress reading offset {offset}")
                records.extend(decode_record(r.key or b"", r.value) for r in decoded.records)
                offset = decoded.next_offset
                await asyncio.sleep(0)  # a long log must not stall the node's other work
        except Exception as exc:
            log.error("cannot load %s-%d: %s", OFFSETS_TOPIC, loaded.index, exc)
            self._drop(loaded, f"load failed: {exc}")
            return
        if self.partitions.get(loaded.index) is not loaded or not self._still_leads(loaded):
            return
        loaded.appended_end = end
        loaded.coordinator = GroupCoordinator.load(records, now_ms=self.clock_ms(), config=self.group_config)
        log.info(
            "coordinator for %s-%d loaded: %d records, %d groups in %.2fs",
            OFFSETS_TOPIC,
            loaded.index,
            len(records),
            len(loaded.coordinator.groups),
            time.monotonic() - started,
        )

    def _drop(self, loaded: LoadedPartition, why: str) -> None:
        if self.partitions.get(loaded.index) is loaded:
            del self.partitions[loaded.index]
            log.info("coordinator for %s-%d dropped: %s", OFFSETS_TOPIC, loaded.index, why)
        loaded.coordinator = None
        for future in loaded.parked.values():
            if not future.done():
                future.set_exception(
                    KetchError(f"{OFFSETS_TOPIC}-{loaded.index}: {why}", code=ErrorCode.NOT_COORDINATOR)
                )
        loaded.parked.clear()

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

    async def _tick(self, loaded: LoadedPartition) -> None:
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
        for loaded in list(self.partitions.values()):
            if loaded.coordinator is None:
                continue
            for group_id, group in loaded.coordinator.groups.items():
                for tp, committed in group.offsets.items():
                    hw = high_watermarks.get((tp.topic, tp.partition))
                    lag = None if hw is None else max(hw - committed.offset, 0)
                    out.append((group_id, tp.topic, tp.partition, committed.offset, lag))
        return out

    def member_counts(self) -> dict[str, int]:
        return {
            group_id: len(group.members)
            for loaded in list(self.partitions.values())
            if loaded.coordinator is not None
            for group_id, group in loaded.coordinator.groups.items()
        }

    def close(self) -> None:
        for task in list(self._loads):
            task.cancel()
        for loaded in list(self.partitions.values()):
            self._drop(loaded, "broker shutting down")
