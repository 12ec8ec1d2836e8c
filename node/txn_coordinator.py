"""The transaction coordinator's driver: the pure ``TransactionCoordinator`` over ``__transaction_state``.

A transactional id lives on the leader of its partition of the internal topic
``__transaction_state`` (``key_partition(id, partitions)``). This broker runs
one pure ``coordinator.transactions.TransactionCoordinator`` per partition it
leads; creating the topic (``transaction_state_num_partitions`` partitions,
replication factor ``transaction_state_replication_factor``), loading a
partition when leadership arrives, ordered acks=all appends and answering only
after they commit are node/internal_topic.py's. What is particular here:

- InitProducerId for an id that needs a producer id (new, or its epoch is
  exhausted) takes one from this broker's ``ProducerIdManager`` first; the
  pure call then decides (an id taken but not used is skipped, never reused).
- Marker jobs: a result's ``MarkerJob`` (Prepare* is committed) is sent as
  WriteTxnMarkers to the current leader of every partition of the job, with
  this partition's leader epoch as the coordinator epoch, and retried every
  ``MARKER_RETRY_S`` until every partition answered NONE (a partition whose
  topic was deleted counts as done). Then ``markers_written`` moves the
  transaction to Complete*. One sender per job; every tick restarts the
  senders of ``pending_markers()`` that are not running, so jobs survive a
  coordinator failover (the new leader loads Prepare* and resends: markers are
  idempotent at the partition, rule 4 of the protocol).
- EndTxn is answered once the transaction is complete (``end_txn`` says why).
  Its transaction version (TV1 from the Kafka listener's EndTxn below v5,
  TV2 otherwise) goes to the pure call, and the job's version to every
  marker. A TV1 job carries the transaction's own epoch, so the senders of
  transactions N and N + 1 have the same key. N + 1 cannot start before N's
  sender writes Complete* in its last step (Add* is CONCURRENT_TRANSACTIONS
  until then), and a client waits for its EndTxn, which waits for that
  sender; were N + 1 ended while N's sender still waits for its Complete*
  record to commit, ``_send`` would skip N + 1's job as running, and the
  next tick starts it (``pending_markers``).
- ``verify`` (KIP-890) answers a partition leader's AddPartitionsToTxn
  verify_only from the loaded state, after everything appended has committed.
- ``run()`` ticks every ``tick_s``: leadership, timeouts (``tick``), senders.

Clocks: transaction start times and timeouts use wall-clock milliseconds, as
Kafka's do, so a new coordinator after failover judges them on the same scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import grpc

from coordinator.metadata import BrokerRegistration
from coordinator.transactions import (
    TV2,
    MarkerJob,
    TransactionCoordinator,
    TransactionMetadata,
    TxnAnswer,
    TxnConfig,
    TxnResult,
    decode_record,
    encode_record,
)
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from ketch.records import build_batch
from ketch.topic_partition import TopicPartition
from node.broker import Broker
from node.broker_channels import BrokerChannels
from node.fetch_waiters import FetchWaiters
from node.internal_topic import InternalTopicCoordinators, LoadedPartition
from node.metrics import NodeMetrics
from node.producer_ids import ProducerIdManager
from node.topic_admin import TopicAdmin

log = logging.getLogger("ketch.node.transactions")
R = TypeVar("R")
TRANSACTION_STATE_TOPIC = "__transaction_state"
MARKER_RETRY_S = 0.1
MARKER_TIMEOUT_S = 35.0


class TransactionManager(InternalTopicCoordinators[TransactionCoordinator]):
    topic = TRANSACTION_STATE_TOPIC
    what = "transactional id"

    def __init__(
        self,
        broker: Broker,
        admin: TopicAdmin,
        waiters: FetchWaiters,
        metrics: NodeMetrics,
        producer_ids: ProducerIdManager,
        channels: BrokerChannels,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        config = broker.config
        super().__init__(
            broker,
            admin,
            waiters,
            metrics,
            num_partitions=config.transaction_state_num_partitions,
            replication_factor=config.transaction_state_replication_factor,
            wall_ms=wall_ms,
        )
        self.producer_ids = producer_ids
        self.channels = channels
        self.txn_config = TxnConfig(max_timeout_ms=config.transaction_max_timeout_ms)
        self._senders: dict[tuple[int, str, int, int], asyncio.Task[None]] = {}

    # -- the internal-topic hooks ----------------------------------------------------

    def build(self, index: int, items: list[Any]) -> TransactionCoordinator:
        records = [decode_record(key or b"", value) for key, value in items]
        return TransactionCoordinator.load(records, self.txn_config)

    def describe_loaded(self, coordinator: TransactionCoordinator) -> str:
        return f", {len(coordinator.listing())} transactional ids"

    def on_drop(self, loaded: LoadedPartition[TransactionCoordinator], why: str) -> None:
        for key, task in list(self._senders.items()):
            if key[0] == loaded.index:
                task.cancel()

    async def find_coordinator(self, key: str) -> BrokerRegistration:
        if not key:
            raise KetchError("transactional id is empty", code=ErrorCode.INVALID_REQUEST)
        return await super().find_coordinator(key)

    # -- calls ---------------------------------------------------------------------

    async def call(self, tid: str, command: Callable[[TransactionCoordinator], TxnResult[R]]) -> R:
        """Run ``command``; append its records; answer after they commit; start its marker jobs."""
        loaded, coordinator = self.loaded(tid)
        async with loaded.lock:
            if loaded.coordinator is not coordinator:
                raise KetchError(f"transactional id {tid!r} moved", code=ErrorCode.NOT_COORDINATOR)
            result = command(coordinator)
            self._append(loaded, result.records)
        await self.committed(loaded)
        self._send(loaded, result.markers)
        return result.response

    def _append(self, loaded: LoadedPartition[TransactionCoordinator], records: Iterable[TransactionMetadata]) -> None:
        encoded = [encode_record(r) for r in records]
        if encoded:
            self.append(loaded, build_batch(encoded, timestamp=self.wall_ms()))

    async def init_producer_id(self, tid: str, timeout_ms: int) -> TxnAnswer:
        _, coordinator = self.loaded(tid)
        new_pid = await self.producer_ids.generate_producer_id() if coordinator.needs_producer_id(tid) else None

        def init(c: TransactionCoordinator) -> TxnResult[TxnAnswer]:
            if c.needs_producer_id(tid) and new_pid is None:  # it changed while this call waited for an id
                raise KetchError(f"transactional id {tid!r} is being re-initialized", ErrorCode.CONCURRENT_TRANSACTIONS)
            return c.init_producer_id(tid, timeout_ms, self.wall_ms(), new_pid)

        return await self.call(tid, init)

    async def end_txn(
        self, tid: str, producer_id: int, epoch: int, commit: bool, transaction_version: int = TV2
    ) -> TxnAnswer:
        """EndTxn, answered once the transaction is complete (markers written, Complete* committed).

        Kafka answers at Prepare* and lets the producer's next AddPartitionsToTxn retry
        CONCURRENT_TRANSACTIONS until the markers are out; waiting here instead costs the commit
        the same marker round, saves the next transaction those retries, and means a
        read_committed consumer sees the transaction once commit_transaction() returns. The
        decision is durable at Prepare*, so when the wait ends early (``MARKER_TIMEOUT_S``, or this
        broker loses the partition) the answer is the same: the next coordinator completes it."""
        now = self.wall_ms()
        loaded, _ = self.loaded(tid)
        answer = await self.call(tid, lambda c: c.end_txn(tid, producer_id, epoch, commit, now, transaction_version))
        sender = self._senders.get((loaded.index, tid, answer.producer_id, answer.producer_epoch))
        if answer.error_code == ErrorCode.NONE and sender is not None:
            await asyncio.wait({sender}, timeout=MARKER_TIMEOUT_S)  # neither raises nor cancels it
        return answer

    async def verify(self, tid: str, producer_id: int, epoch: int, partitions: list[TopicPartition]) -> TxnAnswer:
        loaded, coordinator = self.loaded(tid)
        answer = coordinator.verify(tid, producer_id, epoch, partitions)
        await self.committed(loaded)
        return answer

    # -- markers ----------------------------------------------------------------------

    def _send(self, loaded: LoadedPartition[TransactionCoordinator], jobs: Iterable[MarkerJob]) -> None:
        for job in jobs:
            key = (loaded.index, job.transactional_id, job.producer_id, job.producer_epoch)
            running = self._senders.get(key)
            if running is not None and not running.done():
                continue
            task = asyncio.get_running_loop().create_task(self._send_job(loaded, job), name=f"markers-{key}")
            self._senders[key] = task
            task.add_done_callback(functools.partial(self._sender_done, key))

    def _sender_done(self, key: tuple[int, str, int, int], task: asyncio.Task[None]) -> None:
        if self._senders.get(key) is task:
            del self._senders[key]

    async def _send_job(self, loaded: LoadedPartition[TransactionCoordinator], job: MarkerJob) -> None:
        remaining = set(job.partitions)
        started = time.monotonic()
        while remaining:
            if loaded.coordinator is None or not self.still_leads(loaded):
                return  # the next leader resends from its loaded Prepare* state
            by_leader: dict[int, list[TopicPartition]] = {}
            for tp in list(remaining):
                topic = self.broker.image.topic(tp.topic)
                state = topic.partitions.get(tp.partition) if topic is not None else None
                if state is None:
                    remaining.discard(tp)  # deleted: nothing left to mark
                elif state.leader >= 0:
                    by_leader.setdefault(state.leader, []).append(tp)
            results = await asyncio.gather(
                *(self._write_markers(leader, job, tps, loaded.leader_epoch) for leader, tps in by_leader.items())
            )
            for done in results:
                remaining -= done
            if remaining:
                if time.monotonic() - started > MARKER_TIMEOUT_S:
                    log.warning(
                        "markers of %s (pid %d) still pending on %s",
                        job.transactional_id,
                        job.producer_id,
                        sorted(remaining),
                    )
                    started = time.monotonic()
                await asyncio.sleep(MARKER_RETRY_S)
        with contextlib.suppress(KetchError):
            tid, pid, epoch = job.transactional_id, job.producer_id, job.producer_epoch
            await self.call(tid, lambda c: c.markers_written(tid, pid, epoch, job))
            outcome = "committed" if job.commit else "aborted"
            self.metrics.transactions_ended.labels(outcome).inc()

    async def _write_markers(
        self, leader: int, job: MarkerJob, partitions: list[TopicPartition], coordinator_epoch: int
    ) -> set[TopicPartition]:
        stub = self.channels.stub(leader)
        if stub is None:
            return set()
        request = pb.WriteTxnMarkersRequest()
        marker = request.markers.add(
            producer_id=job.producer_id,
            producer_epoch=job.producer_epoch,
            commit=job.commit,
            coordinator_epoch=coordinator_epoch,
            transaction_version=job.transaction_version,
        )
        for tp in partitions:
            marker.partitions.add(topic=tp.topic, partition=tp.partition)
        try:
            response = await stub.WriteTxnMarkers(request, timeout=MARKER_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            log.debug("WriteTxnMarkers to broker %d failed: %s", leader, exc.code().name)
            return set()
        done = set()
        for result in response.results:
            tp = TopicPartition(result.topic, result.partition)
            if result.error_code in (ErrorCode.NONE, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION) and tp in partitions:
                done.add(tp)  # an unknown partition was deleted: nothing left to mark there
            elif result.error_code != ErrorCode.NONE:
                log.debug("marker for pid %d on %s: %s", job.producer_id, tp, result.error_message)
        return done

    # -- the loop -----------------------------------------------------------------------

    async def tick(self, loaded: LoadedPartition[TransactionCoordinator]) -> None:
        coordinator = loaded.coordinator
        if coordinator is None:
            return
        async with loaded.lock:
            if loaded.coordinator is not coordinator:
                return
            result = coordinator.tick(self.wall_ms())
            try:
                self._append(loaded, result.records)
            except KetchError:
                return
        if result.markers:
            self.metrics.transactions_ended.labels("timed_out").inc(len(result.markers))
        with contextlib.suppress(KetchError):
            await self.committed(loaded)
            self._send(loaded, (*result.markers, *coordinator.pending_markers()))

    def ongoing(self) -> int:
        return sum(len(c.listing(["Ongoing"])) for c in self.coordinators())

    def transactional_ids(self) -> int:
        return sum(len(c.listing()) for c in self.coordinators())

    async def close_channels(self) -> None:
        for task in list(self._senders.values()):
            task.cancel()
        await self.channels.close()
