"""Admin's consumer-group methods: against fake brokers for the retry rules, against a real node for the rest.

Fakes (in-process grpc.aio servers with a scripted servicer) prove the rules
that a healthy node never exercises: coordinator errors and transport
failures are retried with a fresh FindCoordinator, the retrying is bounded by
``request_timeout_ms``, and ``list_consumer_groups`` asks every broker and
merges. The real node (tests/harness.py, one process in a temp dir, rebalance
delay 0) proves the whole path: a group with a live member (driven by raw
JoinGroup/SyncGroup calls, so the test does not depend on the Consumer) is
listed and described with its member, assignment, committed offsets, log end
offsets and lag; altering offsets and deleting are refused with
NON_EMPTY_GROUP while it has members and work once it is empty.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ketch import Admin, NewTopic, Producer
from ketch.aio import Admin as AioAdmin
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.assignors.base import MemberSubscription
from ketch.assignors.base import TopicPartition as AssignedPartition
from ketch.assignors.protocol import encode_assignment, encode_subscription
from ketch.errors import ErrorCode, KetchError
from ketch.records import TopicPartition
from node.cluster import LocalCluster
from node.process import NodeProcess
from tests.harness import start_node

ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]


# -- fakes ------------------------------------------------------------------------------------


class FakeBroker(ketch_pb2_grpc.KetchServicer):
    """Answers from scripts: ``find`` and ``fetch`` are lists of error codes, one per call (then NONE)."""

    def __init__(self, node_id: int, groups: list[str] | None = None) -> None:
        self.node_id = node_id
        self.port = 0
        self.brokers: list[FakeBroker] = [self]
        self.groups = groups or []
        self.find: list[ErrorCode] = []
        self.fetch: list[int] = []
        self.loading: list[list[str]] = []  # ListGroups: COORDINATOR_LOAD_IN_PROGRESS with these groups first
        self.calls: list[str] = []

    async def Metadata(self, request: pb.MetadataRequest, context: Any) -> pb.MetadataResponse:
        self.calls.append("Metadata")
        response = pb.MetadataResponse(cluster_id="fake", controller_id=1)
        for b in self.brokers:
            response.brokers.add(node_id=b.node_id, host="127.0.0.1", port=b.port)
        return response

    async def FindCoordinator(self, request: pb.FindCoordinatorRequest, context: Any) -> pb.FindCoordinatorResponse:
        self.calls.append("FindCoordinator")
        code = self.find.pop(0) if self.find else ErrorCode.NONE
        status = pb.GroupStatus(error_code=code.name, error_message="scripted" if code else "")
        return pb.FindCoordinatorResponse(status=status, node_id=self.node_id, host="127.0.0.1", port=self.port)

    async def OffsetFetch(self, request: pb.OffsetFetchRequest, context: Any) -> pb.OffsetFetchResponse:
        self.calls.append("OffsetFetch")
        code = self.fetch.pop(0) if self.fetch else ErrorCode.NONE
        if code == -99:  # a transport failure
            await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted outage")
        response = pb.OffsetFetchResponse(status=pb.GroupStatus(error_code=ErrorCode(code).name))
        if not code:
            response.offsets.add(topic="t", partition=0, offset=7)
            response.offsets.add(topic="t", partition=1, offset=-1)  # nothing committed: left out
        return response

    async def ListGroups(self, request: pb.ListGroupsRequest, context: Any) -> pb.ListGroupsResponse:
        self.calls.append("ListGroups")
        response = pb.ListGroupsResponse()
        groups = self.groups
        if self.loading:
            groups = self.loading.pop(0)
            response.status.CopyFrom(pb.GroupStatus(error_code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS.name))
        for g in groups:
            response.groups.add(group_id=g, protocol_type="consumer", state="Stable")
        return response

    async def ResetGroupOffsets(
        self, request: pb.ResetGroupOffsetsRequest, context: Any
    ) -> pb.ResetGroupOffsetsResponse:
        self.calls.append("ResetGroupOffsets")
        return pb.ResetGroupOffsetsResponse(status=pb.GroupStatus(error_code="NON_EMPTY_GROUP"))


async def serve(*brokers: FakeBroker) -> list[grpc.aio.Server]:
    servers = []
    for b in brokers:
        server = grpc.aio.server()
        ketch_pb2_grpc.add_KetchServicer_to_server(b, server)
        b.port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
    for b in brokers:
        b.brokers = list(brokers)
    return servers


def test_coordinator_errors_and_outages_are_retried_with_a_fresh_lookup() -> None:
    async def scenario() -> None:
        broker = FakeBroker(1)
        broker.find = [ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS]
        broker.fetch = [ErrorCode.NOT_COORDINATOR, -99, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS]
        (server,) = await serve(broker)
        try:
            async with AioAdmin(f"127.0.0.1:{broker.port}", request_timeout_ms=10_000) as admin:
                offsets = await admin.list_consumer_group_offsets("g")
                assert offsets == {TopicPartition("t", 0): 7}
                # Two failed lookups, then one lookup before each of the four OffsetFetch calls.
                assert broker.calls == ["FindCoordinator"] * 3 + ["OffsetFetch", "FindCoordinator"] * 3 + [
                    "OffsetFetch"
                ]
                broker.calls.clear()
                await admin.list_consumer_group_offsets("g")  # the coordinator is remembered
                assert broker.calls == ["OffsetFetch"]
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_retrying_is_bounded_by_the_request_timeout() -> None:
    async def scenario() -> None:
        broker = FakeBroker(1)
        broker.find = [ErrorCode.COORDINATOR_LOAD_IN_PROGRESS] * 1000
        (server,) = await serve(broker)
        try:
            async with AioAdmin(f"127.0.0.1:{broker.port}", request_timeout_ms=800) as admin:
                started = time.monotonic()
                with pytest.raises(KetchError) as caught:
                    await admin.list_consumer_group_offsets("g")
                assert time.monotonic() - started < 5
                assert caught.value.code == ErrorCode.COORDINATOR_LOAD_IN_PROGRESS
                assert "'g'" in str(caught.value)
                assert 2 <= broker.calls.count("FindCoordinator") <= 8  # backoff 0.1, 0.2, 0.4 s ...
                with pytest.raises(KetchError) as refused:
                    broker.find.clear()
                    await admin.alter_consumer_group_offsets("g", {TopicPartition("t", 0): 1})
                assert refused.value.code == ErrorCode.NON_EMPTY_GROUP
                assert str(refused.value) == "NON_EMPTY_GROUP: group 'g' has active members; stop its consumers first"
                with pytest.raises(KetchError) as empty:
                    await admin.list_consumer_group_offsets("")
                assert empty.value.code == ErrorCode.INVALID_GROUP_ID
        finally:
            await server.stop(None)

    asyncio.run(scenario())


def test_list_asks_every_broker_and_merges() -> None:
    async def scenario() -> None:
        one, two = FakeBroker(1, ["b", "a"]), FakeBroker(2, ["c", "a"])
        servers = await serve(one, two)
        try:
            async with AioAdmin(f"127.0.0.1:{one.port}") as admin:
                listed = await admin.list_consumer_groups()
            assert [tuple(g) for g in listed] == [(g, "Stable", "consumer") for g in ("a", "b", "c")]
            assert one.calls.count("ListGroups") == 1 and two.calls.count("ListGroups") == 1
        finally:
            for s in servers:
                await s.stop(None)

    asyncio.run(scenario())


def test_list_retries_a_broker_still_loading_its_offsets_partitions() -> None:
    """A broker that just took over an offsets partition answers COORDINATOR_LOAD_IN_PROGRESS with
    the groups loaded so far; the listing asks it again rather than returning a partial list."""

    async def scenario() -> None:
        one, two = FakeBroker(1, ["a"]), FakeBroker(2, ["b", "c"])
        two.loading = [["b"], ["b"]]  # c's partition loads during the first two calls
        servers = await serve(one, two)
        try:
            async with AioAdmin(f"127.0.0.1:{one.port}", request_timeout_ms=10_000) as admin:
                listed = await admin.list_consumer_groups()
            assert [g.group_id for g in listed] == ["a", "b", "c"]
            assert one.calls.count("ListGroups") == 1 and two.calls.count("ListGroups") == 3
        finally:
            for s in servers:
                await s.stop(None)

    asyncio.run(scenario())


# -- a real node ------------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    n = start_node(tmp_path, extra_args=ARGS)
    try:
        yield n
    finally:
        n.close()


def join_and_sync(stub: ketch_pb2_grpc.KetchStub, group: str, tps: list[TopicPartition]) -> pb.JoinGroupResponse:
    """One member that owns ``tps``, through the raw group protocol (session 60 s: no heartbeats needed)."""
    subscription = encode_subscription(MemberSubscription(frozenset(tp.topic for tp in tps)))
    for _ in range(100):
        joined = stub.JoinGroup(
            pb.JoinGroupRequest(
                group_id=group,
                protocol_type="consumer",
                protocols=[pb.GroupProtocol(name="range", metadata=subscription)],
                session_timeout_ms=60_000,
                rebalance_timeout_ms=5_000,
                client_id="raw-client",
            ),
            timeout=30,
        )
        if joined.status.error_code != ErrorCode.COORDINATOR_LOAD_IN_PROGRESS:
            break
        time.sleep(0.1)
    assert joined.status.error_code == ErrorCode.NONE, joined
    synced = stub.SyncGroup(
        pb.SyncGroupRequest(
            group_id=group,
            member_id=joined.member_id,
            generation=joined.generation,
            assignments={joined.member_id: encode_assignment(AssignedPartition(*tp) for tp in tps)},
        ),
        timeout=30,
    )
    assert synced.status.error_code == ErrorCode.NONE, synced
    return joined


def test_groups_through_the_admin_against_a_real_node(node: NodeProcess) -> None:
    t0, t1 = TopicPartition("orders", 0), TopicPartition("orders", 1)
    with Admin(node.bootstrap) as admin:
        admin.create_topics([NewTopic("orders", num_partitions=2, replication_factor=1)])
        with Producer(node.bootstrap, acks=1) as producer:
            for i in range(5):
                producer.send("orders", b"x%d" % i, partition=0)
            for i in range(3):
                producer.send("orders", b"y%d" % i, partition=1)
            producer.flush()
        assert admin.list_offsets({t0: "earliest", t1: "latest"}) == {t0: 0, t1: 3}
        assert admin.list_offsets({t0: 0}) == {t0: 0}
        assert admin.list_offsets({t0: int(time.time() * 1000) + 3_600_000}) == {t0: -1}  # nothing that late

        # An unknown group accepts offsets (kafka-consumer-groups --reset-offsets on a new group).
        assert admin.list_consumer_groups() == []
        admin.alter_consumer_group_offsets("g", {t0: 2})
        assert admin.list_consumer_group_offsets("g") == {t0: 2}

        with grpc.insecure_channel(node.bootstrap) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            joined = join_and_sync(stub, "g", [t0, t1])
            member = joined.member_id
            assert admin.list_consumer_groups() == [("g", "Stable", "consumer")]
            (d,) = admin.describe_consumer_groups(["g"])
            assert (d.group_id, d.state, d.protocol_type, d.protocol) == ("g", "Stable", "consumer", "range")
            assert d.generation == joined.generation and d.leader == member
            assert [(m.member_id, m.client_id, m.assignment) for m in d.members] == [(member, "raw-client", [t0, t1])]
            assert d.members[0].host  # the member's peer address, as the coordinator saw it
            assert [(p.topic, p.partition, p.committed_offset, p.log_end_offset, p.lag) for p in d.offsets] == [
                ("orders", 0, 2, 5, 3),
                ("orders", 1, None, 3, None),
            ]
            assert all(p.member_id == member and p.client_id == "raw-client" for p in d.offsets)
            assert d.total_lag == 3

            # A group with members refuses both changes, with an error that says what to do.
            with pytest.raises(KetchError) as refused:
                admin.alter_consumer_group_offsets("g", {t0: 0})
            assert refused.value.code == ErrorCode.NON_EMPTY_GROUP
            assert "stop its consumers" in str(refused.value) and "'g'" in str(refused.value)
            with pytest.raises(KetchError) as busy:
                admin.delete_consumer_groups(["g"])
            assert busy.value.code == ErrorCode.NON_EMPTY_GROUP
            assert admin.list_consumer_group_offsets("g") == {t0: 2}

            left = stub.LeaveGroup(pb.LeaveGroupRequest(group_id="g", member_id=member), timeout=10)
            assert left.status.error_code == ErrorCode.NONE

        (d,) = admin.describe_consumer_groups(["g"])
        assert d.state == "Empty" and d.members == []
        admin.alter_consumer_group_offsets("g", {t0: 5, t1: 1})
        (d,) = admin.describe_consumer_groups("g")
        assert [(p.partition, p.committed_offset, p.log_end_offset, p.lag, p.member_id) for p in d.offsets] == [
            (0, 5, 5, 0, None),
            (1, 1, 3, 2, None),
        ]
        assert d.total_lag == 2

        admin.delete_consumer_groups(["g"])
        assert admin.list_consumer_groups() == []
        (gone,) = admin.describe_consumer_groups(["g"])
        assert gone.state == "Dead" and gone.members == [] and gone.offsets == []
        with pytest.raises(KetchError) as missing:
            admin.delete_consumer_groups(["g"])
        assert missing.value.code == ErrorCode.GROUP_ID_NOT_FOUND and "'g'" in str(missing.value)


def test_three_nodes_groups_spread_over_coordinators_and_survive_one_stopping(tmp_path: Path) -> None:
    """Groups live on different coordinators; list merges all brokers; a stopped coordinator is found anew."""
    cluster = LocalCluster(
        tmp_path / "cluster",
        3,
        extra_args=[*ARGS, "--default-replication-factor=3", "--min-insync-replicas=2"],
    )
    try:
        cluster.start()
        cluster.wait_ready(60)
        groups = [f"g{i}" for i in range(8)]
        tp = TopicPartition("t", 0)
        with Admin(cluster.bootstrap) as admin:
            admin.create_topics([NewTopic("t", num_partitions=1)])
            for g in groups:
                admin.alter_consumer_group_offsets(g, {tp: 0})
            coordinators = {}
            with grpc.insecure_channel(cluster.nodes[1].bootstrap) as channel:
                stub = ketch_pb2_grpc.KetchStub(channel)
                for g in groups:
                    coordinators[g] = stub.FindCoordinator(pb.FindCoordinatorRequest(group_id=g), timeout=10).node_id
            assert len(set(coordinators.values())) >= 2, coordinators  # 8 offsets partitions over 3 leaders
            assert [g.group_id for g in admin.list_consumer_groups()] == groups
            assert [d.state for d in admin.describe_consumer_groups(groups)] == ["Empty"] * 8

            victim = coordinators["g0"]
            cluster.nodes[victim].stop()  # SIGTERM: controlled shutdown moves its leaderships away
            started = time.monotonic()
            assert admin.list_consumer_group_offsets("g0") == {tp: 0}  # retried at the new coordinator
            admin.alter_consumer_group_offsets("g0", {tp: 0})
            elapsed = time.monotonic() - started
            survivors = [n for n in cluster.nodes if n != victim]
        with Admin(",".join(cluster.nodes[n].bootstrap for n in survivors)) as admin:
            # each group's coordinator found first (describe retries a coordinator that is still
            # taking over): a broker still loading a partition answers COORDINATOR_LOAD_IN_PROGRESS
            # and the listing retries it, but a new leader that has not yet heard of its leadership
            # lists without that partition's groups (as Kafka's broker does)
            assert [d.state for d in admin.describe_consumer_groups(groups)] == ["Empty"] * 8
            assert [g.group_id for g in admin.list_consumer_groups()] == groups
        with grpc.insecure_channel(cluster.nodes[survivors[0]].bootstrap) as channel:
            found = ketch_pb2_grpc.KetchStub(channel).FindCoordinator(
                pb.FindCoordinatorRequest(group_id="g0"), timeout=10
            )
            assert found.node_id in survivors  # g0 really moved: the admin found its new coordinator
        assert elapsed < 30
    finally:
        cluster.close()
