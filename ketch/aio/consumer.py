"""asyncio Consumer: assign or subscribe (alone or in a consumer group), poll, seek, commit.

Rules:
- ``assign(partitions)`` sets the assignment explicitly; ``subscribe(topics)``
  or ``subscribe(pattern=regex)`` (or topics given to the constructor)
  follows topics. The two are mutually exclusive.
- Without ``group_id`` a subscription assigns every partition of the
  subscribed topics and keeps doing so as metadata changes: it refreshes
  every ``metadata_max_age_ms``, and every second while a subscribed topic
  does not exist yet. Nothing can be committed.
- With ``group_id`` a subscription makes the consumer a member of that
  consumer group (group_member.py has the protocol rules): the group's
  assignor splits the partitions among its members, a ``listener``
  (``on_partitions_assigned``/``on_partitions_revoked``/optional
  ``on_partitions_lost``, plain or async functions) hears every change,
  heartbeats keep the membership alive, and offsets are committed to the
  group: ``commit()``/``commit_async()`` explicitly, and with
  ``enable_auto_commit`` (default) every ``auto_commit_interval_ms``, before
  a revoke and on ``close()``. ``assign()`` with a ``group_id`` also starts
  from and commits to the group's offsets, without membership.
- A newly assigned partition starts at the group's committed offset when
  there is one, else at ``auto_offset_reset``: "earliest", "latest" (Kafka's
  default) or "none" (poll raises ``OffsetOutOfRangeError`` when the
  position leaves the log).
- ``pause(*tps)`` stops fetching those partitions and ``poll`` returns none
  of their buffered records until ``resume``; a partition that is unassigned
  is no longer paused.
- ``poll(timeout_ms, max_records)`` returns ``{TopicPartition: [records]}``
  like kafka-python: whatever is buffered (at most ``max_records``, default
  ``max_poll_records``, taken round-robin across partitions), waiting up to
  ``timeout_ms`` for something to arrive when nothing is. Returning records
  advances the position past them. An error stored by the fetcher (see
  fetcher.py) is raised by the next poll, before any record is returned.
- ``async for record in consumer`` yields one record at a time (the position
  advances per record) and never ends on its own unless
  ``consumer_timeout_ms`` passes without a record.
- ``isolation_level="read_committed"`` returns only records of committed
  transactions (and non-transactional ones), up to the last stable offset;
  control batches are never returned. ``group_metadata()`` is what a
  transactional producer's ``send_offsets_to_transaction`` needs.
- ``max_decompressed_batch_bytes`` (64 MiB) caps what one compressed batch may inflate to
  (ketch/decompression.py); a batch beyond it raises ``CorruptMessageError`` naming the cap.
- ``seek`` is immediate; ``seek_to_beginning``/``seek_to_end`` are resolved
  lazily by the fetcher (or by ``position()``), as in kafka-python.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ketch._malloc import keep_freed_heap
from ketch.aio.connection import Connection
from ketch.aio.consumer_offsets import OffsetQueries
from ketch.aio.fetcher import Fetcher, PartitionState
from ketch.aio.group_member import GroupMember
from ketch.aio.offsets import EARLIEST, ISOLATION_LEVELS, LATEST
from ketch.decompression import MAX_DECOMPRESSED_BATCH_BYTES
from ketch.errors import ErrorCode, KetchError
from ketch.group_rules import (
    ConsumerGroupMetadata,
    OffsetAndMetadata,
    match_topics,
    normalize_offsets,
    resolve_assignors,
)
from ketch.records import ConsumerRecord, TopicPartition
from ketch.tls import SecurityConfig

__all__ = ["Consumer"]

Deserializer = Callable[[bytes | None], Any]
CommitCallback = Callable[[dict[TopicPartition, OffsetAndMetadata], BaseException | None], Any]


class Consumer(OffsetQueries):
    """Kafka-style consumer, alone or in a consumer group (see the module docstring).

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
        group_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        partition_assignment_strategy: Any = ("range",),
        session_timeout_ms: int = 10000,
        heartbeat_interval_ms: int = 3000,
        max_poll_interval_ms: int = 300000,
        rebalance_timeout_ms: int | None = None,
        isolation_level: str = "read_uncommitted",
        security_protocol: str = "PLAINTEXT",
        ssl_cafile: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        sasl_mechanism: str | None = None,
        sasl_plain_username: str | None = None,
        sasl_plain_password: str | None = None,
        max_decompressed_batch_bytes: int = MAX_DECOMPRESSED_BATCH_BYTES,
    ) -> None:
        if isolation_level not in ISOLATION_LEVELS:
            raise ValueError(f"isolation_level must be 'read_uncommitted' or 'read_committed', not {isolation_level!r}")
        self.isolation_level = isolation_level
        if auto_offset_reset not in ("earliest", "latest", "none"):
            raise ValueError(f"auto_offset_reset must be 'earliest', 'latest' or 'none', not {auto_offset_reset!r}")
        assignors = resolve_assignors(partition_assignment_strategy)
        if group_id is not None and not group_id:
            raise ValueError("group_id must be None or a non-empty string")
        tls = (security_protocol, ssl_cafile, ssl_certfile, ssl_keyfile)
        sasl = (sasl_mechanism, sasl_plain_username, sasl_plain_password)
        keep_freed_heap()  # MiB fetch answers: see ketch/_malloc.py
        self._conn = Connection(
            bootstrap_servers,
            client_id,
            request_timeout_ms,
            allow_auto_create_topics,
            SecurityConfig(*tls, *sasl),
        )
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
            isolation_level=ISOLATION_LEVELS[isolation_level],
            max_decompressed_batch_bytes=max_decompressed_batch_bytes,
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
        self._pattern: re.Pattern[str] | None = None
        self.group_id = group_id
        self._member: GroupMember | None = None
        if group_id is not None:
            self._member = GroupMember(
                self._conn,
                group_id,
                self._fetcher,
                assignors=assignors,
                session_timeout_ms=session_timeout_ms,
                heartbeat_interval_ms=heartbeat_interval_ms,
                max_poll_interval_ms=max_poll_interval_ms,
                rebalance_timeout_ms=rebalance_timeout_ms,
                retry_backoff_ms=retry_backoff_ms,
                request_timeout_ms=request_timeout_ms,
                metadata_max_age_ms=metadata_max_age_ms,
                enable_auto_commit=enable_auto_commit,
                auto_commit_interval_ms=auto_commit_interval_ms,
                client_id=client_id,
            )
        self._next_sub_refresh = 0.0 if topics and self._member is None else math.inf
        self._loop_task: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        if self._closed:
            raise KetchError("consumer is closed")
        if self._loop_task is None:
            self._loop_task = asyncio.create_task(self._fetcher.run(), name="ketch-consumer-fetcher")
            if self._member is not None:
                if self._subscription:
                    self._member.subscribe(self._subscription, None, None)
                self._member.start()
            elif self._subscription:
                await self._update_subscription()

    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Commit the positions (auto-commit), leave the group, stop fetching."""
        if self._closed:
            return
        self._closed = True
        if self._member is not None and self._loop_task is not None:
            with contextlib.suppress(Exception):  # closing must end the consumer whatever the group says
                await self._member.close(self._fetcher.current_positions())
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._fetcher.close()
        await self._conn.close()

    # -- assignment ---------------------------------------------------------------
    async def assign(self, partitions: list[TopicPartition]) -> None:
        if self._subscribed():
            raise ValueError("assign() and subscribe() are mutually exclusive; unsubscribe() first")
        await self.start()
        tps = {TopicPartition(*tp) for tp in partitions}
        if self._member is None:
            self._fetcher.assign(tps)
            return
        self._fetcher.remove_partitions(set(self._states) - tps)
        self._fetcher.add_partitions(await self._member.fetch_committed(tps - set(self._states)))

    def assignment(self) -> set[TopicPartition]:
        return set(self._states)

    async def subscribe(
        self, topics: Iterable[str] | None = None, pattern: str | re.Pattern[str] | None = None, listener: Any = None
    ) -> None:
        """Follow ``topics`` or every topic matching ``pattern`` (a full match); in a group, ``listener``
        hears assignment changes (``on_partitions_assigned``/``on_partitions_revoked``/``on_partitions_lost``)."""
        if self._states and not self._subscribed():
            raise ValueError("assign() and subscribe() are mutually exclusive; assign([]) first")
        names = [topics] if isinstance(topics, str) else list(topics or ())
        if (not names) == (pattern is None):
            raise ValueError("subscribe() needs either topics or a pattern; use unsubscribe() to stop")
        if listener is not None and self._member is None:
            raise ValueError("a rebalance listener needs a consumer group: set group_id")
        self._pattern = re.compile(pattern) if isinstance(pattern, str) else pattern
        self._subscription = set(names)
        await self.start()
        if self._member is not None:
            self._member.subscribe(names, self._pattern, listener)
            self._member.start()
        else:
            await self._update_subscription()

    def subscription(self) -> set[str]:
        """The subscribed topic names (with a pattern: the topics it matches now)."""
        if self._pattern is not None:
            return {tp.topic for tp in self._states} if self._member is None else set(self._member.matched)
        return set(self._subscription)

    def _subscribed(self) -> bool:
        return bool(self._subscription) or self._pattern is not None

    async def unsubscribe(self) -> None:
        self._subscription = set()
        self._pattern = None
        self._next_sub_refresh = math.inf
        if self._member is not None:
            await self._member.unsubscribe()
            self._member.start()  # auto-commit for a later assign()
        self._fetcher.assign(set())

    async def _update_subscription(self) -> None:
        missing = True
        try:
            if self._pattern is not None:
                self._subscription = set(match_topics((), self._pattern, await self.topics()))
            self._conn.track(self._subscription)
            cluster = await self._conn.refresh()
            tps: set[TopicPartition] = set()
            missing = False
            for name in self._subscription:
                topic = cluster.topics.get(name)
                if topic is None or topic.error_code != 0 or not topic.partitions:
                    missing = True
                    continue
                tps.update(TopicPartition(name, p) for p in topic.partitions)
            if self._subscribed():
                self._fetcher.assign(tps)
        except KetchError:
            pass
        finally:
            delay = 1.0 if missing else self.metadata_max_age
            self._next_sub_refresh = time.monotonic() + delay if self._subscribed() else math.inf

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
        if self._member is not None:
            self._member.polled(self._fetcher.current_positions())
            self._member.raise_error()
        limit = max_records or self.max_poll_records
        deadline = time.monotonic() + timeout_ms / 1000
        fetcher = self._fetcher
        member = self._member
        while True:
            fetcher.raise_error()
            if member is not None:
                await member.settled()  # a revoke or a new assignment is being applied
            out = {tp: self._deserialize(records) for tp, records in fetcher.drain(limit).items()}
            if out:
                fetcher.wake.set()  # buffers shrank: maybe prefetch
                if member is not None:
                    member.handed_out()
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return {}
            fetcher.data.clear()
            fetcher.wake.set()
            with contextlib.suppress(asyncio.TimeoutError):
                async with asyncio.timeout(remaining):
                    await fetcher.data.wait()

    def _deserialize(self, records: list[ConsumerRecord]) -> list[ConsumerRecord]:
        kd, vd = self.key_deserializer, self.value_deserializer
        if kd is None and vd is None:
            return records
        return [r._replace(key=kd(r.key) if kd else r.key, value=vd(r.value) if vd else r.value) for r in records]

    async def next_records(self) -> list[ConsumerRecord] | None:
        """The next polled records as one list; None after ``consumer_timeout_ms`` idle."""
        batch = await self._poll_until_timeout(None)
        return None if batch is None else [r for records in batch.values() for r in records]

    def __aiter__(self) -> Consumer:
        return self

    async def __anext__(self) -> ConsumerRecord:
        batch = await self._poll_until_timeout(1)
        if batch is None:
            raise StopAsyncIteration
        return next(iter(batch.values()))[0]

    async def _poll_until_timeout(self, max_records: int | None) -> dict[TopicPartition, list[ConsumerRecord]] | None:
        """Poll until records come; None after ``consumer_timeout_ms`` without any."""
        deadline = time.monotonic() + self.consumer_timeout
        while True:
            wait = min(deadline - time.monotonic(), 3600.0)
            batch = await self.poll(timeout_ms=max(wait, 0) * 1000, max_records=max_records)
            if batch:
                return batch
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
            found = await self._list({TopicPartition(*partition): st.reset})
            if st.generation == generation and st.fetch_offset is None:
                st.fetch_offset = found[TopicPartition(*partition)].offset
                self._fetcher.wake.set()
        position = st.position
        assert position is not None
        return position

    def pause(self, *partitions: TopicPartition) -> None:
        """Stop fetching ``partitions`` and returning their records until ``resume``."""
        for tp in partitions:
            self._state(tp)
            self._fetcher.paused.add(TopicPartition(*tp))

    def resume(self, *partitions: TopicPartition) -> None:
        for tp in partitions:
            self._fetcher.paused.discard(TopicPartition(*tp))
        self._fetcher.wake.set()
        self._fetcher.data.set()

    def paused(self) -> set[TopicPartition]:
        return set(self._fetcher.paused)

    # -- committed offsets ----------------------------------------------------------------
    def _group(self) -> GroupMember:
        if self._member is None:
            raise KetchError("committing offsets needs a consumer group: set group_id", ErrorCode.INVALID_GROUP_ID)
        return self._member

    def _commit_offsets(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        if offsets is None:
            return {tp: OffsetAndMetadata(pos) for tp, pos in self._fetcher.current_positions().items()}
        return normalize_offsets(offsets)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None) -> None:
        """Commit ``offsets`` (default: the position of every assigned partition, i.e. everything
        ``poll`` returned) to the group; raises ``CommitFailedError`` if the group rebalanced meanwhile."""
        member = self._group()
        await member.commit(self._commit_offsets(offsets))

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None,
        callback: CommitCallback | None = None,
    ) -> asyncio.Task[None]:
        """Like ``commit`` in the background; ``callback(offsets, exception_or_None)`` runs when it ends."""
        member = self._group()
        todo = self._commit_offsets(offsets)

        async def run() -> None:
            try:
                await member.commit(todo)
            except Exception as e:
                if callback is None:
                    raise
                callback(todo, e)
            else:
                if callback is not None:
                    callback(todo, None)

        return asyncio.ensure_future(run())

    def group_metadata(self) -> ConsumerGroupMetadata:
        """The group, generation and member id for a transactional producer's
        ``send_offsets_to_transaction`` (KIP-447); generation -1 outside a group's protocol."""
        member = self._group()
        member_id, generation = member._commit_generation()
        return ConsumerGroupMetadata(member.group_id, generation, member_id)

    async def committed(self, partition: TopicPartition, metadata: bool = False) -> int | OffsetAndMetadata | None:
        """The group's committed offset of ``partition`` (None if none); ``metadata=True``: OffsetAndMetadata."""
        await self.start()
        tp = TopicPartition(*partition)
        found = (await self._group().fetch_committed([tp]))[tp]
        if found is None or metadata:
            return found
        return found.offset

    def highwater(self, partition: TopicPartition) -> int | None:
        """The high watermark seen in the last fetch of ``partition`` (None before one)."""
        return self._state(partition).high_watermark

    def current_lag(self, partition: TopicPartition) -> int | None:
        """Records between the position and the end this consumer may read (KIP-695): the last
        stable offset under read_committed, else the high watermark, as of the last fetch; None
        before a fetch."""
        st = self._state(partition)
        end = st.last_stable_offset if self.isolation_level == "read_committed" else st.high_watermark
        position = st.position
        return None if end is None or position is None else max(end - position, 0)
