"""``ProducerBatch``: one partition's batch of records in the producer, and its records' futures.

Rules:
- A batch is *open* while it has a builder (aiokafka's compiled one) that takes
  records, and ``full`` once a record did not fit; ``close`` compresses and
  freezes it (idempotent) and writes its idempotent stamp: through the
  builder the first time, by rewriting the header (and CRC) when a retry was
  re-stamped.
- Futures are anything with ``set_result``/``set_exception`` (asyncio or
  concurrent futures); a batch completes them exactly once, with
  ``RecordMetadata(offset = base_offset + index)``, -1 for every record with
  acks=0. The sync producer's ``FutureRecordMetadata`` join their batch
  (shared condition, record index) and complete together in one
  ``finish_all`` (ketch/_future.py); asyncio futures complete in record order
  and ``RecordFuture`` callbacks run a batch at a time (record_future.py). A
  future the caller cancelled is skipped.
- ``record_count`` survives completion (futures are dropped then), because the
  sender adds it up to find the next batch's base offset.
"""

from __future__ import annotations

import array
import asyncio
import concurrent.futures
import itertools
import threading
from typing import Any

from ketch._future import BatchResult, FutureRecordMetadata, finish_all
from ketch.aio.record_future import finish_records
from ketch.idempotence import restamp
from ketch.records import Headers, RecordMetadata, TopicPartition, new_builder, new_tuple

__all__ = ["ProducerBatch"]

_INVALID_STATE = (asyncio.InvalidStateError, concurrent.futures.InvalidStateError)
_seq = itertools.count()


class ProducerBatch:
    __slots__ = (
        "attempts",
        "base_sequence",
        "buffer",
        "builder",
        "condition",
        "count",
        "created",
        "done",
        "full",
        "futures",
        "memory",
        "plain",
        "producer_epoch",
        "producer_id",
        "retry_at",
        "seq",
        "solo",
        "stamped",
        "timestamps",
        "tp",
        "waiters",
    )

    def __init__(
        self, tp: TopicPartition, compression: int, batch_size: int, now: float, transactional: bool = False
    ) -> None:
        self.tp = tp
        self.builder: Any = new_builder(compression, batch_size, transactional)
        self.buffer: bytes | None = None
        self.futures: list[Any] = []
        self.timestamps = array.array("q")  # one 8-byte slot per record, no int object
        self.created = now
        self.memory = 0
        self.attempts = 0
        self.retry_at = 0.0
        self.seq = next(_seq)
        self.done = False
        self.count = 0  # records appended (futures are dropped on completion; this stays)
        self.condition: threading.Condition | None = None  # shared by its FutureRecordMetadata
        self.plain = False  # holds other futures (asyncio, or plain concurrent ones)
        self.full = False  # an append did not fit: no more records go in
        self.solo = False  # send alone: it was part of a request refused as too large
        self.waiters: list[asyncio.Future[None]] | None = None
        self.producer_id = -1  # the idempotent stamp (ketch/idempotence.py); -1: none
        self.producer_epoch = -1
        self.base_sequence = -1
        self.stamped: tuple[int, int, int] | None = None  # the stamp the built bytes carry

    def stamp(self) -> tuple[int, int, int]:
        return self.producer_id, self.producer_epoch, self.base_sequence

    @property
    def record_count(self) -> int:
        return self.count

    @property
    def closed(self) -> bool:
        return self.builder is None

    def size(self) -> int:
        return len(self.buffer) if self.buffer is not None else int(self.builder.size())

    def try_append(
        self, timestamp: int | None, key: bytes | None, value: bytes | None, headers: Headers, fut: Any
    ) -> bool:
        meta = self.builder.append(len(self.futures), timestamp, key, value, headers)
        if meta is None:
            self.full = True
            return False
        self.futures.append(fut)
        self.timestamps.append(meta.timestamp)
        self.count += 1
        if type(fut) is FutureRecordMetadata:
            if self.condition is None:
                self.condition = threading.Condition()
            fut._condition = self.condition
            fut._index = len(self.futures) - 1
        else:
            self.plain = True
        return True

    def close(self) -> bytes:
        """Compress and freeze the batch (idempotent); its bytes, carrying its current stamp."""
        if self.buffer is None:
            if self.producer_id >= 0:
                self.builder.set_producer_state(self.producer_id, self.producer_epoch, self.base_sequence)
                self.stamped = self.stamp()
            self.buffer = bytes(self.builder.build())
            self.builder = None
        elif self.producer_id >= 0 and self.stamped != self.stamp():
            self.buffer = restamp(self.buffer, *self.stamp())
            self.stamped = self.stamp()
        return self.buffer

    def complete(self, base_offset: int) -> None:
        result = BatchResult(self.tp.topic, self.tp.partition, base_offset, self.timestamps)
        if self.condition is not None:
            finish_all(self.condition, self.futures, result, None)
        if self.plain:
            topic, partition = self.tp.topic, self.tp.partition
            offset = base_offset if base_offset >= 0 else -1
            step = 1 if base_offset >= 0 else 0  # acks=0: every offset is -1
            loop_futures: list[asyncio.Future[RecordMetadata]] = []
            metadata: list[RecordMetadata] = []
            for fut, timestamp in zip(self.futures, self.timestamps, strict=True):
                if type(fut) is not FutureRecordMetadata:
                    meta = new_tuple(RecordMetadata, (topic, partition, offset, timestamp))
                    if isinstance(fut, asyncio.Future):
                        loop_futures.append(fut)
                        metadata.append(meta)
                    else:
                        try:  # noqa: SIM105 - cheaper than contextlib.suppress per record
                            fut.set_result(meta)
                        except _INVALID_STATE:
                            pass  # cancelled by the caller
                offset += step
            finish_records(loop_futures, metadata, None)
        self._done()

    def fail(self, exc: BaseException) -> None:
        if self.condition is not None:
            finish_all(self.condition, self.futures, None, exc)
        if self.plain:
            loop_futures: list[asyncio.Future[RecordMetadata]] = []
            for fut in self.futures:
                if type(fut) is FutureRecordMetadata:
                    continue
                if isinstance(fut, asyncio.Future):
                    loop_futures.append(fut)
                    continue
                try:  # noqa: SIM105
                    fut.set_exception(exc)
                except _INVALID_STATE:
                    pass
            finish_records(loop_futures, None, exc)
        self._done()

    def _done(self) -> None:
        self.done = True
        for w in self.waiters or ():
            if not w.done():
                w.set_result(None)
        self.waiters = None
        self.futures = []
