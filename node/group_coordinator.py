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
- ``run()`` ticks every coordinator every ``tick_s`` (sessions, rebalance and
  sync timeouts) and reconciles leadership.

Transactions (KIP-98/447; the rules are coordinator/groups/txn_offsets.py's):
1. Load keeps batch headers (``decode_chunk``): the records of a
   transactional batch come as ``TransactionalRecord(pid, record)``, a control
   batch as ``TransactionMarker(pid, commit)``.
2. ``txn_offset_commit``: when the batch would START producer (pid, epoch)'s
   transaction on this offsets partition (``Partition.transaction_to_verify``),
   first await ``verify_transaction(transactional_id, pid, epoch, topic,
   partition)`` (KIP-890; outside the lock: it is a remote call). Then, under
   the lock: refuse what the partition's producer state would refuse (a lower
   epoch: INVALID_PRODUCER_EPOCH) BEFORE the pure call, so a refusal changes
   no state; run the pure call; append its records as ONE transactional batch
   of (pid, epoch) with the producer's next sequence on this partition (0 when
   its epoch here is older or unknown). Answer once committed.
3. ``write_txn_marker`` (WriteTxnMarkers for a ``__consumer_offsets``
   partition, routed here by node/service.py): under the lock,
   ``Partition.write_marker``; only if it wrote the marker,
   ``complete_transaction(pid, commit)`` (a duplicate or stale marker ends
   nothing); then wait until everything appended has committed. While the
   partition loads: COORDINATOR_LOAD_IN_PROGRESS (the marker sender retries);
   not led here: NOT_COORDINATOR.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

from aiokafka.record.default_records import DefaultRecordBatchBuilder

from coordinator.groups import (
    CommitResponse,
    GroupConfig,
    GroupCoordinator,
    GroupResult,
    LogEntry,
    OffsetCommit,
    TransactionalRecord,
    TransactionMarker,
    decode_record,
    encode_record,
)
from coordinator.groups.records import GroupRecord
from coordinator.metadata import BrokerRegistration
from ketch.assignors.base import TopicPartition
from ketch.errors import ErrorCode, KetchError
from ketch.recordbatch import LENGTH_PREFIX, marker_is_commit, parse_header
from ketch.records import build_batch, decode_batches
from node.broker import Broker
from node.fetch_waiters import FetchWaiters
from node.internal_topic import InternalTopicCoordinators, LoadedPartition
from node.metrics import NodeMetrics
from node.topic_admin import TopicAdmin
from replication.producer_state import IdempotentBatch, Refuse, next_sequence
from replication.transactions import TV2

log = logging.getLogger("ketch.node.groups")
R = TypeVar("R")
OFFSETS_TOPIC = "__consumer_offsets"
VerifyTransaction = Callable[[str, int, int, str, int], Awaitable[None]]


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
        verify_transaction: VerifyTransaction | None = None,
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
        self.verify_transaction = verify_transaction
        self.group_config = GroupConfig(
            min_session_timeout_ms=config.group_min_session_timeout_ms,
            max_session_timeout_ms=config.group_max_session_timeout_ms,
            initial_rebalance_delay_ms=config.group_initial_rebalance_delay_ms,
        )
        self._ids = itertools.count(1)
        self._generations: dict[str, int] = {}

    # -- the internal-topic hooks ----------------------------------------------------

    def decode_chunk(self, index: int, data: bytes, offset: int) -> tuple[list[Any], int]:
        """Log entries with their batch kind: plain records, records of a transactional batch, markers."""
        view = memoryview(data)
        items: list[LogEntry] = []
        at, next_offset = 0, offset
        while len(view) - at >= LENGTH_PREFIX:
            header = parse_header(view, at)
            if at + header.size > len(view):
                break  # a partial trailing batch: the next read starts with it
            batch = view[at : at + header.size]
            at += header.size
            if header.next_offset <= offset:
                continue
            next_offset = header.next_offset
            if header.is_control:
                items.append(TransactionMarker(header.producer_id, marker_is_commit(batch)))
                continue
            for r in decode_batches(self.topic, index, batch, offset).records:
                record = decode_record(r.key or b"", r.value)
                items.append(TransactionalRecord(header.producer_id, record) if header.is_transactional else record)
        return items, next_offset

    def build(self, index: int, items: list[Any]) -> GroupCoordinator:
        return GroupCoordinator.load(items, now_ms=self.clock_ms(), config=self.group_config)

    def describe_loaded(self, coordinator: GroupCoordinator) -> str:
        return f", {len(coordinator.groups)} groups"

    async def find_coordinator(self, key: str) -> BrokerRegistration:
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

    async def txn_offset_commit(
        self,
        transactional_id: str,
        group_id: str,
        member_id: str,
        generation: int,
        producer_id: int,
        producer_epoch: int,
        offsets: Mapping[TopicPartition, OffsetCommit],
    ) -> CommitResponse:
        """TxnOffsetCommit: step 2 of the module docstring; answered after the batch commits."""
        loaded, coordinator = self.loaded(group_id)
        part = loaded.part
        verified = False
        if producer_id >= 0 and producer_epoch >= 0:
            probe = self._txn_batch(loaded, producer_id, producer_epoch, [(b"", b"")])
            if part.transaction_to_verify(probe) is not None and self.verify_transaction is not None:
                await self.verify_transaction(transactional_id, producer_id, producer_epoch, self.topic, loaded.index)
                verified = True
        async with loaded.lock:
            if loaded.coordinator is not coordinator:
                raise KetchError(f"group {group_id!r} moved", code=ErrorCode.NOT_COORDINATOR)
            if producer_id >= 0 and producer_epoch >= 0:
                self._check_producer(loaded, producer_id, producer_epoch, verified)
            now, wall = self.clock_ms(), self.wall_ms()
            result = coordinator.txn_offset_commit(
                group_id, member_id, generation, producer_id, producer_epoch, offsets, now_ms=now, timestamp_ms=wall
            )
            if result.records:
                batch = self._txn_batch(loaded, producer_id, producer_epoch, [encode_record(r) for r in result.records])
                self.append(loaded, batch, transaction_verified=verified)
        await self.committed(loaded)
        assert result.response is not None
        return result.response

    def _txn_batch(
        self,
        loaded: LoadedPartition[GroupCoordinator],
        producer_id: int,
        producer_epoch: int,
        records: list[tuple[bytes, bytes | None]],
    ) -> bytes:
        """One transactional batch of (pid, epoch) at the producer's next sequence on this partition."""
        entry = loaded.part.log.producer_state.get(producer_id)
        sequence = next_sequence(entry.last_seq) if entry is not None and entry.epoch == producer_epoch else 0
        builder = DefaultRecordBatchBuilder(2, 0, 1, producer_id, producer_epoch, sequence, 1 << 30)
        timestamp = self.wall_ms()
        for i, (key, value) in enumerate(records):
            builder.append(i, timestamp=timestamp, key=key, value=value, headers=[])
        return bytes(builder.build())

    def _check_producer(
        self, loaded: LoadedPartition[GroupCoordinator], producer_id: int, producer_epoch: int, verified: bool
    ) -> None:
        """What the append would refuse, refused before the pure call changes any state."""
        probe = self._txn_batch(loaded, producer_id, producer_epoch, [(b"", b"")])
        batch = IdempotentBatch.of(parse_header(probe))
        assert batch is not None
        verdict = loaded.part.log.producer_state.check(batch, f"{self.topic}-{loaded.index}")
        if isinstance(verdict, Refuse):
            raise KetchError(verdict.message, code=verdict.code)
        if not verified and loaded.part.transaction_to_verify(probe) is not None:
            where = f"{self.topic}-{loaded.index}: producer {producer_id} epoch {producer_epoch}"
            if self.verify_transaction is None:
                raise KetchError(
                    f"{where} starts a transaction here and this broker has no transaction coordinator to verify it",
                    code=ErrorCode.INVALID_TXN_STATE,
                )
            # Its transaction here changed between the verification and the lock: the client retries.
            raise KetchError(f"{where}: the transaction here changed; retry", code=ErrorCode.CONCURRENT_TRANSACTIONS)

    async def write_txn_marker(
        self,
        index: int,
        producer_id: int,
        producer_epoch: int,
        commit: bool,
        coordinator_epoch: int,
        transaction_version: int = TV2,
    ) -> None:
        """WriteTxnMarkers on offsets partition ``index``: step 3 of the module docstring (the
        marker rule of ``transaction_version``, replication/transactions.py)."""
        loaded, _ = self.loaded_at(index, f"the markers of producer {producer_id}")
        async with loaded.lock:
            coordinator = loaded.coordinator
            if coordinator is None:
                raise KetchError(f"{self.topic}-{index} moved", code=ErrorCode.NOT_COORDINATOR)
            written = loaded.part.write_marker(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                min_insync_replicas=self.min_insync_replicas(),
                timestamp_ms=self.wall_ms(),
                sync=False,
                transaction_version=transaction_version,
            )
            if written is not None:
                self.appended(loaded)
                coordinator.complete_transaction(producer_id, commit)
        await self.committed(loaded)

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

    async def tick(self, loaded: LoadedPartition[GroupCoordinator]) -> None:
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
