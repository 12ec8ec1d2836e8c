"""One ``__consumer_offsets`` partition led by this process, run by the group coordinator's own driver.

The harness of bench/group_load.py: the smallest set of real objects that
runs the code paths a broker runs for one offsets partition, without a node,
a network or a controller:

- a ``NodeStore`` (RocksDB) in a temporary directory and partition 0 of
  ``__consumer_offsets`` in it: a ``Partition`` that leads with one replica,
  so an acks=all append commits at once;
- a real ``GroupManager`` over a real ``Broker`` whose metadata image is empty
  (so the topic's configs are the node defaults), a real ``FetchWaiters`` and
  ``NodeMetrics``; its topic admin is never called (the partition is opened
  here, not created through a controller);
- ``commit``: one OffsetCommit as ``GroupManager.call`` runs it, the pure
  ``GroupCoordinator.commit_offsets`` then ``GroupManager._append`` (its
  records, ``encode_record``, as one acks=all batch);
- ``load``: ``InternalTopicCoordinators._load``, what a new leader runs;
- ``clean``: one round of the node's cleaner for this replica, with the
  bounds ``LogCleaner.clean_round`` reads and ``clean_once``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

from coordinator.groups import GroupCoordinator, OffsetCommit
from coordinator.groups.records import CommittedOffset
from coordinator.metadata.topic_config import CLEANUP_POLICY, COMPACT
from ketch.assignors.base import TopicPartition
from ketch.recordbatch import iter_headers
from node.broker import Broker
from node.catalog import effective_config
from node.config import NodeConfig
from node.fetch_waiters import FetchWaiters
from node.group_coordinator import OFFSETS_TOPIC, GroupManager
from node.internal_topic import LoadedPartition
from node.lifecycle import BrokerEpoch
from node.log_cleaner import Bounds, CleanerStats, clean_once, cleaner_config, read_batches
from node.metrics import NodeMetrics
from replication.partition import Partition
from replication.rocks_store import NodeStore

EPOCH = 1
Offsets = dict[str, dict[TopicPartition, CommittedOffset]]


@dataclass(frozen=True)
class LogFigures:
    bytes: int
    batches: int
    records: int


class OffsetsPartition:
    """Partition 0 of ``__consumer_offsets`` led by this process, with the group coordinator's driver."""

    def __init__(self, store: NodeStore, config: NodeConfig) -> None:
        self.store = store
        self.config = config
        broker = Broker(config, store, BrokerEpoch(), lambda _topic, _index: None)
        self.manager = GroupManager(broker, cast(Any, None), FetchWaiters(), NodeMetrics())
        self.part = Partition(OFFSETS_TOPIC, 0, store.partition_log(0))
        self.part.become_leader(
            config.node_id,
            (config.node_id,),
            (config.node_id,),
            EPOCH,
            EPOCH,
            lag_time_max_ms=config.replica_lag_time_max_ms,
            now_ms=int(time.monotonic() * 1000),
        )
        self.writer = LoadedPartition(0, self.part, EPOCH, coordinator=GroupCoordinator(self.manager.group_config))

    def commit(self, group_id: str, tp: TopicPartition, offset: int) -> None:
        """One OffsetCommit call, as GroupManager.call runs it: the pure call, then its records as one batch."""
        coordinator = self.writer.coordinator
        assert coordinator is not None
        result = coordinator.commit_offsets(
            group_id, "", -1, {tp: OffsetCommit(offset)}, now_ms=self.manager.clock_ms(), timestamp_ms=time_ms()
        )
        self.manager._append(self.writer, result.records)

    def load(self) -> tuple[GroupCoordinator, float]:
        """A new coordinator's load of the partition, and its seconds."""
        loaded: LoadedPartition[GroupCoordinator] = LoadedPartition(0, self.part, EPOCH)
        self.manager.partitions[0] = loaded
        started = time.perf_counter()
        asyncio.run(self.manager._load(loaded))
        elapsed = time.perf_counter() - started
        del self.manager.partitions[0]
        if loaded.coordinator is None:
            raise RuntimeError("the coordinator did not load (see the log above)")
        return loaded.coordinator, elapsed

    def clean(self) -> tuple[CleanerStats, float]:
        """One cleaner round for this replica, as LogCleaner.clean_round reads it (the topic compacted,
        the rest node defaults); its seconds."""
        plog = self.part.log
        topic_config = effective_config({CLEANUP_POLICY: COMPACT}, self.config, {})
        bounds = Bounds(
            self.part.high_watermark,
            self.part.last_stable_offset,
            plog.generation,
            frozenset(plog.producer_state.entries),
            cleaner_config(topic_config),
        )
        stats = CleanerStats()
        started = time.perf_counter()
        if not clean_once(plog, bounds, time_ms(), stats, (OFFSETS_TOPIC, 0)):
            raise RuntimeError(f"the cleaner did not run a pass (dirty ratio {stats.dirty})")
        return stats, time.perf_counter() - started

    def compact_rocksdb(self) -> None:
        """Let RocksDB compact the log column family now (dropping the delete tombstones the cleaner left)."""
        self.store.cf["log"].compact_range(None, None)

    def figures(self) -> LogFigures:
        plog = self.part.log
        batches = records = 0
        for batch in read_batches(plog, plog.log_start_offset, plog.log_end_offset):
            batches += 1
            records += iter_headers(batch)[0].records_count
        return LogFigures(plog.size_bytes, batches, records)


def time_ms() -> int:
    return int(time.time() * 1000)


def committed(coordinator: GroupCoordinator) -> Offsets:
    return {group_id: dict(group.offsets) for group_id, group in coordinator.groups.items()}


@contextmanager
def offsets_partition() -> Iterator[OffsetsPartition]:
    with tempfile.TemporaryDirectory(prefix="ketch-group-load-") as tmp:
        config = NodeConfig(data_dir=tmp, offsets_topic_num_partitions=1)
        store = NodeStore.open(f"{tmp}/rocksdb")
        try:
            yield OffsetsPartition(store, config)
        finally:
            store.close()
