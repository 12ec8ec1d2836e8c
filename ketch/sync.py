"""Blocking clients: ``ketch.Producer``, ``ketch.Consumer``, ``ketch.Admin``.

Each wraps the asyncio client of the same name (``ketch.aio``), the one
implementation, and drives it on a private event loop thread (``LoopThread``,
one per client object). Signatures match the asyncio ones; methods block
instead of returning coroutines.

Rules:
- ``Producer.send`` must stay cheap: it appends to the accumulator from the
  caller's thread (the accumulator is lock-protected) and wakes the loop only
  when a batch opens or fills. It blocks only for a topic's first metadata or
  when ``buffer_memory`` is full. It returns a ``FutureRecordMetadata`` (a
  ``concurrent.futures.Future`` with kafka-python's ``get(timeout)``); the
  futures complete on the loop thread, so their callbacks run there. A send
  made *from* such a callback cannot block on the loop: it is queued on the
  loop instead.
- ``close()`` closes the asyncio client on its loop, then stops the thread; it
  is idempotent and also runs from ``__exit__``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from ketch import aio
from ketch._future import FutureRecordMetadata
from ketch._loop import LoopThread
from ketch.acl import AclBinding, AclBindingFilter
from ketch.aio.admin import (
    ClusterDescription,
    ConsumerGroupDescription,
    ConsumerGroupListing,
    NewPartitions,
    NewTopic,
    TopicDescription,
)
from ketch.aio.admin_acls import ScramDeletion, ScramUpsertion
from ketch.aio.admin_configs import ConfigEntry, ConfigResource
from ketch.aio.admin_reassignments import PartitionReassignment
from ketch.aio.admin_transactions import TransactionDescription, TransactionListing
from ketch.group_rules import ConsumerGroupMetadata, OffsetAndMetadata
from ketch.records import ConsumerRecord, Headers, OffsetAndTimestamp, RecordMetadata, TopicPartition

__all__ = ["Admin", "Consumer", "FutureRecordMetadata", "Producer"]


class _SyncClient:
    _loop: LoopThread

    def _start(self, name: str, factory: Callable[[], Any]) -> Any:
        self._loop = LoopThread(name)

        async def make() -> Any:
            return factory()

        try:
            return self._loop.run(make())
        except BaseException:
            self._loop.stop()
            raise

    def _run(self, coro: Any, timeout: float | None = None) -> Any:
        return self._loop.run(coro, timeout)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError


class Producer(_SyncClient):
    """Blocking producer; see ``ketch.aio.Producer`` for every option."""

    def __init__(self, bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", **config: Any) -> None:
        self._aio: aio.Producer = self._start("ketch-producer", lambda: aio.Producer(bootstrap_servers, **config))
        self._closed = False
        self._run(self._aio.start())

    def send(
        self,
        topic: str,
        value: Any = None,
        key: Any = None,
        partition: int | None = None,
        headers: Headers | None = None,
        timestamp_ms: int | None = None,
    ) -> FutureRecordMetadata:
        fut = FutureRecordMetadata()
        if self._loop.in_loop():  # from a delivery callback: never block the loop
            fut._own_condition()  # it joins no batch: completed by _chain
            task = asyncio.ensure_future(self._aio.send(topic, value, key, partition, headers, timestamp_ms))
            task.add_done_callback(lambda t: _chain(t, fut))
            return fut
        self._aio.send_threadsafe(self._run, fut, topic, value, key, partition, headers, timestamp_ms)
        return fut

    def flush(self, timeout: float | None = None) -> None:
        self._run(self._aio.flush(timeout))

    def init_transactions(self) -> None:
        self._run(self._aio.init_transactions())

    def begin_transaction(self) -> None:
        self._run(_call(self._aio.begin_transaction))

    def send_offsets_to_transaction(
        self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int], group_metadata: ConsumerGroupMetadata
    ) -> None:
        self._run(self._aio.send_offsets_to_transaction(offsets, group_metadata))

    def commit_transaction(self) -> None:
        self._run(self._aio.commit_transaction())

    def abort_transaction(self) -> None:
        self._run(self._aio.abort_transaction())

    def close(self, timeout: float | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._aio.close(timeout))
        finally:
            self._loop.stop()


def _chain(task: asyncio.Future[asyncio.Future[RecordMetadata]], fut: FutureRecordMetadata) -> None:
    if task.cancelled():
        fut.cancel()
    elif (exc := task.exception()) is not None:
        fut.set_exception(exc)
    else:
        inner = task.result()
        inner.add_done_callback(
            lambda f: fut.set_exception(e) if (e := f.exception()) is not None else fut.set_result(f.result())
        )


class Consumer(_SyncClient):
    """Blocking consumer; see ``ketch.aio.Consumer`` for every option.

    Iterating yields records one by one, polling as needed; it stops after
    ``consumer_timeout_ms`` without records (default: never).
    """

    def __init__(self, *topics: str, bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", **config: Any) -> None:
        self._aio: aio.Consumer = self._start(
            "ketch-consumer", lambda: aio.Consumer(*topics, bootstrap_servers=bootstrap_servers, **config)
        )
        self._closed = False
        self._iter: Iterator[ConsumerRecord] | None = None
        try:
            self._run(self._aio.start())  # resolves a subscription given to the constructor
        except BaseException:
            self.close()
            raise

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        self._run(self._aio.assign(list(partitions)))

    def assignment(self) -> set[TopicPartition]:
        return self._aio.assignment()

    def subscribe(
        self, topics: Iterable[str] | None = None, pattern: str | re.Pattern[str] | None = None, listener: Any = None
    ) -> None:
        """As ``ketch.aio.Consumer.subscribe``; the listener's callbacks run on a worker thread while the
        rebalance waits for them, so they may call this consumer's blocking methods (``commit``, ``seek``)."""
        names = [topics] if isinstance(topics, str) else None if topics is None else list(topics)
        wrapped = None if listener is None else _ThreadListener(listener)
        self._run(self._aio.subscribe(names, pattern, wrapped))

    def subscription(self) -> set[str]:
        return self._aio.subscription()

    def unsubscribe(self) -> None:
        self._run(self._aio.unsubscribe())

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[ConsumerRecord]]:
        result: dict[TopicPartition, list[ConsumerRecord]] = self._run(self._aio.poll(timeout_ms, max_records))
        return result

    def __iter__(self) -> Iterator[ConsumerRecord]:
        return self

    def __next__(self) -> ConsumerRecord:
        if self._iter is None:
            self._iter = self._records()
        return next(self._iter)

    def _records(self) -> Iterator[ConsumerRecord]:
        while True:
            batch: list[ConsumerRecord] | None = self._run(self._aio.next_records())
            if batch is None:
                return
            yield from batch

    def seek(self, partition: TopicPartition, offset: int) -> None:
        self._run(self._aio.seek(partition, offset))

    def seek_to_beginning(self, *partitions: TopicPartition) -> None:
        self._run(self._aio.seek_to_beginning(*partitions))

    def seek_to_end(self, *partitions: TopicPartition) -> None:
        self._run(self._aio.seek_to_end(*partitions))

    def position(self, partition: TopicPartition) -> int:
        offset: int = self._run(self._aio.position(partition))
        return offset

    def highwater(self, partition: TopicPartition) -> int | None:
        return self._aio.highwater(partition)

    def current_lag(self, partition: TopicPartition) -> int | None:
        return self._aio.current_lag(partition)

    def pause(self, *partitions: TopicPartition) -> None:
        self._run(_call(self._aio.pause, *partitions))

    def resume(self, *partitions: TopicPartition) -> None:
        self._run(_call(self._aio.resume, *partitions))

    def paused(self) -> set[TopicPartition]:
        return self._aio.paused()

    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None) -> None:
        """Commit synchronously (default: every assigned partition's position)."""
        self._run(self._aio.commit(offsets))

    def commit_async(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata | int] | None = None,
        callback: Callable[[dict[TopicPartition, OffsetAndMetadata], BaseException | None], Any] | None = None,
    ) -> concurrent.futures.Future[None]:
        """Commit in the background; ``callback(offsets, exception_or_None)`` runs on the client's loop thread."""

        async def commit() -> None:
            await self._aio.commit_async(offsets, callback)

        return asyncio.run_coroutine_threadsafe(commit(), self._loop.loop)

    def committed(self, partition: TopicPartition, metadata: bool = False) -> int | OffsetAndMetadata | None:
        result: int | OffsetAndMetadata | None = self._run(self._aio.committed(partition, metadata))
        return result

    def group_metadata(self) -> ConsumerGroupMetadata:
        return self._aio.group_metadata()

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        result: set[int] | None = self._run(self._aio.partitions_for_topic(topic))
        return result

    def topics(self) -> set[str]:
        result: set[str] = self._run(self._aio.topics())
        return result

    def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        result: dict[TopicPartition, OffsetAndTimestamp | None] = self._run(self._aio.offsets_for_times(timestamps))
        return result

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = self._run(self._aio.beginning_offsets(list(partitions)))
        return result

    def end_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = self._run(self._aio.end_offsets(list(partitions)))
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._aio.close())
        finally:
            self._loop.stop()


async def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a plain method of an asyncio client on its loop (its state belongs to that loop)."""
    return fn(*args)


class _ThreadListener:
    """A blocking rebalance listener whose callbacks run on a worker thread (see ``Consumer.subscribe``)."""

    NAMES = (
        "on_partitions_revoked",
        "onPartitionsRevoked",
        "on_partitions_assigned",
        "onPartitionsAssigned",
        "on_partitions_lost",
        "onPartitionsLost",
    )

    def __init__(self, listener: Any) -> None:
        for name in self.NAMES:
            fn = getattr(listener, name, None)
            if callable(fn):
                setattr(self, name, self._threaded(fn))

    @staticmethod
    def _threaded(fn: Callable[[set[TopicPartition]], Any]) -> Callable[[set[TopicPartition]], Any]:
        async def call(partitions: set[TopicPartition]) -> Any:
            return await asyncio.to_thread(fn, partitions)

        return call


class Admin(_SyncClient):
    """Blocking admin client; see ``ketch.aio.Admin``."""

    def __init__(self, bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092", **config: Any) -> None:
        self._aio: aio.Admin = self._start("ketch-admin", lambda: aio.Admin(bootstrap_servers, **config))
        self._closed = False

    def create_topics(self, topics: Iterable[NewTopic], validate_only: bool = False) -> None:
        self._run(self._aio.create_topics(list(topics), validate_only))

    def create_partitions(self, topic_partitions: Mapping[str, NewPartitions], validate_only: bool = False) -> None:
        self._run(self._aio.create_partitions(topic_partitions, validate_only))

    def delete_topics(self, names: Iterable[str]) -> None:
        self._run(self._aio.delete_topics(list(names)))

    def list_topics(self) -> list[str]:
        result: list[str] = self._run(self._aio.list_topics())
        return result

    def describe_topics(self, names: Iterable[str] | None = None) -> list[TopicDescription]:
        result: list[TopicDescription] = self._run(self._aio.describe_topics(None if names is None else list(names)))
        return result

    def describe_cluster(self) -> ClusterDescription:
        result: ClusterDescription = self._run(self._aio.describe_cluster())
        return result

    def list_offsets(self, specs: Mapping[TopicPartition, str | int]) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = self._run(self._aio.list_offsets(specs))
        return result

    def list_consumer_groups(self) -> list[ConsumerGroupListing]:
        result: list[ConsumerGroupListing] = self._run(self._aio.list_consumer_groups())
        return result

    def describe_consumer_groups(self, group_ids: Iterable[str]) -> list[ConsumerGroupDescription]:
        ids = [group_ids] if isinstance(group_ids, str) else list(group_ids)
        result: list[ConsumerGroupDescription] = self._run(self._aio.describe_consumer_groups(ids))
        return result

    def delete_consumer_groups(self, group_ids: Iterable[str]) -> None:
        self._run(self._aio.delete_consumer_groups([group_ids] if isinstance(group_ids, str) else list(group_ids)))

    def list_consumer_group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        result: dict[TopicPartition, int] = self._run(self._aio.list_consumer_group_offsets(group_id))
        return result

    def alter_consumer_group_offsets(self, group_id: str, offsets: Mapping[TopicPartition, int]) -> None:
        self._run(self._aio.alter_consumer_group_offsets(group_id, offsets))

    def list_transactions(self, states: Iterable[str] = ()) -> list[TransactionListing]:
        result: list[TransactionListing] = self._run(self._aio.list_transactions(list(states)))
        return result

    def describe_transactions(self, transactional_ids: Iterable[str]) -> list[TransactionDescription]:
        ids = [transactional_ids] if isinstance(transactional_ids, str) else list(transactional_ids)
        result: list[TransactionDescription] = self._run(self._aio.describe_transactions(ids))
        return result

    def describe_configs(self, resources: Iterable[ConfigResource]) -> dict[ConfigResource, dict[str, ConfigEntry]]:
        result: dict[ConfigResource, dict[str, ConfigEntry]] = self._run(self._aio.describe_configs(list(resources)))
        return result

    def incremental_alter_configs(
        self, configs: Mapping[ConfigResource, Mapping[str, str | int | float | None]], validate_only: bool = False
    ) -> None:
        self._run(self._aio.incremental_alter_configs(configs, validate_only))

    def create_acls(self, acls: Iterable[AclBinding]) -> None:
        self._run(self._aio.create_acls(list(acls)))

    def describe_acls(self, acl_filter: AclBindingFilter | None = None) -> list[AclBinding]:
        result: list[AclBinding] = self._run(self._aio.describe_acls(acl_filter))
        return result

    def delete_acls(self, filters: Iterable[AclBindingFilter]) -> list[AclBinding]:
        result: list[AclBinding] = self._run(self._aio.delete_acls(list(filters)))
        return result

    def alter_user_scram_credentials(self, alterations: Iterable[ScramUpsertion | ScramDeletion]) -> None:
        self._run(self._aio.alter_user_scram_credentials(list(alterations)))

    def describe_user_scram_credentials(self, users: Iterable[str] = ()) -> dict[str, list[tuple[str, int]]]:
        result: dict[str, list[tuple[str, int]]] = self._run(self._aio.describe_user_scram_credentials(list(users)))
        return result

    def alter_partition_reassignments(self, reassignments: Mapping[TopicPartition, Iterable[int] | None]) -> None:
        moves = {tp: None if r is None else list(r) for tp, r in reassignments.items()}
        self._run(self._aio.alter_partition_reassignments(moves))

    def list_partition_reassignments(
        self, topics: Iterable[str] | None = None
    ) -> dict[TopicPartition, PartitionReassignment]:
        result: dict[TopicPartition, PartitionReassignment] = self._run(self._aio.list_partition_reassignments(topics))
        return result

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._run(self._aio.close())
        finally:
            self._loop.stop()
