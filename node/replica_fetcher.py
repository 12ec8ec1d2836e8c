"""ReplicaFetcher: this broker's follower replicas copy their leaders' logs (Kafka's pull model).

One fetch loop per leader broker, covering every partition this broker
follows on it. Each round sends one long-poll Fetch (``replica_id``, broker
epoch, and per partition the fetch offset = local log end, the leader epoch
it believes current, the epoch of its last batch and its high watermark) and
hands each partition's answer, as a ``FetchAnswer``, to ``Partition.apply_fetch_answer``
(the rules are in replication/follower.py: ignore a stale answer, reset,
truncate on divergence, append what is new, then the follower's high
watermark). This driver logs what that reports, counts progress, and syncs.
A partition missing from the answer is one the leader left out because its
answer would change nothing here (``changes_nothing`` in replication/follower.py).
Each loop keeps a fetch session with its leader (node/fetch_session.py): after
one full fetch, a round names only the partitions whose fetch state changed;
a failed round, a refused session or a change in the followed set starts a
new session with a full fetch. Its rounds are the messages of one FetchStream
call to the leader (node/fetch_stream.py ``LeaderFetches``), not a unary call each.

A change in the followed set does not wait for the round in flight: that fetch may be parked at
the leader for up to ``replica.fetch.max.wait.ms`` (500 ms) without the new partition, and an
acks=all write to it (a new topic, or a partition whose leader just moved here after a failover)
would wait that long for this follower. So ``reconcile`` cuts short a loop's fetch in flight when the
partitions it follows on that leader, or their leader epochs, are no longer what the fetch named;
the loop drops that round (an answer not applied changes nothing here: the next fetch asks again
from the log end) and opens a new session with the new set at once.

The fetch offset a follower sends is what tells the leader how far it has
got (the leader's ISR and high watermark follow from it), so appending
before the next fetch is the acknowledgement; for ``flush.messages=1``
topics the appends of a round are fsynced (one group commit) before the
next fetch goes out. Loops start and stop as the
metadata image changes who leads what (``reconcile``); a transport error
backs off briefly and retries, and an UNAVAILABLE one names the leader to the
controller (``on_unreachable``: node/lifecycle.py ``report_unreachable``), which
probes it at once: a killed leader is fenced after one probe, not its silence.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc

from coordinator.metadata import TopicIdPartition
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.tls import PLAINTEXT, SecurityConfig, open_aio_channel
from node.broker import Broker
from node.fetch_session import FetchState, FollowerSession, Key
from node.fetch_stream import LeaderFetches
from node.group_commit import GroupCommit
from node.lifecycle import BrokerEpoch
from replication.follower import FetchAnswer
from replication.partition import Partition

log = logging.getLogger("ketch.node.fetcher")
PARTITION_MAX_BYTES = 1 << 20
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 64 << 20)]


def fetch_state(part: Partition) -> FetchState:
    """What a follower names for ``part``: fetch offset (its log end), current leader epoch, the epoch
    of its last batch (-1: none) and its high watermark."""
    log_ = part.log
    return log_.log_end_offset, part.leader_epoch, log_.latest_epoch, part.high_watermark


def fetch_request(
    replica_id: int,
    replica_epoch: int,
    max_wait_ms: int,
    named: list[Key],
    states: dict[Key, FetchState],
    session: FollowerSession | None,
    session_epoch: int = 0,
    max_bytes: int = 64 << 20,
) -> pb.FetchRequest:
    """A follower's fetch naming the partitions ``named`` with their ``states``: in ``session`` at
    ``session_epoch`` (what ``FollowerSession.plan`` gave), or without a session (None)."""
    request = pb.FetchRequest(
        max_wait_ms=max_wait_ms, min_bytes=1, max_bytes=max_bytes, replica_id=replica_id, replica_epoch=replica_epoch
    )
    if session is not None:
        request.session_id, request.session_epoch = session.session_id, session_epoch
    for key in named:
        offset, leader_epoch, last_epoch, high_watermark = states[key]
        item = request.partitions.add(
            topic=key[0],
            partition=key[1],
            fetch_offset=offset,
            partition_max_bytes=PARTITION_MAX_BYTES,
            current_leader_epoch=leader_epoch,
            high_watermark=high_watermark,  # the leader leaves out what would change nothing here
        )
        if last_epoch >= 0:
            item.last_fetched_epoch = last_epoch
    return request


class ReplicaFetcher:
    def __init__(
        self,
        broker: Broker,
        broker_epoch: BrokerEpoch,
        on_progress: Callable[[str, int], None],
        group_commit: GroupCommit,
        max_wait_ms: int = 500,
        security: SecurityConfig = PLAINTEXT,
        on_unreachable: Callable[[int], None] = lambda _: None,
    ) -> None:
        self.broker = broker
        self._security = security
        self._group_commit = group_commit
        self._needs_sync = False
        self._broker_epoch = broker_epoch
        self._on_progress = on_progress
        self._max_wait_ms = max_wait_ms
        self._on_unreachable = on_unreachable
        self._loops: dict[int, asyncio.Task[None]] = {}
        # per leader, the fetch in flight and the (topic, partition) -> fetch state it named
        self._in_flight: dict[int, tuple[LeaderFetches, dict[Key, FetchState]]] = {}

    def _followed(self, leader_id: int) -> list[tuple[TopicIdPartition, Partition]]:
        return [
            (tp, part)
            for tp, part in self.broker.replicas().items()
            if not part.is_leader and part.leader_id == leader_id
        ]

    def reconcile(self) -> None:
        """Start a loop for every leader this broker now follows; stop the others; cut short a fetch in
        flight that no longer names what its loop follows."""
        followed: dict[int, dict[Key, int]] = {}
        for part in self.broker.replicas().values():
            if not part.is_leader and part.leader_id >= 0:
                followed.setdefault(part.leader_id, {})[(part.topic, part.index)] = part.leader_epoch
        for leader_id in followed.keys() - self._loops.keys():
            self._loops[leader_id] = asyncio.create_task(self._run(leader_id), name=f"fetch-from-{leader_id}")
        for leader_id in self._loops.keys() - followed.keys():
            self._loops.pop(leader_id).cancel()
        for leader_id, (fetches, named) in self._in_flight.items():
            now = followed.get(leader_id, {})
            if now.keys() != named.keys() or any(named[key][1] != epoch for key, epoch in now.items()):
                fetches.cut_short()

    async def stop(self) -> None:
        tasks = list(self._loops.values())
        self._loops.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _address(self, leader_id: int) -> str | None:
        broker = self.broker.image.brokers.get(leader_id)
        return f"{broker.host}:{broker.port}" if broker is not None else None

    async def _run(self, leader_id: int) -> None:
        channel: grpc.aio.Channel | None = None
        fetches: LeaderFetches | None = None
        address = None
        session = FollowerSession()
        try:
            while True:
                wanted = self._address(leader_id)
                if wanted != address:
                    if fetches is not None:
                        fetches.close()
                    if channel is not None:
                        await channel.close()
                    session.reset()
                    address = wanted
                    channel = open_aio_channel(address, self._security, CHANNEL_OPTIONS) if address else None
                    fetches = LeaderFetches(ketch_pb2_grpc.KetchStub(channel), leader_id) if channel else None
                followed = self._followed(leader_id)
                if fetches is None or not followed:
                    await asyncio.sleep(0.1)
                    continue
                try:
                    await self._round(leader_id, fetches, followed, session)
                except grpc.aio.AioRpcError as exc:
                    session.reset()
                    log.debug("fetch from leader %d failed: %s", leader_id, exc.code().name)
                    if exc.code() == grpc.StatusCode.UNAVAILABLE:
                        self._on_unreachable(leader_id)  # the controller probes it now (node/lifecycle.py)
                    await asyncio.sleep(0.2)
                except (TimeoutError, ConnectionResetError) as exc:  # no answer in time; the leader ended the call
                    session.reset()
                    log.debug("fetch from leader %d failed: %r", leader_id, exc)
                    await asyncio.sleep(0.2)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bad response must not end this loop for good
                    session.reset()
                    log.exception("fetch round from leader %d failed", leader_id)
                    await asyncio.sleep(0.5)
        finally:
            if fetches is not None:
                fetches.close()
            if channel is not None:
                await channel.close()

    async def _round(
        self,
        leader_id: int,
        fetches: LeaderFetches,
        followed: list[tuple[TopicIdPartition, Partition]],
        session: FollowerSession,
    ) -> None:
        parts: dict[Key, Partition] = {}
        states: dict[Key, FetchState] = {}
        for _, part in followed:
            key = (part.topic, part.index)
            parts[key] = part
            states[key] = fetch_state(part)
        session_epoch, named = session.plan(states)
        request = fetch_request(
            self.broker.node_id, self._broker_epoch.value, self._max_wait_ms, named, states, session, session_epoch
        )
        self._in_flight[leader_id] = (fetches, states)
        try:
            response = await fetches.exchange(request, self._max_wait_ms / 1000 + 10)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not fetches.was_cut_short or (task is not None and task.cancelling()):
                raise  # this loop is stopping
            session.reset()  # reconcile cut it short: the followed set changed; a full fetch of the new set
            return
        finally:
            # (not a newer loop's entry: a loop for this leader may have stopped and begun again)
            if self._in_flight.get(leader_id, (None,))[0] is fetches:
                del self._in_flight[leader_id]
        if not session.answered(states, named, response):
            log.info("fetch session refused (%s), opening a new one", response.error_message)
            return
        idle = True
        for result in response.partitions:
            key = (result.topic, result.partition)
            answered = parts.get(key)
            if answered is not None:
                offset, leader_epoch = states[key][:2]
                if self._apply(answered, leader_epoch, offset, result):
                    idle = False
        if self._needs_sync:  # flush.messages=1 topics: durable before the next fetch acknowledges it
            self._needs_sync = False
            await self._group_commit.flush()
        if idle and response.partitions and all(r.error_code for r in response.partitions):
            session.reset()  # errors only: start again from a full fetch
            await asyncio.sleep(0.1)  # only errors: don't spin (an empty answer: nothing moved, fetch again)

    def _apply(self, part: Partition, epoch: int, offset: int, result: pb.FetchPartitionResult) -> bool:
        diverging = None
        if result.HasField("diverging_epoch"):
            diverging = (result.diverging_epoch.epoch, result.diverging_epoch.end_offset)
        answer = FetchAnswer(
            leader_epoch=epoch,
            fetch_offset=offset,
            error=result.error_code,
            high_watermark=result.high_watermark,
            log_start_offset=result.log_start_offset,
            records=result.records,
            diverging=diverging,
        )
        update = part.apply_fetch_answer(answer)
        if update.note is not None:
            log.info("%s-%d: %s", part.topic, part.index, update.note)
        if update.appended:
            self._needs_sync = self._needs_sync or self.broker.flush_on_append(part)
            self._on_progress(part.topic, part.index)
        return update.changed
