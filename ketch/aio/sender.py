"""The producer's sender: drains ready batches into Produce requests.

Rules:
- One task (``run``) loops: expire batches past ``delivery_timeout_ms``,
  drain one request's worth of ready batches per broker that has a free
  in-flight slot (``max_in_flight`` per broker), start those requests, then
  sleep until woken (a batch opened or filled, a request finished, a flush
  began, metadata arrived) or until the next batch's linger or backoff ends.
- A request groups a partition's batches into one ``PartitionRecords``; the
  broker appends them contiguously, so batch ``k`` starts at the partition's
  ``base_offset`` plus the records of batches ``0..k-1``.
- acks=0: futures complete with offset -1 as soon as the request is issued;
  the answer is awaited only to free the in-flight slot.
- Errors: a retriable code (``ketch.errors.RETRIABLE``) or a transport failure
  puts the batch back at the head of its partition after an exponential
  backoff (``retry_backoff_ms`` doubling to ``retry_backoff_max_ms``, +-20 %
  jitter), while it has retries left and its delivery timeout allows;
  REFRESH_METADATA codes and transport failures also refresh metadata (at
  most once per backoff), whether or not the batch is retried: with
  ``retries=0`` the next batch must still find the new leader.
  MESSAGE_TOO_LARGE / RECORD_LIST_TOO_LARGE / gRPC RESOURCE_EXHAUSTED for a
  multi-batch request re-send its batches one per request before anything fails.
  Everything else fails the batch's futures.
- Idempotence (the accumulator's ``idempotence`` bookkeeping): nothing is
  drained before the producer has an id; the sender gets one with
  InitProducerId from any broker (retrying with backoff) at the start and
  whenever the epoch overflowed; a refusal that is not retriable (the authorizer's
  CLUSTER_AUTHORIZATION_FAILED) fails the queued batches with it at once. Per batch answer: DUPLICATE_SEQUENCE_NUMBER
  is a success (offset unknown, -1); OUT_OF_ORDER_SEQUENCE_NUMBER and
  UNKNOWN_PRODUCER_ID are reported to the bookkeeping (an epoch bump and a
  rewrite when the batch is the oldest unacknowledged) and the batch is
  retried in sequence order; any error about a stamp the batch no longer
  carries (it was rewritten while in flight) is retried;
  INVALID_PRODUCER_EPOCH and PRODUCER_FENCED fail the batch.
- Transactions (``transactions`` set): no InitProducerId of its own (the
  producer's ``init_transactions`` does it); every Produce carries the
  transactional id. Before a partition's first batch of a transaction the
  accumulator marks it pending; after each drain, all pending partitions go
  in one AddPartitionsToTxn (one at a time), whose answer lets them drain. A
  sequence error fails the batch (the transaction becomes abortable; only the
  coordinator bumps a transactional epoch). While the transaction cannot
  continue (abortable, fatal, aborting) queued batches are failed at once.
- Failover (README "Failover"): a Produce in flight for longer than
  ``LEADER_CHECK_S`` makes the sender refresh metadata, asking other brokers
  first (connection.py), every backoff while it lasts. When a refresh shows a
  partition of an in-flight request led by another broker at a higher leader
  epoch, the request is abandoned like a timed-out one (outcome unknown,
  retried by the usual rules; idempotence makes the retry safe): a paused or
  cut-off leader cannot hold writes past the controller moving its
  leadership. And when a refresh shows a new leader for a partition whose
  batches are backing off after failing at the old one, they go at once
  (Kafka's KIP-951).
- ``wakeup`` may be called from any thread; it costs a loop call only when the
  sender is not already due to wake.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from ketch.aio.accumulator import Accumulator, ProducerBatch
from ketch.aio.connection import Cluster, Connection, PartitionInfo
from ketch.aio.transactions import TransactionClient
from ketch.api.v1 import ketch_pb2
from ketch.errors import (
    REFRESH_METADATA,
    ErrorCode,
    KetchConnectionError,
    KetchError,
    MessageTooLargeError,
    RequestTimedOutError,
    error_for,
)
from ketch.topic_partition import TopicPartition

__all__ = ["Sender"]

LEADER_CHECK_S = 1.0  # a Produce in flight this long makes the sender look for a leader change


@dataclass
class InFlight:
    """One Produce call in flight: where, since when, each partition's leader epoch when it was sent."""

    node: int
    started: float
    epochs: dict[TopicPartition, int]
    call: asyncio.Future[Any]
    moved: TopicPartition | None = None  # the partition found led elsewhere; the call was cancelled for it


_TOO_LARGE = (ErrorCode.MESSAGE_TOO_LARGE, ErrorCode.RECORD_LIST_TOO_LARGE)
_SEQUENCE_ERRORS = (ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER, ErrorCode.UNKNOWN_PRODUCER_ID)


class Sender:
    def __init__(
        self,
        conn: Connection,
        acc: Accumulator,
        *,
        acks: int,
        request_timeout_ms: int,
        max_request_size: int,
        max_in_flight: int,
        retries: int,
        delivery_timeout_ms: int,
        retry_backoff_ms: int,
        retry_backoff_max_ms: int,
        metadata_max_age_ms: int,
        transactions: TransactionClient | None = None,
    ) -> None:
        self.conn = conn
        self.txn = transactions
        self._adding: asyncio.Task[None] | None = None  # the AddPartitionsToTxn in progress
        self.acc = acc
        self.acks = acks
        self.request_timeout_ms = request_timeout_ms
        self.max_request_size = max_request_size
        self.max_in_flight = max(1, max_in_flight)
        self.retries = retries
        self.delivery_timeout = delivery_timeout_ms / 1000
        self.backoff = retry_backoff_ms / 1000
        self.backoff_max = max(retry_backoff_max_ms, retry_backoff_ms) / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.wake = asyncio.Event()
        self.closed = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake_pending = False
        self._in_flight: dict[int, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refreshing = False
        self._last_refresh = 0.0
        self._flights: list[InFlight] = []
        self._backing_off: dict[TopicPartition, int] = {}  # partition → the broker its batches failed at
        self._rng = random.Random()
        self._initializing = False
        self.init_error: KetchError | None = None  # why the last InitProducerId failed

    def bind(self) -> None:
        """Remember the running loop (called on it before ``run``)."""
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    def wakeup(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self.wake.set()
        elif not self._wake_pending and self.loop is not None:
            self._wake_pending = True
            self.loop.call_soon_threadsafe(self.wake.set)

    async def stop(self) -> None:
        """Cancel outstanding requests (their batches stay incomplete)."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def run(self) -> None:
        while True:
            self._wake_pending = False
            self.wake.clear()
            now = time.monotonic()
            for b in self.acc.expire(now, self.delivery_timeout):
                self.acc.finish(b, None, self._expired(b, now))
            cluster = self.conn.cluster
            if now - cluster.updated_at > self.metadata_max_age and self.conn.tracked:
                self.refresh_soon()
            idem = self.acc.idempotence
            txn = self.txn
            if txn is not None:
                dropped = txn.manager.dropped_batch_error()
                if dropped is not None:
                    self.acc.abort_all(dropped)
            elif idem is not None and idem.needs_producer_id and not self._initializing and not self.closed:
                self._initializing = True
                self._spawn(self._init_producer_id())
            by_node, next_in, unknown_leader = self.acc.drain(cluster, self._can_send, self.max_request_size, now)
            if txn is not None and self._adding is None and not self.closed:
                tps = txn.manager.partitions_to_add()
                if tps:
                    self._adding = asyncio.ensure_future(self._add_partitions(tps))
                    self._tasks.add(self._adding)
                    self._adding.add_done_callback(self._tasks.discard)
            if unknown_leader:
                self.refresh_soon()
                next_in = min(next_in or self.backoff, self.backoff)
            if self._flights:
                slow = {f.node for f in self._flights if now - f.started >= LEADER_CHECK_S}
                if slow:
                    self.refresh_soon(avoid=slow)
                else:
                    due = min(f.started for f in self._flights) + LEADER_CHECK_S - now
                    next_in = due if next_in is None else min(next_in, due)
            for node, batches in by_node.items():
                self._in_flight[node] = self._in_flight.get(node, 0) + 1
                self._spawn(self._produce(node, batches))
            if by_node:
                await asyncio.sleep(0)  # let requests go out before draining again
                continue
            if next_in is None and self.acc.has_queued():
                next_in = 1.0  # batches waiting on a busy broker, or for expiry checks
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_in):
                    await self.wake.wait()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _can_send(self, node: int) -> bool:
        return self._in_flight.get(node, 0) < self.max_in_flight

    def _expired(self, b: ProducerBatch, now: float) -> KetchError:
        why = f"; no producer id yet: {self.init_error}" if self.init_error and b.base_sequence < 0 else ""
        return RequestTimedOutError(
            f"expiring {b.record_count} record(s) for {b.tp.topic}-{b.tp.partition}: "
            f"{(now - b.created) * 1000:.0f} ms has passed since batch creation "
            f"(delivery_timeout_ms {self.delivery_timeout * 1000:.0f}){why}"
        )

    async def _init_producer_id(self) -> None:
        """A producer id and epoch for the idempotence bookkeeping, from any broker (KIP-98)."""
        idem = self.acc.idempotence
        assert idem is not None
        attempts = 0
        try:
            while not self.closed:
                request = ketch_pb2.InitProducerIdRequest(producer_id=-1, producer_epoch=-1)
                try:
                    response: ketch_pb2.InitProducerIdResponse = await self.conn.call_any(  # type: ignore[assignment]
                        "InitProducerId", request, self.request_timeout_ms / 1000
                    )
                    if response.error_code != 0:
                        raise error_for(response.error_code, response.error_message)
                except KetchError as e:
                    self.init_error = e
                    attempts += 1
                    if not e.retriable:  # e.g. CLUSTER_AUTHORIZATION_FAILED: waiting cannot help these records
                        self.acc.abort_all(e)
                    await asyncio.sleep(min(self.backoff * 2 ** (attempts - 1), self.backoff_max))
                    continue
                with self.acc.lock:
                    idem.set_producer(response.producer_id, response.producer_epoch)
                self.init_error = None
                return
        finally:
            self._initializing = False
            self.wake.set()

    async def _add_partitions(self, tps: list[Hashable]) -> None:
        """AddPartitionsToTxn for the partitions the transaction manager found pending (one call for all)."""
        assert self.txn is not None
        manager = self.txn.manager
        try:
            await self.txn.add_partitions(tps, time.monotonic() + self.request_timeout_ms / 1000)
            manager.add_partitions_completed(tps)
        except KetchError as e:
            if e.retriable:
                manager.add_partitions_retry(tps)
                await asyncio.sleep(self.backoff)
            else:
                manager.add_partitions_retry(tps)
                manager.coordinator_error(e)
        finally:
            self._adding = None
            self.wake.set()

    async def wait_adding(self) -> None:
        """Until no AddPartitionsToTxn is in flight (an abort must know what the coordinator may hold)."""
        task = self._adding
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    def refresh_soon(self, avoid: set[int] | frozenset[int] = frozenset()) -> None:
        if not self._refreshing and not self.closed:
            self._refreshing = True
            self._spawn(self._refresh(avoid))

    async def _refresh(self, avoid: set[int] | frozenset[int]) -> None:
        try:
            await asyncio.sleep(max(0.0, self._last_refresh + self.backoff - time.monotonic()))
            with contextlib.suppress(KetchError):
                self._leaders_moved(await self.conn.refresh(avoid))
        finally:
            self._last_refresh = time.monotonic()
            self._refreshing = False
            self.wake.set()

    def _leaders_moved(self, cluster: Cluster) -> None:
        """Abandon in-flight requests whose partition now has another leader at a higher epoch; release
        the backoff of batches that failed at a broker that no longer leads their partition."""
        for flight in self._flights:
            if flight.moved is not None:
                continue
            for tp, epoch in flight.epochs.items():
                p = _partition(cluster, tp)
                if p is not None and p.leader >= 0 and p.leader != flight.node and p.leader_epoch > epoch:
                    flight.moved = tp
                    flight.call.cancel()
                    break
        for tp, failed_at in list(self._backing_off.items()):
            leader = cluster.leader(tp.topic, tp.partition)
            if leader >= 0 and leader != failed_at:
                del self._backing_off[tp]
                self.acc.retry_now(tp)

    async def _call_produce(self, node: int, request: ketch_pb2.ProduceRequest, tps: list[TopicPartition]) -> Any:
        """The Produce call, abandoned with ``KetchConnectionError`` (outcome unknown) if ``_leaders_moved``
        finds one of its partitions led elsewhere meanwhile."""
        cluster = self.conn.cluster
        epochs = {tp: (p.leader_epoch if (p := _partition(cluster, tp)) is not None else -1) for tp in tps}
        call = asyncio.ensure_future(self.conn.call_node(node, "Produce", request, self.request_timeout_ms / 1000 + 5))
        flight = InFlight(node, time.monotonic(), epochs, call)
        self._flights.append(flight)
        try:
            return await call
        except asyncio.CancelledError:
            if flight.moved is None or not call.cancelled():
                raise
            moved = flight.moved
            raise KetchConnectionError(
                f"broker {node}: {moved.topic}-{moved.partition} moved to another leader while this request was "
                "in flight (its outcome is unknown; retried there)"
            ) from None
        finally:
            self._flights.remove(flight)

    async def _produce(self, node: int, batches: list[ProducerBatch]) -> None:
        groups: dict[TopicPartition, list[ProducerBatch]] = {}
        for b in batches:
            groups.setdefault(b.tp, []).append(b)
        request = ketch_pb2.ProduceRequest(
            transactional_id=self.txn.tid if self.txn is not None else "",
            acks=self.acks,
            timeout_ms=self.request_timeout_ms,
            partitions=[
                ketch_pb2.PartitionRecords(topic=tp[0], partition=tp[1], records=b"".join(b.close() for b in group))
                for tp, group in groups.items()
            ],
        )
        sent = {id(b): b.stamp() for b in batches}
        if self.acks == 0:
            for b in batches:
                self.acc.finish(b, None, None)
        try:
            response = await self._call_produce(node, request, list(groups))
        except KetchError as e:
            if self.acks != 0:
                split = isinstance(e, MessageTooLargeError) and len(batches) > 1
                for b in batches:
                    self._retry_or_fail(b, e, refresh=True, split=split, node=node)
            return
        finally:
            self._in_flight[node] -= 1
            self.wake.set()
        if self.acks == 0:
            return
        results = {(r.topic, r.partition): r for r in response.partitions}
        for tp, group in groups.items():
            r = results.get(tp)
            if r is None:
                err = KetchError(f"broker {node} sent no result for {tp[0]}-{tp[1]}")
                for b in group:
                    self.acc.finish(b, None, err)
            elif r.error_code == 0:
                base = r.base_offset
                for b in group:
                    self.acc.finish(b, base, None)
                    base += b.record_count
            elif r.error_code == ErrorCode.DUPLICATE_SEQUENCE_NUMBER:
                for b in group:
                    self.acc.finish(b, -1, None)  # stored before; the broker no longer knows where
            else:
                err = error_for(r.error_code, r.error_message)
                split = r.error_code in _TOO_LARGE and len(group) > 1
                for b in group:
                    if b.producer_id >= 0 and b.stamp() != sent[id(b)]:
                        self.acc.reenqueue(b, 0.0)  # the answer is about a stamp rewritten since
                        continue
                    if r.error_code in _SEQUENCE_ERRORS and b.producer_id >= 0 and self.txn is None:
                        with self.acc.lock:
                            assert self.acc.idempotence is not None
                            self.acc.idempotence.sequence_error(b)
                        self._retry_or_fail(b, err, refresh=False, force_retry=True)
                        continue
                    self._retry_or_fail(b, err, refresh=r.error_code in REFRESH_METADATA, split=split, node=node)

    def _retry_or_fail(
        self,
        b: ProducerBatch,
        err: KetchError,
        refresh: bool,
        split: bool = False,
        force_retry: bool = False,
        node: int = -1,
    ) -> None:
        if split:  # maybe only the request was too large: send each batch alone
            b.solo = True
            self.acc.reenqueue(b, 0.0)
            return
        if refresh:  # the leader moved or is gone: later batches need new metadata even if this one fails
            self.refresh_soon()
        b.attempts += 1
        now = time.monotonic()
        delay = min(self.backoff * 2 ** (b.attempts - 1), self.backoff_max)
        delay *= 0.8 + 0.4 * self._rng.random()
        if (
            (err.retriable or force_retry)
            and not self.closed
            and b.attempts <= self.retries
            and now + delay < b.created + self.delivery_timeout
        ):
            self.acc.reenqueue(b, now + delay)
            if refresh and node >= 0:
                self._backing_off[b.tp] = node
        else:
            self.acc.finish(b, None, err)


def _partition(cluster: Cluster, tp: TopicPartition) -> PartitionInfo | None:
    """The cached PartitionInfo of ``tp``, or None."""
    t = cluster.topics.get(tp.topic)
    return t.partitions.get(tp.partition) if t is not None else None
