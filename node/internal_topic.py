"""Coordinators that live on the partitions of an internal topic: the shared driver.

The group coordinator (``__consumer_offsets``) and the transaction
coordinator (``__transaction_state``) are both pure state machines whose
state is the log of one partition of an internal topic. This base class is
what they share; a subclass names the topic and builds its pure coordinator
from the records of a partition. The contract:

- The topic is created on first use (``find_coordinator``), through the
  controller like any topic: ``num_partitions`` partitions, replication
  factor ``replication_factor`` (-1: the broker's ``default_replication_factor``),
  ``cleanup.policy=compact`` (and ``retention.ms=-1``, should the policy ever
  gain ``delete``): the log cleaner keeps the latest record of every key (a group's metadata,
  each committed offset, each transactional id) and removes a tombstone (a key
  with a null value: a deleted offset or group) ``delete.retention.ms`` after
  it cleans it, so a load reads about one record per live key, not every write.
  Every record a coordinator writes has a key; ``append`` checks it, as the
  produce path does for any compacted topic.
- A key (group id, transactional id) lives on partition
  ``key_partition(key, partitions)``, Kafka's ``abs(hashCode) % partitions``.
- Load: when this broker becomes the leader of partition P (checked on every
  tick and whenever a key of P is asked for), it reads P's whole local log —
  the leader's log is the truth — decodes it (``decode_chunk``) and builds the
  coordinator (``build``). Until then calls for P are answered
  COORDINATOR_LOAD_IN_PROGRESS; for a partition it does not lead,
  NOT_COORDINATOR (the client looks the coordinator up again).
- Calls run one at a time per partition (a lock): the pure call, then the
  records it returns are appended to P as one batch (acks=all) before the lock
  is released, so the log order is the call order. The answer is sent once P's
  high watermark has passed everything appended so far — also for calls that
  wrote nothing, so an answer never claims state that could still be lost.
- ``run()`` reconciles leadership and ticks every loaded coordinator every
  ``tick_s`` (the subclass's ``tick``: session and transaction timeouts).
- Losing leadership of P (or an append that fails) drops its coordinator:
  every parked request is answered NOT_COORDINATOR, ``on_drop`` runs, and the
  next leader loads P from its log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from coordinator.groups import offsets_partition as key_partition
from coordinator.metadata import BrokerRegistration, TopicIdPartition
from coordinator.metadata.topic_config import CLEANUP_POLICY, COMPACT, RETENTION_MS
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from ketch.records import decode_batches
from node.broker import Broker
from node.fetch_waiters import FetchWaiters
from node.metrics import NodeMetrics
from node.produce_purgatory import await_replication
from node.topic_admin import TopicAdmin
from replication.partition import Partition

log = logging.getLogger("ketch.node.internal_topic")
C = TypeVar("C")
R = TypeVar("R")
APPEND_TIMEOUT_MS = 30_000
READ_CHUNK_BYTES = 1 << 20

__all__ = ["APPEND_TIMEOUT_MS", "InternalTopicCoordinators", "LoadedPartition", "key_partition"]


@dataclass
class LoadedPartition(Generic[C]):
    """One partition of the internal topic this broker leads: its coordinator once loaded."""

    index: int
    part: Partition
    leader_epoch: int
    coordinator: C | None = None  # None while loading
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    parked: dict[int, asyncio.Future[Any]] = field(default_factory=dict)
    appended_end: int = 0  # the log end after this coordinator's last append


class InternalTopicCoordinators(Generic[C]):
    """Leadership, loading, ordered appends and commit waits for one internal topic's coordinators."""

    topic: str = ""
    what: str = "coordinator"  # "group", "transactional id": how errors name a key
    tick_s: float = 0.2

    def __init__(
        self,
        broker: Broker,
        admin: TopicAdmin,
        waiters: FetchWaiters,
        metrics: NodeMetrics,
        *,
        num_partitions: int,
        replication_factor: int,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.broker = broker
        self.admin = admin
        self.waiters = waiters
        self.metrics = metrics
        self.config = broker.config
        self.num_partitions = num_partitions
        self.replication_factor = replication_factor
        self.wall_ms = wall_ms
        self.partitions: dict[int, LoadedPartition[C]] = {}
        self._loads: set[asyncio.Task[None]] = set()

    # -- what a subclass provides -------------------------------------------------

    def decode_chunk(self, index: int, data: bytes, offset: int) -> tuple[list[Any], int]:
        """Items of the log bytes ``data`` read at ``offset``, and the offset after them.

        By default the (key, value) of every record; a coordinator that needs batch
        headers (transactional batches, markers) overrides it."""
        decoded = decode_batches(self.topic, index, data, offset)
        return [(r.key, r.value) for r in decoded.records], decoded.next_offset

    def build(self, index: int, items: list[Any]) -> C:
        raise NotImplementedError

    def describe_loaded(self, coordinator: C) -> str:
        return ""

    def on_drop(self, loaded: LoadedPartition[C], why: str) -> None:
        """Called after ``loaded`` lost its coordinator."""

    # -- where keys live ------------------------------------------------------------

    def partition_count(self) -> int:
        topic = self.broker.image.topic(self.topic)
        if topic is None:
            raise KetchError(
                f"the internal topic {self.topic} does not exist yet; find the coordinator first",
                code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
            )
        return len(topic.partitions)

    def index_of(self, key: str) -> int:
        return key_partition(key, self.partition_count())

    async def find_coordinator(self, key: str) -> BrokerRegistration:
        """The registration of ``key``'s coordinator (its address per listener); creates the topic when missing."""
        if self.broker.image.topic(self.topic) is None:
            await self._create_topic()
        image = self.broker.image
        topic = image.topic(self.topic)
        index = self.index_of(key)
        state = topic.partitions.get(index) if topic is not None else None
        leader = image.broker(state.leader) if state is not None and state.leader >= 0 else None
        if leader is None:
            raise KetchError(
                f"{self.topic}-{index}, which holds {self.what} {key!r}, has no leader right now",
                code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
            )
        return leader

    async def _create_topic(self) -> None:
        rf = self.replication_factor
        request = pb.CreateTopicsRequest()
        request.topics.add(
            name=self.topic,
            num_partitions=self.num_partitions,
            replication_factor=rf if rf > 0 else self.config.default_replication_factor,
            configs={CLEANUP_POLICY: COMPACT, RETENTION_MS: "-1"},
        )
        result = (await self.admin.create(request)).topics[0]
        if result.error_code not in (ErrorCode.NONE, ErrorCode.TOPIC_ALREADY_EXISTS):
            raise KetchError(
                f"cannot create {self.topic}: {result.error_message}", code=ErrorCode.COORDINATOR_NOT_AVAILABLE
            )
        log.info("created %s", self.topic)

    def loaded(self, key: str) -> tuple[LoadedPartition[C], C]:
        """The loaded partition and coordinator of ``key``, or NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS."""
        return self.loaded_at(self.index_of(key), f"{self.what} {key!r}")

    def loaded_at(self, index: int, who: str) -> tuple[LoadedPartition[C], C]:
        if index not in self.partitions:
            self.reconcile()  # leadership may have arrived since the last tick
        loaded = self.partitions.get(index)
        if loaded is None or not self.still_leads(loaded):
            raise KetchError(
                f"this broker is not the coordinator of {who} ({self.topic}-{index})", code=ErrorCode.NOT_COORDINATOR
            )
        if loaded.coordinator is None:
            raise KetchError(
                f"{who}: {self.topic}-{index} is still loading", code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
            )
        return loaded, loaded.coordinator

    async def read(self, key: str, query: Callable[[C], R]) -> R:
        """A call that writes nothing; answered once everything appended before it has committed."""
        loaded, coordinator = self.loaded(key)
        response = query(coordinator)
        await self.committed(loaded)
        return response

    # -- writing ----------------------------------------------------------------------

    def append(self, loaded: LoadedPartition[C], batch: bytes | None, *, transaction_verified: bool = False) -> None:
        """Append one built batch to the partition (acks=all); the caller holds ``loaded.lock``.
        ``transaction_verified``: a transactional batch whose transaction the coordinator verified (KIP-890)."""
        if batch is None:
            return
        topic = self.broker.image.topic(self.topic)
        config = self.broker.topic_config(topic)
        try:
            loaded.part.append(
                batch,
                max_message_bytes=max(config.max_message_bytes, len(batch)),
                acks=-1,
                min_insync_replicas=config.min_insync_replicas,
                sync=False,
                transaction_verified=transaction_verified,
                require_keys=config.compacted,
            )
        except KetchError as exc:
            self.drop(loaded, f"append failed: {exc.message}")
            raise KetchError(f"{self.topic}-{loaded.index}: {exc.message}", code=ErrorCode.NOT_COORDINATOR) from None
        self.appended(loaded)

    def appended(self, loaded: LoadedPartition[C]) -> None:
        """Note a write the caller made to ``loaded.part`` itself (under ``loaded.lock``)."""
        loaded.appended_end = loaded.part.log.log_end_offset
        self.waiters.notify((self.topic, loaded.index))

    def min_insync_replicas(self) -> int:
        topic = self.broker.image.topic(self.topic)
        return self.broker.topic_config(topic).min_insync_replicas

    async def committed(self, loaded: LoadedPartition[C]) -> None:
        """Wait until the high watermark passes everything this coordinator appended."""
        if loaded.part.high_watermark >= loaded.appended_end:
            return
        try:
            await await_replication(
                loaded.part,
                loaded.appended_end - 1,
                APPEND_TIMEOUT_MS,
                self.min_insync_replicas(),
                self.waiters,
                self.metrics,
            )
        except KetchError as exc:
            self.drop(loaded, f"write not replicated: {exc.message}")
            raise KetchError(f"{self.topic}-{loaded.index}: {exc.message}", code=ErrorCode.NOT_COORDINATOR) from None

    # -- leadership -----------------------------------------------------------------------

    def still_leads(self, loaded: LoadedPartition[C]) -> bool:
        part = loaded.part
        return part.is_leader and part.leader_epoch == loaded.leader_epoch

    def reconcile(self) -> None:
        """Load the partitions this broker newly leads; drop those it lost."""
        topic = self.broker.image.topic(self.topic)
        replicas = self.broker.replicas()
        for index, loaded in list(self.partitions.items()):
            tp = TopicIdPartition(topic.topic_id if topic is not None else "", index)
            if not self.still_leads(loaded) or replicas.get(tp) is not loaded.part:
                self.drop(loaded, "leadership moved")
        if topic is None:
            return
        for tp, part in replicas.items():
            if tp.topic_id != topic.topic_id or not part.is_leader or tp.partition in self.partitions:
                continue
            fresh: LoadedPartition[C] = LoadedPartition(tp.partition, part, part.leader_epoch)
            self.partitions[tp.partition] = fresh
            task = asyncio.get_running_loop().create_task(self._load(fresh), name=f"load-{self.topic}-{tp.partition}")
            self._loads.add(task)
            task.add_done_callback(self._loads.discard)

    async def _load(self, loaded: LoadedPartition[C]) -> None:
        started = time.monotonic()
        items: list[Any] = []
        plog = loaded.part.log
        offset, end = plog.log_start_offset, plog.log_end_offset
        try:
            while offset < end:
                chunk, next_offset = self.decode_chunk(loaded.index, plog.read(offset, READ_CHUNK_BYTES), offset)
                if next_offset <= offset:
                    raise RuntimeError(f"no progress reading offset {offset}")
                items.extend(chunk)
                offset = next_offset
                await asyncio.sleep(0)  # a long log must not stall the node's other work
            coordinator = self.build(loaded.index, items)
        except Exception as exc:
            log.error("cannot load %s-%d: %s", self.topic, loaded.index, exc)
            self.drop(loaded, f"load failed: {exc}")
            return
        if self.partitions.get(loaded.index) is not loaded or not self.still_leads(loaded):
            return
        loaded.appended_end = end
        loaded.coordinator = coordinator
        log.info(
            "coordinator for %s-%d loaded: %d items%s in %.2fs",
            self.topic,
            loaded.index,
            len(items),
            self.describe_loaded(coordinator),
            time.monotonic() - started,
        )

    def drop(self, loaded: LoadedPartition[C], why: str) -> None:
        if self.partitions.get(loaded.index) is loaded:
            del self.partitions[loaded.index]
            log.info("coordinator for %s-%d dropped: %s", self.topic, loaded.index, why)
        loaded.coordinator = None
        for future in loaded.parked.values():
            if not future.done():
                future.set_exception(KetchError(f"{self.topic}-{loaded.index}: {why}", code=ErrorCode.NOT_COORDINATOR))
        loaded.parked.clear()
        self.on_drop(loaded, why)

    # -- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        """Every ``tick_s``: reconcile leadership, then ``tick`` each loaded partition."""
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                self.reconcile()
                for loaded in list(self.partitions.values()):
                    await self.tick(loaded)
            except Exception:
                log.exception("%s coordinator tick failed", self.topic)

    async def tick(self, loaded: LoadedPartition[C]) -> None:
        """A subclass's timers (sessions, timeouts)."""

    def coordinators(self) -> Sequence[C]:
        return [loaded.coordinator for loaded in list(self.partitions.values()) if loaded.coordinator is not None]

    def close(self) -> None:
        for task in list(self._loads):
            task.cancel()
        for loaded in list(self.partitions.values()):
            self.drop(loaded, "broker shutting down")
