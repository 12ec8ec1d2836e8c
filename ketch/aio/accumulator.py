"""The producer's record accumulator: per-partition batches waiting to be sent.

Rules and invariants:
- Each partition has a deque of batches. Only the last one is *open* (has a
  builder accepting records); all earlier ones are closed. A record that does
  not fit closes the open batch and starts a new one, so batches hold at most
  ``batch_size`` bytes unless one record alone is larger.
- A partition's head batch is *ready* when it is closed, when ``linger_ms``
  has passed since it was opened, or while a flush (``begin_flush`` ..
  ``end_flush``) or close is in progress.
  A batch being retried is re-inserted at the head (order of a partition's
  batches is kept) and is not ready before its ``retry_at``.
- ``drain`` takes ready batches for one broker, partition after partition,
  several batches per partition, until the next one would push the request
  over ``max_request_size``; at least one batch is always taken. Partitions are
  visited from a rotating start so no partition starves.
- Thread safety: ``append`` may be called from any thread (the sync producer
  appends from the caller's thread so ``send()`` never waits for the event
  loop); every other method runs on the producer's event loop. One
  ``threading.Lock`` guards the deques, the sticky partitioner and the
  memory count; builders are compressed outside the lock, after a batch has
  left its deque and no other thread can reach it.
- ``wakeup`` is called (outside the lock) when the sender has new work: a
  batch was opened (its linger clock starts) or filled up.
- Memory: ``buffered_bytes`` counts the payload of every incomplete batch; it
  is released when a batch completes. Callers wait for space before appending
  while it is above ``buffer_memory`` (back-pressure).
- A batch and its records' futures are ``ProducerBatch`` (producer_batch.py).
- Idempotence (``idempotence`` set, ketch/idempotence.py): a partition's head
  batch is drained only when the sequence bookkeeping allows it, which
  stamps it (producer id, epoch, base sequence); one batch per partition per
  request. ``close`` writes the stamp into the batch: through the builder the
  first time, by rewriting the header (and CRC) when a retry was re-stamped.
  ``finish`` reports the outcome to the bookkeeping.
- Transactions (``transactions`` set, ketch/transaction_manager.py): every
  batch is built transactional (attribute bit 4), and a partition is drained
  only when the transaction manager says it was added to the transaction;
  asking (once its head batch is ready) makes it pending, and the sender
  adds the pending ones, so partitions ready together go in one call.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from ketch.aio.connection import Cluster, TopicInfo
from ketch.aio.producer_batch import ProducerBatch
from ketch.errors import KetchError, UnknownTopicOrPartitionError
from ketch.idempotence import IdempotentProducerState
from ketch.partitioner import StickyPartitioner, key_partition
from ketch.records import DEFAULT_BATCH_SIZE, Headers, TopicPartition
from ketch.transaction_manager import TransactionManager

__all__ = ["Accumulator"]

# What a queued record costs the producer beyond its key and value, for ``buffer_memory``: its
# future (~180 B with the garbage collector's header), its slots in the batch's future and timestamp
# arrays, and its header and growth slack in the batch buffer: 268 B at 100 B values, measured with
# tracemalloc (tests/test_client_record_future.py checks the count covers it). It was 24, which let
# 32 MiB hold ~270,000 records of 100 B, each a live object that every full garbage collection walks.
RECORD_OVERHEAD = 320


class Accumulator:
    def __init__(
        self,
        batch_size: int = DEFAULT_BATCH_SIZE,
        compression: int = 0,
        linger_ms: float = 5,
        buffer_memory: int = 32 * 1024 * 1024,
        partitioner: StickyPartitioner | None = None,
        clock: Callable[[], float] = time.monotonic,
        idempotence: IdempotentProducerState | None = None,
        transactions: TransactionManager | None = None,
    ) -> None:
        self.idempotence = idempotence
        self.transactions = transactions
        self.batch_size = batch_size
        self.compression = compression
        self.linger = linger_ms / 1000
        self.buffer_memory = buffer_memory
        self.partitioner = partitioner or StickyPartitioner(random.Random())
        self.clock = clock
        self.lock = threading.Lock()
        self.space = threading.Condition(self.lock)
        self.wakeup: Callable[[], None] = lambda: None
        self.on_space: Callable[[], None] = lambda: None
        self.buffered_bytes = 0
        self.flushing = 0
        self.closing = False
        self.incomplete: set[ProducerBatch] = set()
        self._deques: dict[TopicPartition, deque[ProducerBatch]] = {}
        # per topic, the batch its last null-key record went to: append's fast path (KIP-480's
        # sticky partition, whose open batch it still is while it is its deque's last and not full)
        self._sticky_batches: dict[str, ProducerBatch] = {}
        self._rotation = 0

    # -- caller side (any thread) -----------------------------------------
    def append(
        self,
        topic: TopicInfo,
        partition: int | None,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        timestamp: int | None,
        fut: Any,
    ) -> bool:
        """Add one record; completes ``fut`` later (or at once on a bad partition).

        True when the sender was woken (a batch opened or filled)."""
        n = topic.num_partitions
        if partition is not None and not 0 <= partition < n:
            fut.set_exception(
                UnknownTopicOrPartitionError(
                    f"partition {partition} of topic {topic.name!r} does not exist; it has partitions 0..{n - 1}"
                )
            )
            return False
        size = (len(value) if value else 0) + (len(key) if key else 0) + RECORD_OVERHEAD
        wake = False
        with self.lock:
            if partition is None and key is None:
                # the sticky batch of the last null-key record, if it is still the open one
                batch = self._sticky_batches.get(topic.name)
                if (
                    batch is not None
                    and batch.tp.partition < n
                    and self._open_batch(batch.tp) is batch
                    and batch.try_append(timestamp, key, value, headers, fut)
                ):
                    self.buffered_bytes += size
                    batch.memory += size
                    return False
            if partition is None and key is not None:
                partition = key_partition(key, n)
            sticky = partition is None
            if partition is None:
                partition = self.partitioner.partition(topic.name, n, topic.available)
            tp = topic.tps[partition]
            batch = self._open_batch(tp)
            if batch is None or not batch.try_append(timestamp, key, value, headers, fut):
                wake = True  # a batch filled up, or a linger clock is about to start
                if sticky:  # KIP-480: a new batch means a new sticky partition
                    partition = self.partitioner.on_new_batch(topic.name, n, topic.available, partition)
                    tp = topic.tps[partition]
                    batch = self._open_batch(tp)
                    if batch is not None and not batch.try_append(timestamp, key, value, headers, fut):
                        batch = None
                else:
                    batch = None
                if batch is None:
                    batch = ProducerBatch(
                        tp, self.compression, self.batch_size, self.clock(), self.transactions is not None
                    )
                    batch.try_append(timestamp, key, value, headers, fut)  # the first record always fits
                    self._deques.setdefault(tp, deque()).append(batch)
                    self.incomplete.add(batch)
            if sticky:
                self._sticky_batches[topic.name] = batch
            self.buffered_bytes += size
            batch.memory += size
        if wake:
            self.wakeup()
        return wake

    def _open_batch(self, tp: TopicPartition) -> ProducerBatch | None:
        dq = self._deques.get(tp)
        if not dq:
            return None
        last = dq[-1]
        return None if last.closed or last.full else last

    def wait_for_space(self, timeout: float) -> bool:
        """Block the calling (non-loop) thread until memory is below the limit."""
        with self.space:
            return self.space.wait_for(lambda: self.buffered_bytes < self.buffer_memory or self.closing, timeout)

    # -- sender side (event loop) -----------------------------------------
    def drain(
        self,
        cluster: Cluster,
        can_send: Callable[[int], bool],
        max_request_size: int,
        now: float,
    ) -> tuple[dict[int, list[ProducerBatch]], float | None, bool]:
        """One request's worth of ready batches per sendable broker.

        Returns ``(batches by node, seconds until something else becomes
        ready or None, whether some partition has no known leader)``.
        """
        out: dict[int, list[ProducerBatch]] = {}
        sizes: dict[int, int] = {}
        full_nodes: set[int] = set()
        next_in: float | None = None
        unknown_leader = False
        idem = self.idempotence
        txn = self.transactions
        with self.lock:
            tps = list(self._deques)
            if not tps:
                return out, None, False
            start = self._rotation % len(tps)
            self._rotation += 1
            for tp in itertools.chain(tps[start:], tps[:start]):
                dq = self._deques[tp]
                if not dq:
                    del self._deques[tp]
                    continue
                leader = cluster.leader(tp.topic, tp.partition)
                if leader < 0:
                    unknown_leader = True
                    continue
                if leader in full_nodes or not can_send(leader):
                    continue
                while dq:
                    b = dq[0]
                    wait = self._wait_time(b, dq, now)
                    if wait > 0:
                        next_in = wait if next_in is None else min(next_in, wait)
                        break
                    if txn is not None and not txn.may_drain(tp):
                        break  # ready but not in the transaction yet: the sender adds it first
                    taken = out.setdefault(leader, [])
                    size = b.size()
                    if taken and (b.solo or taken[0].solo or sizes[leader] + size > max_request_size):
                        full_nodes.add(leader)
                        break
                    if idem is not None and not idem.drain(b, int(now * 1000)):
                        break
                    dq.popleft()
                    taken.append(b)
                    sizes[leader] = sizes.get(leader, 0) + size
                    if idem is not None:
                        break  # one idempotent batch per partition per request
        out = {node: batches for node, batches in out.items() if batches}  # idempotence may have held all back
        for batches in out.values():
            for b in batches:
                b.close()  # compression happens here, outside the lock
        return out, next_in, unknown_leader

    def _wait_time(self, b: ProducerBatch, dq: deque[ProducerBatch], now: float) -> float:
        if b.retry_at > now:
            return b.retry_at - now
        if b.closed or b.full or len(dq) > 1 or self.flushing or self.closing:
            return 0.0
        if b.builder.size() >= self.batch_size:
            return 0.0
        return max(0.0, b.created + self.linger - now)

    def reenqueue(self, batch: ProducerBatch, retry_at: float) -> None:
        """Put a failed batch back at the head of its partition for a retry."""
        batch.retry_at = retry_at
        with self.lock:
            dq = self._deques.setdefault(batch.tp, deque())
            # keep the partition's order: before every batch created after it
            i = 0
            while i < len(dq) and dq[i].seq < batch.seq:
                i += 1
            dq.insert(i, batch)

    def retry_now(self, tp: TopicPartition) -> None:
        """End the backoff of ``tp``'s queued retries (its leader changed: KIP-951)."""
        with self.lock:
            for b in self._deques.get(tp, ()):
                b.retry_at = 0.0

    def expire(self, now: float, deadline: float) -> list[ProducerBatch]:
        """Remove and return queued batches created before ``now - deadline``."""
        out: list[ProducerBatch] = []
        with self.lock:
            for dq in self._deques.values():
                while dq and dq[0].created + deadline <= now:
                    out.append(dq.popleft())
        return out

    def finish(self, batch: ProducerBatch, base_offset: int | None, exc: KetchError | None) -> None:
        """Complete a batch (offsets or error) and release its memory."""
        if exc is not None and self.transactions is not None:
            self.transactions.send_failed(exc)  # before the bookkeeping: no batch drains after this
        if self.idempotence is not None:
            with self.lock:
                if exc is not None:
                    self.idempotence.failed(batch)
                else:
                    self.idempotence.acked(batch, int(self.clock() * 1000))
        if exc is not None:
            batch.fail(exc)
        else:
            batch.complete(-1 if base_offset is None else base_offset)
        with self.space:
            self.incomplete.discard(batch)
            self.buffered_bytes -= batch.memory
            batch.memory = 0
            self.space.notify_all()
        self.on_space()

    def abort_all(self, exc: KetchError) -> None:
        """Fail every queued batch (close without flushing)."""
        with self.lock:
            batches = [b for dq in self._deques.values() for b in dq]
            self._deques.clear()
        for b in batches:
            self.finish(b, None, exc)

    def begin_flush(self) -> list[asyncio.Future[None]]:
        """Make every batch ready until ``end_flush`` (Kafka's beginFlush); futures that complete
        with each batch incomplete now."""
        loop = asyncio.get_running_loop()
        waiters: list[asyncio.Future[None]] = []
        for b in self.pending():
            if not b.done:
                w: asyncio.Future[None] = loop.create_future()
                b.waiters = [*(b.waiters or ()), w]
                waiters.append(w)
        self.flushing += 1
        return waiters

    def end_flush(self) -> None:
        self.flushing -= 1

    def pending(self) -> list[ProducerBatch]:
        with self.lock:
            return list(self.incomplete)

    def has_queued(self) -> bool:
        with self.lock:
            return any(self._deques.values())
