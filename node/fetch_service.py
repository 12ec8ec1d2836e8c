"""The Fetch RPC of ketch.v1.Ketch: consumers' reads and followers' replication fetches.

A mixin of ``KetchService`` (node/service.py); the replica rules it calls are
``Partition.read`` and ``Partition.serve_follower_fetch`` (replication/). Rules:

- A follower fetch of a replica a reassignment is adding is throttled
  (node/replication_throttle.py): it reads at most what the leader's bucket
  allows, nothing when it is empty (the fetch then long-polls like any other).
- A follower that sends its high watermark with a partition gets that partition in the
  answer only if the answer would change something there (``changes_nothing``,
  replication/follower.py): records, an error, a divergence or a higher watermark.
  Its fetch offset still counts for the ISR and the high watermark either way.
- Fetch long-polls: it reads, and while the total is below ``min_bytes`` and
  ``max_wait_ms`` has not passed, it waits in the fetch purgatory for an
  append to one of its partitions, then reads again the partitions that were woken
  (an append, a high watermark move, a leadership change or deletion), in place in
  the same answer. The others were read when the request arrived, which is also when
  a follower's position is recorded for them (Kafka records it once per fetch too).
  ``max_bytes`` bounds the
  whole response (cut to the node's ``fetch_max_bytes`` and ``max_request_bytes``; 0 means that cap),
  ``partition_max_bytes`` each partition; the first partition
  with data always returns at least one batch.
- A bad partition (unknown, not led here, a fenced epoch, out of range) gets its
  typed error in its own result; the other partitions are still answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from node.broker import Broker
from node.fetch_waiters import FetchWaiters
from node.metrics import NodeMetrics, timed
from node.topic_admin import error_fields
from replication.follower import changes_nothing

READ_COMMITTED = 1


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


@dataclass
class FetchReply:
    """One Fetch's answer while it is built: where each request item's result is in
    ``response`` (None: not there, a follower's left-out partition), the record bytes
    each carries, and whether it must go at once (an error, a divergence)."""

    response: pb.FetchResponse
    slots: list[int | None]
    sizes: list[int]
    failed: bool = False

    @classmethod
    def empty(cls, items: int) -> FetchReply:
        return cls(pb.FetchResponse(), [None] * items, [0] * items)

    def result(self, index: int, item: pb.FetchPartition) -> pb.FetchPartitionResult:
        """Request item ``index``'s result, fresh: added at the end, or its earlier one cleared."""
        slot = self.slots[index]
        if slot is None:
            self.slots[index] = len(self.response.partitions)
            return self.response.partitions.add(topic=item.topic, partition=item.partition, high_watermark=-1)
        result = self.response.partitions[slot]
        result.Clear()
        result.topic, result.partition, result.high_watermark = item.topic, item.partition, -1
        return result

    def served(self, request: pb.FetchRequest) -> dict[str, int]:
        """Record bytes per topic (protobuf copies a bytes field on every read, so the
        answer's own ``records`` are never read back to count them)."""
        out: dict[str, int] = {}
        for index, size in enumerate(self.sizes):
            if size:
                topic = request.partitions[index].topic
                out[topic] = out.get(topic, 0) + size
        return out


class FetchHandlers:
    broker: Broker
    waiters: FetchWaiters
    metrics: NodeMetrics

    def _count_error(self, api: str, code: int) -> None:
        raise NotImplementedError  # KetchService's

    def _read_all(self, request: pb.FetchRequest) -> FetchReply:
        """The first pass: every partition of the request."""
        reply = FetchReply.empty(len(request.partitions))
        self._read(request, reply, range(len(request.partitions)))
        return reply

    def _read(self, request: pb.FetchRequest, reply: FetchReply, indexes: Iterable[int]) -> None:
        """Read the request items at ``indexes`` into ``reply``, replacing what they had there."""
        cap = min(self.broker.config.fetch_max_bytes, self.broker.config.max_request_bytes)
        budget = min(request.max_bytes, cap) if request.max_bytes > 0 else cap
        indexes = list(indexes)
        for index in indexes:
            reply.sizes[index] = 0
        total = sum(reply.sizes)
        budget -= total
        now_ms = _now_ms()  # one clock read per pass over the partitions
        follower = request.HasField("replica_id")
        committed = request.isolation_level == READ_COMMITTED
        for index in indexes:
            item = request.partitions[index]
            try:
                part, _ = self.broker.partition(item.topic, item.partition)
                if item.HasField("current_leader_epoch"):
                    part.check_epoch(item.current_leader_epoch)
                limit = min(item.partition_max_bytes or budget, budget)
                # Response full: offsets only (max_bytes 0), the client fetches again.
                max_bytes = 0 if total > 0 and limit <= 0 else max(limit, 1)
                if follower:
                    last_epoch = item.last_fetched_epoch if item.HasField("last_fetched_epoch") else -1
                    max_bytes, throttled = self.broker.throttle.fetch_limit(
                        self.broker.image, item.topic, item.partition, request.replica_id, max_bytes
                    )
                    fetch = part.serve_follower_fetch(
                        request.replica_id, request.replica_epoch, item.fetch_offset, last_epoch, max_bytes, now_ms
                    )
                    if throttled:
                        self.broker.throttle.served(len(fetch.read.records))
                    if fetch.high_watermark_moved:
                        self.waiters.notify((item.topic, item.partition))  # acks=all waiters, consumers
                    if fetch.error is not None:
                        raise fetch.error
                    read = fetch.read
                    if (
                        reply.slots[index] is None  # one already in the answer stays, refreshed
                        and item.HasField("high_watermark")
                        and changes_nothing(
                            read.records, read.diverging, read.high_watermark, item.fetch_offset, item.high_watermark
                        )
                    ):
                        continue  # left out: the follower would change nothing (KIP-227's saving)
                else:
                    read = part.read(item.fetch_offset, max_bytes, read_committed=committed)
                result = reply.result(index, item)
                result.high_watermark = read.high_watermark
                result.log_start_offset = read.log_start_offset
                result.last_stable_offset = (
                    read.last_stable_offset if read.last_stable_offset >= 0 else part.last_stable_offset
                )
                result.records = read.records
                for pid, first in read.aborted:
                    result.aborted_transactions.add(producer_id=pid, first_offset=first)
                if read.diverging is not None:
                    result.diverging_epoch.epoch, result.diverging_epoch.end_offset = read.diverging
                    reply.failed = True  # answer at once: the follower must truncate before anything else
                size = len(read.records)
                reply.sizes[index] = size
                total += size
                budget -= size
            except Exception as exc:
                result = reply.result(index, item)
                result.error_code, result.error_message = error_fields(exc)
                self._count_error("Fetch", result.error_code)
                reply.failed = True

    @timed("Fetch")
    async def Fetch(self, request: pb.FetchRequest, context: Any) -> pb.FetchResponse:
        deadline = time.monotonic() + max(request.max_wait_ms, 0) / 1000
        keys = [(p.topic, p.partition) for p in request.partitions]
        reply = self._read_all(request)
        while True:
            remaining = deadline - time.monotonic()
            if reply.failed or sum(reply.sizes) >= max(request.min_bytes, 1) or remaining <= 0 or self.waiters.closed:
                break
            self.metrics.fetch_waiting.inc()
            try:
                woken = await self.waiters.wait_any(keys, remaining)
            finally:
                self.metrics.fetch_waiting.dec()
            if context is not None and context.done():
                break
            if woken:
                self._read(request, reply, [index for index, key in enumerate(keys) if key in woken])
        for topic, size in reply.served(request).items():
            self.metrics.bytes_out.labels(topic).inc(size)
        return reply.response
