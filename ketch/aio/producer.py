"""asyncio Producer: accumulate records per partition, send batches to leaders.

Rules:
- ``send()`` appends to the accumulator and returns a future that resolves to
  ``RecordMetadata``; it never waits for the network unless the topic's
  metadata is unknown (one Metadata call) or the buffer is full
  (back-pressure, up to ``max_block_ms``). Errors about the record itself
  (too large, unknown topic, bad partition) fail the returned future. A
  record for a partition number the cached metadata does not have yet
  refreshes it until the partition appears (one just added) or
  ``max_block_ms`` passes (Kafka's ``waitOnMetadata``). Partitions added to a
  topic are used from the next refresh, at most ``metadata_max_age_ms`` away.
- Idempotence (KIP-98/KIP-679), on by default: ``enable_idempotence`` needs
  acks=all, ``retries`` > 0 and ``max_in_flight_requests_per_connection`` <= 5;
  naming it True with other settings raises ``ValueError`` (Kafka's
  ConfigException), while leaving it unset with acks 0 or 1, ``retries=0`` or
  more than 5 in flight turns it off quietly (Kafka 3.x). The producer gets a
  producer id (InitProducerId) before its first batch; every batch carries
  the id, epoch and base sequence, so a retry is stored once and order is kept
  across retries (ketch/idempotence.py).
- A single sender task (sender.py) drains ready batches into one Produce request per
  broker (several partitions, up to ``max_request_size``; several batches per
  partition without idempotence, one with it), with at most
  ``max_in_flight_requests_per_connection`` requests outstanding per broker.
  Without idempotence a retried batch can land after a later one (Kafka's
  behaviour); set the in-flight limit to 1 for strict order.
- Offsets: the response gives the base offset of the first batch of each
  partition; the broker appends a request's batches contiguously, so record
  ``i`` of a batch gets ``base + records before its batch + i``.
- acks=0 completes futures with offset -1 as soon as the request is issued.
- Retries: only ``ketch.errors.RETRIABLE`` codes and transport failures are
  retried, with exponential backoff from ``retry_backoff_ms`` (capped at
  ``retry_backoff_max_ms``, +-20 % jitter), at most ``retries`` times and never
  past ``delivery_timeout_ms`` after the batch was created. REFRESH_METADATA
  codes and transport failures refresh metadata first. Anything else fails
  the batch's futures with the typed error.
- Size: a record whose batch alone would exceed ``max_request_size`` fails at
  once with ``MessageTooLargeError`` naming the limit. gRPC RESOURCE_EXHAUSTED
  (over the broker's limit) is a ``MessageTooLargeError`` carrying gRPC's
  details; a multi-batch request refused that way is retried one batch per
  request before any future fails.
- Transactions (``transactional_id`` set; ketch/transaction_manager.py has
  the states and rules): implies idempotence and acks=all (a contradicting
  setting is a ``ValueError``). ``init_transactions()`` once, then per
  transaction ``begin_transaction()``, sends, optionally
  ``send_offsets_to_transaction(offsets, consumer.group_metadata())``, and
  ``commit_transaction()`` (flush, then EndTxn commit) or
  ``abort_transaction()`` (drop unsent batches, wait for those in flight,
  EndTxn abort). Sending outside a transaction raises INVALID_TXN_STATE.
- The sync ``ketch.Producer`` drives this object on a background loop and
  appends from the caller's thread (``send_threadsafe``); see accumulator.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ketch.aio.accumulator import Accumulator
from ketch.aio.connection import Connection, TopicInfo
from ketch.aio.record_future import RecordFuture
from ketch.aio.sender import Sender
from ketch.aio.transactions import TransactionClient
from ketch.errors import (
    RETRIABLE,
    ErrorCode,
    InvalidTopicError,
    KetchError,
    MessageTooLargeError,
    RequestTimedOutError,
    UnknownTopicOrPartitionError,
    error_for,
)
from ketch.group_rules import ConsumerGroupMetadata, OffsetAndMetadata
from ketch.idempotence import IdempotentProducerState, idempotence_enabled
from ketch.records import (
    DEFAULT_BATCH_SIZE,
    Headers,
    RecordMetadata,
    TopicPartition,
    compression_code,
    estimate_record_size,
)
from ketch.tls import SecurityConfig
from ketch.transaction_manager import DEFAULT_TRANSACTION_TIMEOUT_MS, TransactionManager

__all__ = ["Producer"]

Serializer = Callable[[Any], bytes | None]
_NO_HEADERS: Headers = []  # shared, read-only: saves a list per record
# What a batch holding one record without headers adds to its key and value, at most: the
# 61-byte batch header and the record's varints (length, timestamp and offset deltas, key and
# value lengths, header count: 36 bytes at most) and its attributes byte, rounded up. Below
# ``max_request_size`` minus this, send() skips the exact (and per-record costly) estimate.
_ONE_RECORD_BATCH_BOUND = 128
_ACKS = {"all": -1, -1: -1, "-1": -1, 0: 0, "0": 0, 1: 1, "1": 1}


class Producer:
    """Kafka-style producer (options named as in kafka-python / aiokafka).

    ``acks``: "all"/-1 (default), 1 or 0. ``linger_ms`` (5) and ``batch_size``
    (256 KiB per partition batch, see ``ketch.records.DEFAULT_BATCH_SIZE``) shape
    batching; ``compression_type``:
    None, "gzip", "snappy", "lz4", "zstd". ``retries`` (unbounded by default)
    are bounded by ``delivery_timeout_ms``; ``buffer_memory`` and
    ``max_block_ms`` give back-pressure. ``enable_idempotence`` (on unless
    acks, retries or the in-flight limit rule it out) stores each record once
    and in order despite retries. ``send`` returns a future of
    ``RecordMetadata``; ``send_and_wait`` awaits it too.
    """

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        *,
        client_id: str = "ketch-producer",
        acks: int | str = "all",
        linger_ms: float = 5,
        batch_size: int = DEFAULT_BATCH_SIZE,
        compression_type: str | None = None,
        retries: int = 2**31 - 1,
        delivery_timeout_ms: int = 120000,
        retry_backoff_ms: int = 100,
        retry_backoff_max_ms: int = 1000,
        request_timeout_ms: int = 30000,
        max_request_size: int = 1048576,
        max_in_flight_requests_per_connection: int = 5,
        buffer_memory: int = 32 * 1024 * 1024,
        max_block_ms: int = 60000,
        metadata_max_age_ms: int = 300000,
        key_serializer: Serializer | None = None,
        value_serializer: Serializer | None = None,
        allow_auto_create_topics: bool = True,
        enable_idempotence: bool | None = None,
        transactional_id: str | None = None,
        transaction_timeout_ms: int = DEFAULT_TRANSACTION_TIMEOUT_MS,
        security_protocol: str = "PLAINTEXT",
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
    ) -> None:
        if acks not in _ACKS:
            raise ValueError(f"acks must be 'all', -1, 0 or 1, not {acks!r}")
        self.acks = _ACKS[acks]
        if transactional_id is not None:
            if enable_idempotence is False:
                raise ValueError("transactional_id needs idempotence; do not set enable_idempotence=False")
            if self.acks != -1:
                raise ValueError(f"transactional_id needs acks='all', not acks={acks!r}")
            enable_idempotence = True
        self.enable_idempotence = idempotence_enabled(
            enable_idempotence, self.acks, retries, max_in_flight_requests_per_connection
        )
        self.backoff = retry_backoff_ms / 1000
        self.max_request_size = max_request_size
        self.max_block = max_block_ms / 1000
        self.key_serializer = key_serializer
        self.value_serializer = value_serializer
        tls = (security_protocol, ssl_cafile, ssl_certfile, ssl_keyfile)
        sasl = (sasl_mechanism, sasl_plain_username, sasl_plain_password)
        self._conn = Connection(
            bootstrap_servers,
            client_id,
            request_timeout_ms,
            allow_auto_create_topics,
            SecurityConfig(*tls, *sasl),
        )
        idempotence = None
        if self.enable_idempotence:
            idempotence = IdempotentProducerState(max_in_flight_requests_per_connection)
        self._txn: TransactionClient | None = None
        if transactional_id is not None:
            assert idempotence is not None
            self._txn = TransactionClient(
                self._conn,
                TransactionManager(transactional_id, idempotence, transaction_timeout_ms),
                backoff=self.backoff,
                max_backoff=retry_backoff_max_ms / 1000,
                max_block=self.max_block,
            )
        self._acc = Accumulator(
            batch_size,
            compression_code(compression_type),
            linger_ms,
            buffer_memory,
            idempotence=idempotence,
            transactions=self._txn.manager if self._txn is not None else None,
        )
        self._sender = Sender(
            self._conn,
            self._acc,
            acks=self.acks,
            request_timeout_ms=request_timeout_ms,
            max_request_size=max_request_size,
            max_in_flight=max_in_flight_requests_per_connection,
            retries=retries,
            delivery_timeout_ms=delivery_timeout_ms,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            metadata_max_age_ms=metadata_max_age_ms,
            transactions=self._txn,
        )
        self._acc.wakeup = self._sender.wakeup
        self._acc.on_space = self._space_freed
        self._loop: asyncio.AbstractEventLoop | None = None
        self._space = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ---------------------------------------------------------
    async def start(self) -> None:
        """Start the sender (idempotent; ``send`` and ``async with`` call it)."""
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self._sender.bind()
            self._task = asyncio.create_task(self._sender.run(), name="ketch-producer-sender")

    async def __aenter__(self) -> Producer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def flush(self, timeout: float | None = None) -> None:
        """Send everything appended so far and wait until it is acknowledged."""
        waiters = self._acc.begin_flush()
        try:
            if waiters:
                self._sender.wakeup()
                await asyncio.wait_for(asyncio.gather(*waiters), timeout)
        finally:
            self._acc.end_flush()

    async def close(self, timeout: float | None = None) -> None:
        """Flush (up to ``timeout`` seconds), then stop and release connections."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._task is not None:
                with contextlib.suppress(TimeoutError):
                    await self.flush(timeout)
        finally:
            self._acc.closing = True
            self._acc.abort_all(KetchError("producer closed before the record was sent"))
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            await self._sender.stop()
            for b in self._acc.pending():
                self._acc.finish(b, None, KetchError("producer closed before the broker answered"))
            await self._conn.close()

    # -- transactions (KIP-98; the rules are in ketch/transaction_manager.py) ----
    def _manager(self) -> TransactionManager:
        if self._txn is None:
            raise KetchError(
                "this producer has no transactional_id; create it with Producer(transactional_id=...)",
                code=ErrorCode.INVALID_TXN_STATE,
            )
        return self._txn.manager

    async def init_transactions(self) -> None:
        """Register the transactional id with its coordinator (fencing any older producer with it)."""
        m = self._manager()
        m.begin_init()
        assert self._txn is not None
        await self.start()
        try:
            producer_id, epoch = await self._txn.init_producer_id()
        except KetchError as e:
            if not e.retriable:
                m.coordinator_error(e)
            raise
        with self._acc.lock:
            m.init_completed(producer_id, epoch)
        self._sender.wakeup()

    def begin_transaction(self) -> None:
        self._manager().begin_transaction()

    async def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int], group_metadata: ConsumerGroupMetadata
    ) -> None:
        """Commit the consumer's ``offsets`` (the next offsets to read) as part of this transaction (KIP-447)."""
        m = self._manager()
        assert self._txn is not None
        group_id = group_metadata.group_id
        m.begin_add_offsets(group_id)
        try:
            await self._txn.add_offsets(group_id)
            m.add_offsets_completed(group_id)
            await self._txn.txn_offset_commit(offsets, group_id, group_metadata.generation, group_metadata.member_id)
        except KetchError as e:
            if not e.retriable:
                m.coordinator_error(e)
                if m.is_fenced and m.last_error is not None:
                    raise m.last_error from e
            raise

    async def commit_transaction(self) -> None:
        """Flush every record of the transaction, then commit it; raises if any failed (then abort)."""
        m = self._manager()
        m.begin_commit()
        await self.flush()
        if m.has_error:
            raise m.refusal("commit_transaction()")
        await self._end_transaction(commit=True)

    async def abort_transaction(self) -> None:
        """Drop the records not sent yet, wait for those in flight, then abort the transaction."""
        m = self._manager()
        m.begin_abort()
        self._acc.abort_all(m.dropped_batch_error() or KetchError("transaction aborted"))
        await self.flush()  # what is left is in flight: let it land before the abort marker
        await self._sender.wait_adding()
        await self._end_transaction(commit=False)

    async def _end_transaction(self, commit: bool) -> None:
        m = self._manager()
        assert self._txn is not None
        if not m.transaction_started:
            with self._acc.lock:
                m.end_completed()
            return
        try:
            producer_id, epoch = await self._txn.end_txn(commit)
        except KetchError as e:
            if not commit and e.code == ErrorCode.INVALID_TXN_STATE:
                # no transaction is open at this epoch (an Add* whose answer was lost never arrived):
                # nothing to abort, and the coordinator did not bump the epoch
                with self._acc.lock:
                    m.end_completed()
                return
            if not e.retriable:
                m.coordinator_error(e)
                if m.has_error and m.last_error is not None:
                    raise m.refusal("commit_transaction()" if commit else "abort_transaction()") from e
            raise
        with self._acc.lock:
            m.end_completed(producer_id, epoch)
        self._sender.wakeup()

    # -- send ----------------------------------------------------------------
    async def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; returns a future resolving to its ``RecordMetadata``."""
        if self._txn is not None:
            self._txn.manager.check_send()
        if self._loop is None:
            await self.start()
        assert self._loop is not None
        fut = RecordFuture(self._loop)
        record = self._prepare(key, value, headers, fut)
        if record is None:
            return fut
        info = self._cached(topic, partition)
        if info is None:
            try:
                info = await self.topic_info(topic, partition)
            except KetchError as e:
                fut.set_exception(e)
                return fut
        if self._acc.buffered_bytes >= self._acc.buffer_memory and not await self._wait_space():
            fut.set_exception(RequestTimedOutError(self._blocked_message()))
            return fut
        if self._acc.append(info, partition, *record, timestamp_ms, fut):
            await asyncio.sleep(0)  # a batch opened or filled: let the sender run
        return fut

    async def send_and_wait(self, topic: str, value: Any = None, **kwargs: Any) -> RecordMetadata:
        return await (await self.send(topic, value, **kwargs))

    def send_threadsafe(
        self,
        run: Callable[[Any], Any],
        fut: Any,
        topic: str,
        value: Any,
        key: Any,
        partition: int | None,
        headers: Headers | None,
        timestamp_ms: int | None,
    ) -> None:
        """``send`` for a thread other than the loop's: ``run(coro)`` runs a
        coroutine on the loop and waits. Completes ``fut`` (a concurrent future)."""
        if self._txn is not None:
            self._txn.manager.check_send()
        record = self._prepare(key, value, headers, fut)
        if record is None:
            return
        info = self._cached(topic, partition)
        if info is None:
            try:
                info = run(self.topic_info(topic, partition))
            except KetchError as e:
                fut.set_exception(e)
                return
        acc = self._acc
        if acc.buffered_bytes >= acc.buffer_memory and not acc.wait_for_space(self.max_block):
            fut.set_exception(RequestTimedOutError(self._blocked_message()))
            return
        acc.append(info, partition, *record, timestamp_ms, fut)

    def _prepare(
        self, key: Any, value: Any, headers: Headers | None, fut: Any
    ) -> tuple[bytes | None, bytes | None, Headers] | None:
        """The serialized record, or None after failing ``fut`` because it is too large."""
        if self._closed:
            raise KetchError("producer is closed")
        if self.key_serializer is not None:
            key = self.key_serializer(key)
        if self.value_serializer is not None:
            value = self.value_serializer(value)
        hdrs = list(headers) if headers else _NO_HEADERS
        small = self.max_request_size - _ONE_RECORD_BATCH_BOUND  # clearly fits: no exact size needed
        size = (len(key) if key else 0) + (len(value) if value else 0)
        if (hdrs or size > small) and estimate_record_size(key, value, hdrs) > self.max_request_size:
            fut.set_exception(self._too_large(key, value, hdrs))
            return None
        return key, value, hdrs

    def _cached(self, topic: str, partition: int | None = None) -> TopicInfo | None:
        """The cached metadata of ``topic`` if it can take records now (and knows ``partition``)."""
        info = self._conn.cluster.topics.get(topic)
        if info is None or info.error_code or not info.num_partitions:
            return None
        return None if partition is not None and partition >= info.num_partitions else info

    def _too_large(self, key: bytes | None, value: bytes | None, headers: Headers) -> MessageTooLargeError:
        return MessageTooLargeError(
            f"the record is {estimate_record_size(key, value, headers)} bytes when serialized, larger "
            f"than max_request_size {self.max_request_size}; raise max_request_size or send smaller records"
        )

    async def topic_info(self, topic: str, partition: int | None = None) -> TopicInfo:
        """Metadata for ``topic``, fetched if not cached; typed error if unusable. A ``partition``
        it lacks is waited for until ``max_block_ms``, then left to the accumulator to refuse."""
        self._conn.track([topic])
        deadline = time.monotonic() + self.max_block
        while True:
            info = (await self._conn.refresh()).topics.get(topic)
            if info is not None and info.error_code == 0 and info.num_partitions:
                if partition is None or partition < info.num_partitions or time.monotonic() + self.backoff > deadline:
                    return info
                await asyncio.sleep(self.backoff)
                continue
            code = info.error_code if info is not None else ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            message = info.error_message if info is not None else ""
            if code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                raise UnknownTopicOrPartitionError(
                    message or f"topic {topic!r} does not exist; create it first (ketch topic create)"
                )
            if code == ErrorCode.INVALID_TOPIC_EXCEPTION:
                raise InvalidTopicError(message or f"{topic!r} is not a valid topic name")
            if code != ErrorCode.NONE and code not in RETRIABLE:
                raise error_for(code, message)
            if time.monotonic() + self.backoff > deadline:
                raise RequestTimedOutError(
                    f"topic {topic!r} has no usable metadata after {self.max_block * 1000:.0f} ms"
                )
            await asyncio.sleep(self.backoff)

    def _blocked_message(self) -> str:
        return (
            f"buffer_memory ({self._acc.buffer_memory} bytes) stayed full for max_block_ms "
            f"({self.max_block * 1000:.0f} ms); the brokers are slower than the sends"
        )

    async def _wait_space(self) -> bool:
        deadline = time.monotonic() + self.max_block
        while self._acc.buffered_bytes >= self._acc.buffer_memory:
            self._space.clear()
            try:
                await asyncio.wait_for(self._space.wait(), max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False
        return True

    def _space_freed(self) -> None:
        self._space.set()
