"""Consumer group membership on the client (ketch/aio/group_member.py), without nodes.

The pure rules are tested in test_client_group_rules.py. Here, the asyncio driver
against ``FakeBroker``: the broker's real pure
  ``GroupCoordinator`` (coordinator/groups) behind in-process stubs, with a
  tick task for session timeouts and error injection per RPC, so joins,
  syncs, heartbeats, commits and coordinator errors follow the broker's
  actual rules. The asyncio and blocking ``Consumer`` run against it too
  (``Fetch`` answers nothing and ``ListOffsets`` says 0).
"""

from __future__ import annotations

import asyncio
import itertools
import re
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

import pytest

import ketch
import ketch.aio
import ketch.aio.consumer
from coordinator.groups import GroupConfig, GroupCoordinator, GroupResult, OffsetCommit
from coordinator.groups.results import JoinResponse, Reply, SyncResponse
from ketch.aio.connection import Connection
from ketch.aio.fetcher import EARLIEST, Fetcher, PartitionState
from ketch.aio.group_member import (
    CommitFailedError,
    GroupMember,
    OffsetAndMetadata,
    resolve_assignors,
)
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from ketch.records import TopicPartition, build_batch

TP = TopicPartition

# -- a fake broker around the real pure coordinator -----------------------------------------------


def status(code: int) -> pb.GroupStatus:
    return pb.GroupStatus(error_code=ErrorCode(code).name)


class FakeBroker:
    """One in-process broker: the group RPCs go to a pure ``GroupCoordinator``; topics are counts."""

    def __init__(self, topics: Mapping[str, int] | None = None) -> None:
        self.config = GroupConfig(min_session_timeout_ms=50, initial_rebalance_delay_ms=0)
        self.gc = GroupCoordinator(self.config)
        self.topics: dict[str, int] = dict(topics or {"t": 6})
        self.start = time.monotonic()
        self.ids = itertools.count(1)
        self.parked: dict[int, asyncio.Future[Any]] = {}
        self.inject: dict[str, list[int]] = {}  # method -> error codes to answer next
        self.calls: dict[str, int] = {}
        self.commits: list[tuple[str, int, dict[TopicPartition, int]]] = []
        self._ticker: asyncio.Task[None] | None = None

    def now_ms(self) -> int:
        return int((time.monotonic() - self.start) * 1000)

    def ensure_ticking(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.02)
            self._deliver(self.gc.tick(self.now_ms()))

    def _deliver(self, result: GroupResult[Any]) -> None:
        for reply in result.completed:
            self._answer(reply)

    def _answer(self, reply: Reply) -> None:
        fut = self.parked.pop(reply.request_id, None)
        if fut is not None and not fut.done():
            fut.set_result(reply.response)

    def _injected(self, method: str) -> int:
        self.calls[method] = self.calls.get(method, 0) + 1
        self.ensure_ticking()
        codes = self.inject.get(method)
        return codes.pop(0) if codes else 0

    async def _parked(self, result: GroupResult[Any], rid: int) -> Any:
        self._deliver(result)
        if result.response is not None:
            self.parked.pop(rid, None)
            return result.response
        return await self.parked[rid]

    # -- the stub's methods -------------------------------------------------------------------
    async def FindCoordinator(self, req: pb.FindCoordinatorRequest, timeout: float) -> pb.FindCoordinatorResponse:
        code = self._injected("FindCoordinator")
        return pb.FindCoordinatorResponse(status=status(code), node_id=1, host="fake", port=1)

    async def JoinGroup(self, req: pb.JoinGroupRequest, timeout: float) -> pb.JoinGroupResponse:
        if code := self._injected("JoinGroup"):
            return pb.JoinGroupResponse(status=status(code))
        rid = next(self.ids)
        self.parked[rid] = asyncio.get_running_loop().create_future()
        result = self.gc.join_group(
            req.group_id,
            req.member_id,
            req.protocol_type,
            [(p.name, p.metadata) for p in req.protocols],
            session_timeout_ms=req.session_timeout_ms,
            rebalance_timeout_ms=req.rebalance_timeout_ms,
            request_id=rid,
            now_ms=self.now_ms(),
            new_member_id=f"{req.client_id}-{rid}",
            client_id=req.client_id,
        )
        r: JoinResponse = await self._parked(result, rid)
        return pb.JoinGroupResponse(
            status=status(r.error),
            generation=r.generation,
            protocol_type=r.protocol_type,
            protocol=r.protocol,
            leader=r.leader,
            member_id=r.member_id,
            members=[pb.GroupMember(member_id=m, metadata=meta) for m, meta in r.members],
        )

    async def SyncGroup(self, req: pb.SyncGroupRequest, timeout: float) -> pb.SyncGroupResponse:
        if code := self._injected("SyncGroup"):
            return pb.SyncGroupResponse(status=status(code))
        rid = next(self.ids)
        self.parked[rid] = asyncio.get_running_loop().create_future()
        result = self.gc.sync_group(
            req.group_id, req.member_id, req.generation, dict(req.assignments), request_id=rid, now_ms=self.now_ms()
        )
        r: SyncResponse = await self._parked(result, rid)
        return pb.SyncGroupResponse(status=status(r.error), protocol=r.protocol, assignment=r.assignment)

    async def Heartbeat(self, req: pb.HeartbeatRequest, timeout: float) -> pb.HeartbeatResponse:
        code = (
            self._injected("Heartbeat")
            or self.gc.heartbeat(req.group_id, req.member_id, req.generation, now_ms=self.now_ms()).error
        )
        return pb.HeartbeatResponse(status=status(code))

    async def LeaveGroup(self, req: pb.LeaveGroupRequest, timeout: float) -> pb.LeaveGroupResponse:
        self._injected("LeaveGroup")
        result = self.gc.leave_group(req.group_id, req.member_id, now_ms=self.now_ms())
        self._deliver(result)
        assert result.response is not None
        return pb.LeaveGroupResponse(status=status(result.response.error))

    async def OffsetCommit(self, req: pb.OffsetCommitRequest, timeout: float) -> pb.OffsetCommitResponse:
        if code := self._injected("OffsetCommit"):
            return pb.OffsetCommitResponse(status=status(code))
        offsets = {TP(o.topic, o.partition): OffsetCommit(o.offset, o.leader_epoch, o.metadata) for o in req.offsets}
        result = self.gc.commit_offsets(
            req.group_id,
            req.member_id,
            req.generation,
            offsets,
            now_ms=self.now_ms(),
            timestamp_ms=int(time.time() * 1000),
        )
        self._deliver(result)
        assert result.response is not None
        errors = result.response.errors
        if all(code == 0 for code in errors.values()):
            self.commits.append((req.member_id, req.generation, {tp: o.offset for tp, o in offsets.items()}))
        return pb.OffsetCommitResponse(
            offsets=[
                pb.CommittedPartitionOffset(topic=tp[0], partition=tp[1], error_code=ErrorCode(code).name)
                for tp, code in errors.items()
            ]
        )

    async def OffsetFetch(self, req: pb.OffsetFetchRequest, timeout: float) -> pb.OffsetFetchResponse:
        if code := self._injected("OffsetFetch"):
            return pb.OffsetFetchResponse(status=status(code))
        r = self.gc.fetch_offsets(req.group_id, [TP(p.topic, p.partition) for p in req.partitions])
        return pb.OffsetFetchResponse(
            status=status(r.error),
            offsets=[
                pb.CommittedPartitionOffset(
                    topic=tp[0], partition=tp[1], offset=c.offset, metadata=c.metadata, leader_epoch=c.leader_epoch
                )
                for tp, c in r.offsets.items()
            ],
        )

    async def Metadata(self, req: pb.MetadataRequest, timeout: float) -> pb.MetadataResponse:
        self._injected("Metadata")
        names = list(req.topics) or sorted(self.topics)
        topics = []
        for name in names:
            if name in self.topics:
                parts = [
                    pb.PartitionMetadata(partition=p, leader_id=1, replicas=[1], isr=[1])
                    for p in range(self.topics[name])
                ]
                topics.append(pb.TopicMetadata(name=name, partitions=parts))
            else:
                topics.append(pb.TopicMetadata(name=name, error_code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION.name))
        return pb.MetadataResponse(brokers=[pb.BrokerInfo(node_id=1, host="fake", port=1)], topics=topics)

    async def ListOffsets(self, req: pb.ListOffsetsRequest, timeout: float) -> pb.ListOffsetsResponse:
        return pb.ListOffsetsResponse(
            partitions=[pb.ListOffsetsResult(topic=p.topic, partition=p.partition, offset=0) for p in req.partitions]
        )

    async def Fetch(self, req: pb.FetchRequest, timeout: float) -> pb.FetchResponse:
        await asyncio.sleep(req.max_wait_ms / 1000)
        return pb.FetchResponse(
            partitions=[pb.FetchPartitionResult(topic=p.topic, partition=p.partition) for p in req.partitions]
        )


class FakeConnection(Connection):
    """A Connection whose every broker is ``broker``."""

    broker: FakeBroker

    def stub_at(self, addr: tuple[str, int]) -> Any:
        return self.broker

    async def call_any(self, method: str, request: object, timeout: float | None = None) -> object:
        result: object = await getattr(self.broker, method)(request, timeout=timeout)
        return result


def connection(broker: FakeBroker) -> FakeConnection:
    conn = FakeConnection("fake:1", "test", request_timeout_ms=2000)
    conn.broker = broker
    return conn


class FakeAssignee:
    """The consumer's side of the member: positions per partition."""

    def __init__(self) -> None:
        self.positions: dict[TopicPartition, int] = {}
        self.started_at: dict[TopicPartition, OffsetAndMetadata | None] = {}

    def add_partitions(self, committed: Mapping[TopicPartition, OffsetAndMetadata | None]) -> None:
        for tp, oam in committed.items():
            self.started_at[tp] = oam
            self.positions[tp] = oam.offset if oam is not None else 0

    def remove_partitions(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.positions.pop(tp, None)

    def current_positions(self) -> dict[TopicPartition, int]:
        return dict(self.positions)


class Recorder:
    """A listener that logs every call, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, frozenset[TopicPartition]]] = []

    def on_partitions_revoked(self, tps: set[TopicPartition]) -> None:
        self.events.append(("revoked", frozenset(tps)))

    async def on_partitions_assigned(self, tps: set[TopicPartition]) -> None:
        self.events.append(("assigned", frozenset(tps)))

    def on_partitions_lost(self, tps: set[TopicPartition]) -> None:
        self.events.append(("lost", frozenset(tps)))


def make_member(
    broker: FakeBroker, strategy: str = "range", **config: Any
) -> tuple[GroupMember, FakeAssignee, Recorder]:
    assignee, recorder = FakeAssignee(), Recorder()
    options: dict[str, Any] = {
        "session_timeout_ms": 600,
        "heartbeat_interval_ms": 50,
        "rebalance_timeout_ms": 1500,
        "retry_backoff_ms": 20,
        "request_timeout_ms": 2000,
        "enable_auto_commit": False,
        **config,
    }
    member = GroupMember(connection(broker), "g", assignee, assignors=resolve_assignors(strategy), **options)
    member.subscribe(["t"], None, recorder)
    member.start()
    return member, assignee, recorder


async def eventually(check: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.01)


def covers(members: Iterable[GroupMember], partitions: int = 6) -> bool:
    owned = [tp for m in members for tp in m.assigned]
    return len(owned) == len(set(owned)) == partitions and all(m.rejoin_reason is None for m in members)


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(coro(), 30))


# -- the driver ---------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["range", "roundrobin", "cooperative-sticky"])
def test_three_members_split_the_topic_then_one_leaves(strategy: str) -> None:
    async def main() -> None:
        broker = FakeBroker()
        trio = [make_member(broker, strategy) for _ in range(3)]
        members = [m for m, _, _ in trio]
        await eventually(lambda: covers(members) and all(len(m.assigned) == 2 for m in members), what="2 each")
        assert len({m.generation for m in members}) == 1
        for m, assignee, _ in trio:
            assert set(assignee.positions) == m.assigned  # the consumer fetches exactly what it owns
        leaver, _, leaver_log = trio[0]
        await leaver.close(None)
        assert leaver_log.events[-1][0] == "revoked" and not leaver.assigned
        rest = members[1:]
        await eventually(lambda: covers(rest) and all(len(m.assigned) == 3 for m in rest), what="3 each")
        for m, _, log in trio[1:]:
            kinds = [kind for kind, _ in log.events]
            assert "lost" not in kinds
            if strategy == "cooperative-sticky":  # kept partitions are never revoked
                revoked = {tp for kind, tps in log.events if kind == "revoked" for tp in tps}
                assert not revoked & m.assigned
            else:  # eager: everything is revoked before every rejoin, then assigned
                assert kinds[-2:] == ["revoked", "assigned"]
        for m in rest:
            await m.close(None)

    run(main)


def test_commits_are_fenced_by_generation_and_survive_coordinator_errors() -> None:
    async def main() -> None:
        broker = FakeBroker()
        a, a_pos, _ = make_member(broker)
        await eventually(lambda: covers([a]), what="a owns all")
        tp = TP("t", 0)
        broker.inject["OffsetCommit"] = [ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS]
        finds = broker.calls.get("FindCoordinator", 0)
        await a.commit({tp: OffsetAndMetadata(42, "meta")})
        assert broker.calls["FindCoordinator"] == finds + 2  # each coordinator error: looked up again
        assert (await a.fetch_committed([tp, TP("t", 1)])) == {tp: OffsetAndMetadata(42, "meta", -1), TP("t", 1): None}
        old_generation = a.generation
        b, b_pos, _ = make_member(broker)
        await eventually(lambda: covers([a, b]) and a.generation > old_generation, what="rebalance")
        # a commit of an old generation is refused: CommitFailedError
        a.generation, current = old_generation, a.generation
        with pytest.raises(CommitFailedError):
            await a.commit({tp: OffsetAndMetadata(50)})
        a.generation = current
        owner, owner_pos = (a, a_pos) if tp in a.assigned else (b, b_pos)
        assert owner_pos.started_at[tp] == OffsetAndMetadata(42, "meta", -1)  # resumed at the committed offset
        broker.inject["OffsetFetch"] = [ErrorCode.COORDINATOR_NOT_AVAILABLE]
        assert (await owner.fetch_committed([tp]))[tp] == OffsetAndMetadata(42, "meta", -1)
        await a.close(None)
        await b.close(None)

    run(main)


def test_auto_commit_commits_consumed_offsets_before_revoking_and_on_close() -> None:
    async def main() -> None:
        broker = FakeBroker()
        a, a_pos, _ = make_member(broker, enable_auto_commit=True, auto_commit_interval_ms=100)
        await eventually(lambda: covers([a]), what="a owns all")
        for tp in a.assigned:
            a_pos.positions[tp] = 10 + tp.partition
        a.polled(a_pos.current_positions())  # records before this poll count as consumed
        await eventually(lambda: len(broker.commits) >= 1, what="auto-commit")
        assert broker.commits[-1][2] == {TP("t", p): 10 + p for p in range(6)}
        a_pos.positions[TP("t", 0)] = 99  # returned by the latest poll: not consumed yet
        b, _, _ = make_member(broker)
        await eventually(lambda: covers([a, b]), what="rebalance")
        committed = await a.fetch_committed([TP("t", 0)])
        assert committed[TP("t", 0)] == OffsetAndMetadata(10)  # the revoke committed consumed offsets only
        for tp in a.assigned:
            a_pos.positions[tp] = 500
        await a.close(a_pos.current_positions())  # close commits the current positions
        got = await b.fetch_committed(list(a_pos.started_at))
        assert all(got[tp] == OffsetAndMetadata(500) for tp in a_pos.positions)
        await b.close(None)

    run(main)


def test_revoke_waits_for_the_application_to_poll_and_commits_need_ownership() -> None:
    async def main() -> None:
        broker = FakeBroker()
        a, _, log = make_member(broker)
        await eventually(lambda: covers([a]), what="a owns all")
        a.handed_out()  # poll() returned records: the application is processing them
        b, _, _ = make_member(broker)
        await asyncio.sleep(0.4)
        assert len(a.assigned) == 6 and [kind for kind, _ in log.events] == ["assigned"]  # nothing revoked yet
        await a.commit({TP("t", 5): OffsetAndMetadata(3)})  # still the owner in the current generation
        app = asyncio.get_running_loop().create_task(_busy_application(a))  # polls, always gets records
        await eventually(lambda: covers([a, b]), what="rebalance")
        app.cancel()
        assert [kind for kind, _ in log.events] == ["assigned", "revoked", "assigned"]
        stray = next(iter(b.assigned))
        with pytest.raises(CommitFailedError, match="not assigned to this member"):
            await a.commit({stray: OffsetAndMetadata(4)})
        await a.close(None)
        await b.close(None)

    run(main)


async def _busy_application(member: GroupMember) -> None:
    """What Consumer.poll does for an application that always gets records: the revoke must still get its turn."""
    while True:
        member.polled({})
        await member.settled()
        member.handed_out()
        await asyncio.sleep(0.05)  # processing the batch


def test_heartbeat_errors_rejoin_or_lose_partitions() -> None:
    async def main() -> None:
        broker = FakeBroker()
        a, _, log = make_member(broker, strategy="cooperative-sticky")
        await eventually(lambda: covers([a]), what="a owns all")
        generation, member_id = a.generation, a.member_id
        rebalances = a.rebalances
        broker.inject["Heartbeat"] = [ErrorCode.REBALANCE_IN_PROGRESS]
        await eventually(lambda: a.rebalances > rebalances and covers([a]), what="rejoin")
        assert a.member_id == member_id and ("lost", frozenset(a.assigned)) not in log.events
        broker.inject["Heartbeat"] = [ErrorCode.UNKNOWN_MEMBER_ID]
        await eventually(lambda: a.member_id not in ("", member_id) and covers([a]), what="join as new")
        assert ("lost", frozenset(TP("t", p) for p in range(6))) in log.events
        assert a.generation > generation
        await a.close(None)

    run(main)


def test_poll_timeout_leaves_the_group_and_next_poll_rejoins() -> None:
    async def main() -> None:
        broker = FakeBroker()
        a, _, log = make_member(broker, max_poll_interval_ms=300, rebalance_timeout_ms=1000)
        b, _, _ = make_member(broker, max_poll_interval_ms=60000)
        await eventually(lambda: covers([a, b]), what="both in")
        b_poller = asyncio.get_running_loop().create_task(_keep_polling(b))
        await eventually(lambda: not a.assigned and a.member_id == "", what="a leaves")
        assert log.events[-1][0] == "lost"
        await eventually(lambda: covers([b]), what="b takes everything")
        a.polled({})
        await eventually(lambda: covers([a, b]) and bool(a.assigned), what="a rejoins")
        b_poller.cancel()
        await a.close(None)
        await b.close(None)

    run(main)


async def _keep_polling(member: GroupMember) -> None:
    while True:
        member.polled({})
        await asyncio.sleep(0.05)


def test_more_partitions_or_a_new_matching_topic_rejoin() -> None:
    async def main() -> None:
        broker = FakeBroker({"t": 2, "other": 1})
        assignee = FakeAssignee()
        a = GroupMember(
            connection(broker),
            "g",
            assignee,
            assignors=resolve_assignors("roundrobin"),
            session_timeout_ms=600,
            heartbeat_interval_ms=50,
            rebalance_timeout_ms=1000,
            metadata_max_age_ms=100,
            enable_auto_commit=False,
        )
        a.subscribe([], re.compile(r"t.*"), None)
        a.start()
        await eventually(lambda: a.assigned == {TP("t", 0), TP("t", 1)}, what="pattern matched t")
        broker.topics["t"] = 3
        await eventually(lambda: TP("t", 2) in a.assigned, what="new partition")
        broker.topics["t2"] = 1
        await eventually(lambda: TP("t2", 0) in a.assigned, what="new topic")
        assert a.matched == {"t", "t2"} and not any(tp.topic == "other" for tp in a.assigned)
        await a.close(None)

    run(main)


@pytest.mark.parametrize("strategy", ["range", "cooperative-sticky"])
def test_partitions_added_to_a_subscribed_topic_are_shared_after_the_next_refresh(strategy: str) -> None:
    async def main() -> None:
        broker = FakeBroker({"t": 2})
        pair = [make_member(broker, strategy, metadata_max_age_ms=100) for _ in range(2)]
        members = [m for m, _, _ in pair]
        await eventually(lambda: covers(members, 2) and all(len(m.assigned) == 1 for m in members), what="1 each")
        generation = members[0].generation
        broker.topics["t"] = 4
        await eventually(lambda: covers(members, 4) and all(len(m.assigned) == 2 for m in members), what="2 each")
        assert all(m.generation > generation for m in members)
        for m, assignee, _ in pair:
            assert set(assignee.positions) == m.assigned
        for m in members:
            await m.close(None)

    run(main)


def test_a_fetch_sent_for_a_replaced_partition_state_is_dropped() -> None:
    """A partition revoked and assigned again (to the same consumer) gets a new state at the committed offset;
    a Fetch still in flight for the old state must not land in it (that skipped records before the fix)."""

    async def main() -> None:
        broker = FakeBroker()
        release = asyncio.Event()

        async def slow_fetch(req: pb.FetchRequest, timeout: float) -> pb.FetchResponse:
            await release.wait()
            results = []
            for p in req.partitions:  # three records from the offset asked for
                batch = struct.pack(">q", p.fetch_offset) + build_batch([(None, b"x")] * 3)[8:]
                results.append(pb.FetchPartitionResult(topic=p.topic, partition=p.partition, records=batch))
            return pb.FetchResponse(partitions=results)

        broker.Fetch = slow_fetch  # type: ignore[method-assign]
        conn = connection(broker)
        conn.track(["t"])
        await conn.refresh()
        fetcher = Fetcher(
            conn,
            auto_offset_reset="earliest",
            fetch_min_bytes=1,
            fetch_max_wait_ms=10,
            fetch_max_bytes=1 << 20,
            max_partition_fetch_bytes=1 << 20,
            max_poll_records=10,
            retry_backoff_ms=10,
            request_timeout_ms=1000,
        )
        tp = TP("t", 0)
        old = PartitionState(EARLIEST)
        old.fetch_offset = 100
        fetcher.states[tp] = old
        loop = asyncio.get_running_loop().create_task(fetcher.run())
        await eventually(lambda: old.in_flight, what="the old state's Fetch")
        new = PartitionState(EARLIEST)
        new.fetch_offset = 5  # e.g. the committed offset
        fetcher.states[tp] = new
        fetcher.wake.set()
        await eventually(lambda: new.in_flight, what="the new state's Fetch")
        release.set()
        await eventually(lambda: len(new.buffer) >= 3, what="records")
        await asyncio.sleep(0.05)
        assert [r.offset for r in new.buffer][:3] == [5, 6, 7] and all(r.offset < 100 for r in new.buffer)
        loop.cancel()
        await fetcher.close()
        await conn.close()

    run(main)


def test_fatal_group_error_is_raised_by_poll() -> None:
    async def main() -> None:
        broker = FakeBroker()
        broker.inject["JoinGroup"] = [ErrorCode.INCONSISTENT_GROUP_PROTOCOL]
        a, _, _ = make_member(broker)
        await eventually(lambda: a.error is not None, what="error")
        with pytest.raises(ketch.errors.KetchError, match="INCONSISTENT_GROUP_PROTOCOL"):
            a.raise_error()
        await a.close(None)

    run(main)


# -- the Consumer classes against the fake broker -----------------------------------------------


@pytest.fixture
def fake_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBroker]:
    broker = FakeBroker()

    def make(*args: Any, **kwargs: Any) -> FakeConnection:
        conn = FakeConnection(*args, **kwargs)
        conn.broker = broker
        return conn

    monkeypatch.setattr(ketch.aio.consumer, "Connection", make)
    yield broker


def test_aio_consumer_in_a_group(fake_broker: FakeBroker) -> None:
    async def main() -> None:
        options: dict[str, Any] = {
            "bootstrap_servers": "fake:1",
            "group_id": "g",
            "session_timeout_ms": 600,
            "heartbeat_interval_ms": 50,
            "rebalance_timeout_ms": 1000,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
        }
        tp = TP("t", 3)
        async with ketch.aio.Consumer(**options) as setter:  # assign() + group id: a "simple" committer
            await setter.assign([tp])
            assert await setter.position(tp) == 0
            await setter.commit({tp: 7})
            assert await setter.committed(tp) == 7
        assert fake_broker.commits[-1][:2] == ("", -1)
        recorder = Recorder()
        async with ketch.aio.Consumer(partition_assignment_strategy="cooperative-sticky", **options) as consumer:
            await consumer.subscribe(["t"], listener=recorder)
            deadline = time.monotonic() + 5
            while len(consumer.assignment()) < 6:
                assert time.monotonic() < deadline
                await consumer.poll(timeout_ms=50)
            assert consumer.subscription() == {"t"}
            assert await consumer.position(tp) == 7  # from the committed offset
            assert await consumer.position(TP("t", 0)) == 0  # none committed: earliest
            consumer.pause(tp)
            assert consumer.paused() == {tp}
            consumer.resume(tp)
            assert consumer.paused() == set()
            done: list[Any] = []
            await consumer.commit_async({tp: 9}, callback=lambda offsets, exc: done.append((offsets, exc)))
            assert done == [({tp: OffsetAndMetadata(9)}, None)]
            assert await consumer.committed(tp, metadata=True) == OffsetAndMetadata(9, "", -1)
            await consumer.unsubscribe()  # revokes everything and leaves the group
            assert consumer.assignment() == set() and recorder.events[-1][0] == "revoked"
            await consumer.subscribe(pattern=r"t", listener=recorder)  # and back, by pattern
            deadline = time.monotonic() + 5
            while len(consumer.assignment()) < 6:
                assert time.monotonic() < deadline
                await consumer.poll(timeout_ms=50)
            assert consumer.subscription() == {"t"} and await consumer.position(tp) == 9
        assert recorder.events[0] == ("assigned", frozenset(TP("t", p) for p in range(6)))
        assert recorder.events[-1] == ("revoked", frozenset(TP("t", p) for p in range(6)))
        with pytest.raises(ketch.errors.KetchError, match="INVALID_GROUP_ID"):
            await ketch.aio.Consumer(bootstrap_servers="fake:1").commit({tp: 1})

    asyncio.run(main())


def test_sync_consumer_listener_may_call_blocking_methods(fake_broker: FakeBroker) -> None:
    calls: list[str] = []
    consumer = ketch.Consumer(
        bootstrap_servers="fake:1",
        group_id="g",
        session_timeout_ms=600,
        heartbeat_interval_ms=50,
        rebalance_timeout_ms=1000,
        enable_auto_commit=False,
    )

    class Listener:
        def on_partitions_assigned(self, tps: set[TopicPartition]) -> None:
            calls.append(f"assigned {len(tps)} on {threading.current_thread().name}")

        def on_partitions_revoked(self, tps: set[TopicPartition]) -> None:
            consumer.commit({tp: 3 for tp in tps})  # a blocking call from the listener works
            calls.append(f"revoked {len(tps)}")

    try:
        consumer.subscribe(topics=["t"], listener=Listener())
        deadline = time.monotonic() + 5
        while len(consumer.assignment()) < 6:
            assert time.monotonic() < deadline
            consumer.poll(timeout_ms=50)
        consumer.pause(TP("t", 1))
        assert consumer.paused() == {TP("t", 1)}
        future = consumer.commit_async({TP("t", 1): 2})
        future.result(5)
        assert consumer.committed(TP("t", 1)) == 2
    finally:
        consumer.close()
    assert calls[0].startswith("assigned 6") and "ketch-consumer" not in calls[0]
    assert calls[-1] == "revoked 6"
    assert fake_broker.commits[-1][2] == {TP("t", p): 3 for p in range(6)}
