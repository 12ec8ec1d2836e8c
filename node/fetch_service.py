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
- A follower's fetch in a session (node/fetch_session.py) names only what changed;
  the session's other partitions count as fetched again at what they last named
  (recorded for the ISR and the high watermark without a read), and only those named,
  notified since the last fetch, or answered or behind last time are read. A parked
  session fetch waits on the session's standing watch. A refused session is a typed
  error on the whole response, with no partitions.
- FetchStream is Fetch over one call, for a follower's replication fetches
  (node/fetch_stream.py): each request is answered, in order, by exactly what Fetch
  answers it (the same handler, timed as ``Fetch``); one call instead of one per round
  costs a node less than half the gRPC CPU (``python -m bench rpc-cost``). It checks
  each request's access as Fetch does, and ends after the answer that follows the
  node's shutdown (its fetch waiters closed: that answer comes at once). A follower
  paused between an answer and its next request holds its call until the server's
  grace period ends it (one paused with its request parked here does not).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import KetchError
from node.broker import Broker
from node.fetch_session import FetchSession, FetchSessions
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
    each carries, whether it must go at once (an error, a divergence), and the items a
    session reads again next time (answered, or left out while the follower is behind)."""

    response: pb.FetchResponse
    slots: list[int | None]
    sizes: list[int]
    failed: bool = False
    unsettled: set[int] = field(default_factory=set)

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

    def served(self, items: Sequence[pb.FetchPartition]) -> dict[str, int]:
        """Record bytes per topic (protobuf copies a bytes field on every read, so the
        answer's own ``records`` are never read back to count them)."""
        out: dict[str, int] = {}
        for index, size in enumerate(self.sizes):
            if size:
                topic = items[index].topic
                out[topic] = out.get(topic, 0) + size
        return out


class FetchHandlers:
    broker: Broker
    waiters: FetchWaiters
    fetch_sessions: FetchSessions
    metrics: NodeMetrics

    def _count_error(self, api: str, code: int) -> None:
        raise NotImplementedError  # KetchService's

    def _read(
        self, request: pb.FetchRequest, items: Sequence[pb.FetchPartition], reply: FetchReply, indexes: Iterable[int]
    ) -> None:
        """Read ``items`` at ``indexes`` into ``reply``, replacing what they had there."""
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
            item = items[index]
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
                        # left out: the follower would change nothing (KIP-227's saving); a session
                        # reads it again next time only while the follower is behind (a full answer, a throttle)
                        if item.fetch_offset < part.log.log_end_offset:
                            reply.unsettled.add(index)
                        else:
                            reply.unsettled.discard(index)
                        continue
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
                reply.unsettled.add(index)
                reply.sizes[index] = size
                total += size
                budget -= size
            except Exception as exc:
                result = reply.result(index, item)
                result.error_code, result.error_message = error_fields(exc)
                self._count_error("Fetch", result.error_code)
                reply.unsettled.add(index)
                reply.failed = True

    def _fetched_again(
        self, session: FetchSession, items: Sequence[pb.FetchPartition], indexes: list[int]
    ) -> list[int]:
        """The session's partitions at ``indexes`` count as fetched again at what they last named
        (no read: nothing there changed); returns the ones that must be read after all (no longer led here)."""
        now_ms = _now_ms()
        read = []
        for index in indexes:
            item = items[index]
            try:
                part, _ = self.broker.partition(item.topic, item.partition)
            except KetchError:  # no longer led here (or gone): the read answers the typed error
                read.append(index)
                continue
            if part.on_follower_fetch(session.replica_id, item.fetch_offset, now_ms, session.replica_epoch):
                self.waiters.notify((item.topic, item.partition))
        return read

    def _session(self, request: pb.FetchRequest) -> FetchSession | None:
        """The follower's fetch session this request opens or continues (None: sessionless)."""
        if not request.HasField("replica_id") or not request.HasField("session_epoch"):
            return None
        if request.session_epoch == 0:
            return self.fetch_sessions.open(request.replica_id, request.replica_epoch)
        return self.fetch_sessions.resume(
            request.replica_id, request.replica_epoch, request.session_id, request.session_epoch
        )

    @timed("Fetch")
    async def Fetch(self, request: pb.FetchRequest, context: Any) -> pb.FetchResponse:
        deadline = time.monotonic() + max(request.max_wait_ms, 0) / 1000
        try:
            session = self._session(request)
        except KetchError as exc:
            self._count_error("Fetch", exc.code)
            return pb.FetchResponse(error_code=exc.code.name, error_message=exc.message)
        items: Sequence[pb.FetchPartition]
        if session is None:
            items = request.partitions
            keys = [(p.topic, p.partition) for p in items]
            reply = FetchReply.empty(len(items))
            self._read(request, items, reply, range(len(items)))
        else:
            keys, to_read = session.begin(request.partitions, self.waiters)
            items = [session.items[key] for key in keys]
            reply = FetchReply.empty(len(items))
            reading = [index for index, key in enumerate(keys) if key in to_read]
            reading += self._fetched_again(session, items, [i for i, key in enumerate(keys) if key not in to_read])
            self._read(request, items, reply, reading)
            reply.response.session_id = session.session_id
        while True:
            remaining = deadline - time.monotonic()
            if reply.failed or sum(reply.sizes) >= max(request.min_bytes, 1) or remaining <= 0 or self.waiters.closed:
                break
            if session is not None and session.replaced:
                break  # a newer session of this follower took over; this answer is the last of the old
            self.metrics.fetch_waiting.inc()
            try:
                if session is None:
                    woken = await self.waiters.wait_any(keys, remaining)
                else:
                    await session.watch.wait(remaining)
                    woken = session.watch.take()
            finally:
                self.metrics.fetch_waiting.dec()
            if context is not None and context.done():
                break
            if woken:
                self._read(request, items, reply, [index for index, key in enumerate(keys) if key in woken])
        if session is not None:
            session.carried = {keys[index] for index in reply.unsettled}
        for topic, size in reply.served(items).items():
            self.metrics.bytes_out.labels(topic).inc(size)
        return reply.response

    async def FetchStream(
        self, requests: AsyncIterator[pb.FetchRequest], context: Any
    ) -> AsyncIterator[pb.FetchResponse]:
        async for request in requests:
            yield await self.Fetch(request, context)
            if self.waiters.closed:
                return  # shutting down: the follower opens a new call, to whoever leads then
