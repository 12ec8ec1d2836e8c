"""The group coordinator in a real node, over real gRPC: the broker side of consumer groups.

One node (tests/harness.py) with a short initial rebalance delay. Raw Ketch
stubs drive the classic group protocol — FindCoordinator (which creates
``__consumer_offsets``), JoinGroup, SyncGroup, Heartbeat, OffsetCommit,
OffsetFetch, DescribeGroups, ListGroups, LeaveGroup, DeleteGroups,
ResetGroupOffsets — and the node is restarted to show committed offsets and
group state come back from the offsets log. Bad input is refused with a typed
error and changes nothing. Deleting an offset (a reset to none) or a group
writes tombstones: its key with a null value, which compaction understands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from coordinator.groups import offsets_partition
from coordinator.groups.records import GroupMetadataKey, OffsetCommitKey, decode_record
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.assignors.base import MemberSubscription, TopicPartition
from ketch.assignors.protocol import encode_assignment, encode_subscription
from ketch.records import decode_batches
from node.process import NodeProcess
from tests.harness import start_node, wait_broker_alive

GROUP = "g1"
ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    n = start_node(tmp_path, extra_args=ARGS)
    try:
        yield n
    finally:
        n.close()


def code(status: pb.GroupStatus) -> str:
    return pb.ErrorCode.Name(status.error_code)


async def find(stub: ketch_pb2_grpc.KetchStub) -> pb.FindCoordinatorResponse:
    for _ in range(100):  # the offsets topic is made on first use; its leader needs a moment
        found = await stub.FindCoordinator(pb.FindCoordinatorRequest(group_id=GROUP))
        if code(found.status) == "NONE":
            return found
        assert code(found.status) == "COORDINATOR_NOT_AVAILABLE", found
        await asyncio.sleep(0.1)
    raise AssertionError("no coordinator")


async def join(stub: ketch_pb2_grpc.KetchStub, member_id: str = "") -> pb.JoinGroupResponse:
    subscription = encode_subscription(MemberSubscription(frozenset({"t"})))
    for _ in range(100):
        joined = await stub.JoinGroup(
            pb.JoinGroupRequest(
                group_id=GROUP,
                member_id=member_id,
                protocol_type="consumer",
                protocols=[pb.GroupProtocol(name="range", metadata=subscription)],
                session_timeout_ms=3000,
                rebalance_timeout_ms=3000,
                client_id="test",
            )
        )
        if code(joined.status) != "COORDINATOR_LOAD_IN_PROGRESS":
            return joined
        await asyncio.sleep(0.1)
    raise AssertionError("the coordinator never loaded")


def test_a_group_lives_and_its_offsets_survive_a_restart(node: NodeProcess) -> None:
    async def first_life() -> None:
        async with grpc.aio.insecure_channel(node.bootstrap) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            found = await find(stub)
            assert found.node_id == 1 and found.port == node.port
            joined = await join(stub)
            assert code(joined.status) == "NONE", joined
            member, generation = joined.member_id, joined.generation
            assert member.startswith("test-") and joined.leader == member and generation >= 1
            assert [m.member_id for m in joined.members] == [member]
            assignment = encode_assignment([TopicPartition("t", 0), TopicPartition("t", 1)])
            synced = await stub.SyncGroup(
                pb.SyncGroupRequest(
                    group_id=GROUP, member_id=member, generation=generation, assignments={member: assignment}
                )
            )
            assert code(synced.status) == "NONE" and synced.assignment == assignment
            beat = await stub.Heartbeat(pb.HeartbeatRequest(group_id=GROUP, member_id=member, generation=generation))
            assert code(beat.status) == "NONE"
            offsets = [pb.CommittedPartitionOffset(topic="t", partition=p, offset=10 + p) for p in (0, 1)]
            commit = pb.OffsetCommitRequest(group_id=GROUP, member_id=member, generation=generation, offsets=offsets)
            committed = await stub.OffsetCommit(commit)
            assert code(committed.status) == "NONE"
            assert [pb.ErrorCode.Name(o.error_code) for o in committed.offsets] == ["NONE", "NONE"]
            stale = pb.OffsetCommitRequest(group_id=GROUP, member_id=member, generation=generation + 7)
            stale.offsets.add(topic="t", partition=0, offset=99)
            refused = await stub.OffsetCommit(stale)
            assert pb.ErrorCode.Name(refused.offsets[0].error_code) == "ILLEGAL_GENERATION"
            bad = pb.OffsetCommitRequest(group_id=GROUP, member_id=member, generation=generation)
            bad.offsets.add(topic="t", partition=0, offset=-5)
            assert code((await stub.OffsetCommit(bad)).status) == "INVALID_REQUEST"
            described = (await stub.DescribeGroups(pb.DescribeGroupsRequest(group_ids=[GROUP]))).groups[0]
            assert described.state == "Stable" and described.protocol == "range"
            assert [(a.topic, a.partition) for a in described.members[0].assignment] == [("t", 0), ("t", 1)]
            listed = await stub.ListGroups(pb.ListGroupsRequest())
            assert [(g.group_id, g.state) for g in listed.groups] == [(GROUP, "Stable")]

    asyncio.run(first_life())
    assert node.stop() == 0
    node.start()
    wait_broker_alive(node)

    async def second_life() -> None:
        async with grpc.aio.insecure_channel(node.bootstrap) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            await find(stub)
            for _ in range(100):
                fetched = await stub.OffsetFetch(pb.OffsetFetchRequest(group_id=GROUP))
                if code(fetched.status) != "COORDINATOR_LOAD_IN_PROGRESS":
                    break
                await asyncio.sleep(0.1)
            assert code(fetched.status) == "NONE"
            assert [(o.topic, o.partition, o.offset) for o in fetched.offsets] == [("t", 0, 10), ("t", 1, 11)]
            # The member came back from the log too; its session ran out and it left, so the group empties.
            await asyncio.sleep(3.5)
            described = (await stub.DescribeGroups(pb.DescribeGroupsRequest(group_ids=[GROUP]))).groups[0]
            assert described.state == "Empty" and not described.members
            reset = pb.ResetGroupOffsetsRequest(group_id=GROUP)
            reset.offsets.add(topic="t", partition=0, offset=3)
            reset.offsets.add(topic="t", partition=1, offset=-1)
            assert code((await stub.ResetGroupOffsets(reset)).status) == "NONE"
            fetched = await stub.OffsetFetch(pb.OffsetFetchRequest(group_id=GROUP))
            assert [(o.topic, o.partition, o.offset) for o in fetched.offsets] == [("t", 0, 3)]
            deleted = await stub.DeleteGroups(pb.DeleteGroupsRequest(group_ids=[GROUP]))
            assert pb.ErrorCode.Name(deleted.results[0].error_code) == "NONE"
            assert not (await stub.ListGroups(pb.ListGroupsRequest())).groups
            # The reset's deleted offset and the deletion are tombstones: a key, no value.
            index = offsets_partition(GROUP, 8)
            read = pb.FetchRequest(
                max_bytes=1 << 24,
                partitions=[pb.FetchPartition(topic="__consumer_offsets", partition=index, fetch_offset=0)],
            )
            data = (await stub.Fetch(read)).partitions[0].records
            records = decode_batches("__consumer_offsets", index, data).records
            assert records and all(r.key is not None for r in records)
            tombstones = [decode_record(r.key, r.value).key for r in records if r.key and r.value is None]
            assert tombstones == [
                OffsetCommitKey(GROUP, "t", 1),  # the reset to none
                OffsetCommitKey(GROUP, "t", 0),  # the group's deletion: its offsets, then the group
                GroupMetadataKey(GROUP),
            ]

    asyncio.run(second_life())


def test_a_busy_group_refuses_reset_and_delete(node: NodeProcess) -> None:
    async def scenario() -> None:
        async with grpc.aio.insecure_channel(node.bootstrap) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            await find(stub)
            joined = await join(stub)
            assert code(joined.status) == "NONE"
            reset = pb.ResetGroupOffsetsRequest(group_id=GROUP)
            reset.offsets.add(topic="t", partition=0, offset=0)
            refused = await stub.ResetGroupOffsets(reset)
            assert code(refused.status) == "NON_EMPTY_GROUP" and "active members" in refused.status.error_message
            deleted = await stub.DeleteGroups(pb.DeleteGroupsRequest(group_ids=[GROUP]))
            assert pb.ErrorCode.Name(deleted.results[0].error_code) == "NON_EMPTY_GROUP"
            left = await stub.LeaveGroup(pb.LeaveGroupRequest(group_id=GROUP, member_id=joined.member_id))
            assert code(left.status) == "NONE"
            assert code((await stub.ResetGroupOffsets(reset)).status) == "NONE"
            unknown = await stub.Heartbeat(pb.HeartbeatRequest(group_id=GROUP, member_id="nobody", generation=1))
            assert code(unknown.status) == "UNKNOWN_MEMBER_ID"
            empty = await stub.FindCoordinator(pb.FindCoordinatorRequest(group_id=""))
            assert code(empty.status) == "INVALID_GROUP_ID"

    asyncio.run(scenario())
