"""asyncio Consumer: assign or subscribe, poll records, seek, look up offsets.

Rules:
- No consumer groups yet. ``assign(partitions)`` sets the assignment
  explicitly; ``subscribe(topics)`` (or topics given to the constructor)
  assigns every partition of those topics and keeps doing so as metadata
  changes: it refreshes every ``metadata_max_age_ms``, and every second while
  a subscribed topic does not exist yet. The two are mutually exclusive.
- A newly assigned partition starts at ``auto_offset_reset``: "earliest",
  "latest" (Kafka's default) or "none" (poll raises ``OffsetOutOfRangeError``
  when the position leaves the log). There are no committed offsets yet.
- ``poll(timeout_ms, max_records)`` returns ``{TopicPartition: [records]}``
  like kafka-python: whatever is buffered (at most ``max_records``, default
  ``max_poll_records``, taken round-robin across partitions), waiting up to
  ``timeout_ms`` for something to arrive when nothing is. Returning records
  advances the position past them. An error stored by the fetcher (see
  fetcher.py) is raised by the next poll, before any record is returned.
- ``async for record in consumer`` yields one record at a time (the position
  advances per record) and never ends on its own unless
  ``consumer_timeout_ms`` passes without a record.
- ``seek`` is immediate; ``seek_to_beginning``/``seek_to_end`` are resolved
  lazily by the fetcher (or by ``position()``), as in kafka-python.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

from ketch.aio.connection import Connection
from ketch.aio.fetcher import EARLIEST, LATEST, Fetcher, PartitionState
from ketch.api.v1 import ketch_pb2
from ketch.errors import KetchError
from ketch.records import ConsumerRecord, OffsetAndTimestamp, TopicPartition

__all__ = ["Consumer"]

Deserializer = Callable[[bytes | None], Any]


class Consumer:
    """Kafka-style consumer without groups (see the module docstring).

    ``consumer = Consumer("topic", bootstrap_servers=..., auto_offset_reset="earliest")``;
    ``await consumer.poll(timeout_ms=...)`` or ``async for record in consumer``.
    """

    def __init__(
        self,
        *topics: str,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        client_id: str = "ketch-consumer",
        auto_offset_reset: str = "latest",
        fetch_min_bytes: int = 1,
        fetch_max_wait_ms: int = 500,
        fetch_max_bytes: int = 52428800,
        max_partition_fetch_bytes: int = 1048576,
        max_poll_records: int = 500,
        retry_backoff_ms: int = 100,
        request_timeout_ms: int = 30000,
        metadata_max_age_ms: int = 300000,
        consumer_timeout_ms: float = math.inf,
        key_deserializer: Deserializer | None = None,
        value_deserializer: Deserializer | None = None,
        allow_auto_create_topics: bool = True,
    ) -> None:
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(f"auto_offset_reset must be 'earliest', 'latest' or 'none', not {auto_offset_reset!r}")
        self._conn = Connection(bootstrap_servers, client_id, request_timeout_ms, allow_auto_create_topics)
        self._fetcher = Fetcher(
            self._conn,
            auto_offset_reset=auto_offset_reset,
            fetch_min_bytes=fetch_min_bytes,
            fetch_max_wait_ms=fetch_max_wait_ms,
            fetch_max_bytes=fetch_max_bytes,
            max_partition_fetch_bytes=max_partition_fetch_bytes,
            max_poll_records=max_poll_records,
            retry_backoff_ms=retry_backoff_ms,
            request_timeout_ms=request_timeout_ms,
        )
        self._fetcher.on_tick = self._tick
        self._states = self._fetcher.states
        self.max_poll_records = max_poll_records
        self.request_timeout = request_timeout_ms / 1000
        self.metadata_max_age = metadata_max_age_ms / 1000
        self.consumer_timeout = consumer_timeout_ms / 1000
        self.key_deserializer = key_deserializer
        self.value_deserializer = value_deserializer
        self._subscription: set[str] = set(topics)
        self._next_sub_refresh = 0.0 if topics else math.inf
        self._loop_task: asyncio.Task[None] | None = None
        self._rotation = 0
        self._closed = False

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KetchError("consumer is closed")
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._fetcher.run(), name="ketch-consumer-fetcher")
            if self._subscription:
                await self._update_subscription()

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._fetcher.close()
        await self._conn.close()

    # -- assignment ---------------------------------------------------------------
    async def assign(self, partitions: list[TopicPartition]) -> None:
        if self._subscription:
            raise ValueError("assign() and subscribe() are mutually exclusive; unsubscribe() first")
        await self.start()
        self._set_assignment({TopicPartition(*tp) for tp in partitions})

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    async def subscribe(self, topics: list[str]) -> None:
        if self._states and not self._subscription:
            raise ValueError("assign() and subscribe() are mutually exclusive; assign([]) first")
        if not topics:
            raise ValueError("subscribe() needs at least one topic; use unsubscribe() to stop")
        self._subscription = set(topics)
        if self._loop_task is None:
            await self.start()
        else:
            await self._update_subscription()

    def subscription(self) -> set[str]:
        return set(self._subscription)

    async def unsubscribe(self) -> None:
        self._subscription = set()
        self._next_sub_refresh = math.inf
        self._set_assignment(set())

    def _set_assignment(self, tps: set[TopicPartition]) -> None:
        for tp in set(self._states) - tps:
            del self._states[tp]
        for tp in tps - set(self._states):
            self._states[tp] = PartitionState(self._fetcher.default_reset())
        self._conn.track(tp.topic for tp in tps)
        self._fetcher.wake.set()

    async def _update_subscription(self) -> None:
        self._conn.track(self._subscription)
        missing = True
        try:
            cluster = await self._conn.refresh()
            tps: set[TopicPartition] = set()
            missing = False
            for name in self._subscription:
                topic = cluster.topics.get(name)
                if topic is None or topic.error_code != 0 or not topic.partitions:
                    missing = True
                    continue
                tps.update(TopicPartition(name, p) for p in topic.partitions)
            if self._subscription:
                self._set_assignment(tps)
        except KetchError:
            pass
        finally:
            delay = 1.0 if missing else self.metadata_max_age
            self._next_sub_refresh = time.monotonic() + delay if self._subscription else math.inf

    def _tick(self) -> float | None:
        """Called by the fetch loop: refresh a subscription when due."""
        now = time.monotonic()
        if now >= self._next_sub_refresh:
            self._next_sub_refresh = now + self.request_timeout  # until the refresh ends
            self._fetcher._spawn(self._update_subscription())
        wait = self._next_sub_refresh - now
        return None if math.isinf(wait) else max(wait, 0.0)

    # -- polling --------------------------------------------------------------
    async def poll(
        self, timeout_ms: float = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        await self.start()
        limit = max_records or self.max_poll_records
        deadline = time.monotonic() + timeout_ms / 1000
        fetcher = self._fetcher
        while True:
            self._raise_error()
            out = self._drain(limit)
            if out:
                fetcher.wake.set()  # buffers shrank: maybe prefetch
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            fetcher.data.clear()
            fetcher.wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(remaining):
                    await fetcher.data.wait()

    def _raise_error(self) -> None:
        for st in self._states.values():
            if st.error is not None:
                err, st.error = st.error, None
                st.retry_at = time.monotonic() + self._fetcher.backoff
                raise err

    def _drain(self, limit: int) -> dict[TopicPartition, list[ConsumerRecord]]:
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        tps = [tp for tp, st in self._states.items() if st.buffer]
        if not tps:
            return out
        self._rotation += 1
        start = self._rotation % len(tps)
        for tp in tps[start:] + tps[:start]:
            buf = self._states[tp].buffer
            if len(buf) <= limit:
                records = list(buf)
                buf.clear()
            else:
                records = [buf.popleft() for _ in range(limit)]
            out[tp] = self._deserialize(records)
            limit -= len(records)
            if limit <= 0:
                break
        return out

    def _deserialize(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        kd, vd = self.key_deserializer, self.value_deserializer
        if kd is None and vd is None:
            return records
        return [
            ConsumerRecord(
                r.topic,
                r.partition,
                r.offset,
                r.timestamp,
                kd(r.key) if kd else r.key,
                vd(r.value) if vd else r.value,
                r.headers,
            )
            for r in records
        ]

    async def next_records(self) -> list[ConsumerRecord] | None:
        """The next polled records as one list; None after ``consumer_timeout_ms`` idle."""
        deadline = time.monotonic() + self.consumer_timeout
        while True:
            wait = min(deadline - time.monotonic(), 3600.0)
            batch = await self.poll(timeout_ms=max(wait, 0) * 1000)
            if batch:
                return [r for records in batch.values() for r in records]
            if time.monotonic() >= deadline:
                return None

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        batch = await self._next_one()
        if batch is None:
            raise StopAsyncIteration
        return batch

    async def _next_one(self) -> ConsumerRecord | None:
        deadline = time.monotonic() + self.consumer_timeout
        while True:
            batch = await self.poll(timeout_ms=max(min(deadline - time.monotonic(), 3600.0), 0) * 1000, max_records=1)
            for records in batch.values():
                return records[0]
            if time.monotonic() >= deadline:
                return None

    # -- positions and offsets ------------------------------------------------------
    def _state(self, tp: TopicPartition) -> PartitionState:
        st = self._states.get(TopicPartition(*tp))
        if st is None:
            raise ValueError(f"{tp.topic}-{tp.partition} is not assigned to this consumer")
        return st

    async def seek(self, partition: TopicPartition, offset: int) -> None:
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self._state(partition).seek(offset)
        self._fetcher.wake.set()

    async def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._states):
            self._state(tp).seek(None, EARLIEST)
        self._fetcher.wake.set()

    async def seek_to_end(self, *partitions: TopicPartition) -> None:
        for tp in partitions or tuple(self._states):
            self._state(tp).seek(None, LATEST)
        self._fetcher.wake.set()

    async def position(self, partition: TopicPartition) -> int:
        """Offset of the next record ``poll`` returns for ``partition``."""
        st = self._state(partition)
        while st.position is None:
            generation = st.generation
            found = await self._fetcher.list_offsets(
                {TopicPartition(*partition): st.reset}, time.monotonic() + self.request_timeout
            )
            if st.generation == generation and st.fetch_offset is None:
                st.fetch_offset = found[TopicPartition(*partition)][0]
                self._fetcher.wake.set()
        position = st.position
        assert position is not None
        return position

    def highwater(self, partition: TopicPartition) -> int | None:
        """The high watermark seen in the last fetch of ``partition`` (None before one)."""
        return self._state(partition).high_watermark

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset with a timestamp >= each given one; None when there is none."""
        for ts in timestamps.values():
            if ts < 0:
                raise ValueError(f"timestamps must be >= 0 ms since the epoch, got {ts}")
        found = await self._list(dict(timestamps))
        return {tp: None if offset < 0 else OffsetAndTimestamp(offset, ts) for tp, (offset, ts) in found.items()}

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._list(dict.fromkeys(partitions, EARLIEST))
        return {tp: offset for tp, (offset, _) in found.items()}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermark of each partition: the offset the next record gets."""
        found = await self._list(dict.fromkeys(partitions, LATEST))
        return {tp: offset for tp, (offset, _) in found.items()}

    async def _list(self, specs: dict[TopicPartition, int]) -> dict[TopicPartition, tuple[int, int]]:
        specs = {TopicPartition(*tp): v for tp, v in specs.items()}
        if not specs:
            return {}
        return await self._fetcher.list_offsets(specs, time.monotonic() + self.request_timeout)

    async def partitions_for_topic(self, topic: str) -> set[int] | None:
        self._conn.track([topic])
        info = (await self._conn.refresh()).topics.get(topic)
        return set(info.partitions) if info is not None and info.error_code == 0 else None

    async def topics(self) -> set[str]:
        """Every topic in the cluster."""
        response = await self._conn.call_any("Metadata", ketch_pb2.MetadataRequest())
        assert isinstance(response, ketch_pb2.MetadataResponse)
        return {t.name for t in response.topics if t.error_code == 0}
