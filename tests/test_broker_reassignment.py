"""Brokers follow a change of a partition's replica SET (a reassignment), on real RocksDB stores.

Four ``Broker`` replica managers (node/broker.py), each on its own store,
apply the images the pure controller produces, and replicate by calling the
same ``serve_follower_fetch`` / ``apply_fetch_answer`` the Fetch handler and
the replica fetcher call; the leader's ISR proposals go to the controller as
AlterPartition. A partition on [1, 2, 3] moves to [2, 3, 4]:

- broker 4 opens an empty follower replica when the move starts and copies
  the leader's log from its start (also when retention removed the front);
- the leader learns the new replica set within its leader epoch, counts 4's
  fetches, and proposes it for the ISR once it has caught up;
- the completion moves leadership to 2, and broker 1 stops its replica and
  deletes its data; no record is lost and the new leader serves them all;
- an acks=all produce still waiting on broker 1 when it is removed fails with
  NOT_LEADER_OR_FOLLOWER (the producer retries at the new leader).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.metadata import MetadataImage, TopicIdPartition
from ketch.errors import ErrorCode
from node.broker import _PID_PREFIX, Broker
from node.config import NodeConfig
from node.lifecycle import BrokerEpoch
from replication.acks import acks_all_outcome
from replication.follower import FetchAnswer
from replication.partition import Partition
from replication.rocks_store import NodeStore
from tests.batches import make_batch, values
from tests.test_metadata_support import Cluster

MAX_BYTES = 1 << 20


class Node:
    def __init__(self, path: Path, broker_id: int, epoch: int) -> None:
        self.store = NodeStore.open(str(path / f"broker-{broker_id}"))
        holder = BrokerEpoch()
        holder.value = epoch
        self.epoch = epoch
        self.broker = Broker(
            NodeConfig(node_id=broker_id, reassignment_throttle_bytes=0), self.store, holder, lambda t, i: None
        )
        self.image = MetadataImage()

    def follow(self, image: MetadataImage) -> None:
        old, self.image = self.image, image
        self.broker.on_metadata(old, image)

    def replica(self, tp: TopicIdPartition) -> Partition | None:
        return self.broker.replicas().get(tp)

    def stored_replicas(self) -> int:
        return len(self.store.meta_items(_PID_PREFIX))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Cluster, dict[int, Node], TopicIdPartition]]:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    tid = c.create("t", 1, 3)
    c.add_brokers([4])
    nodes = {b: Node(tmp_path, b, c.epoch(b)) for b in (1, 2, 3, 4)}
    try:
        yield c, nodes, TopicIdPartition(tid, 0)
    finally:
        for n in nodes.values():
            n.store.close()


def publish(c: Cluster, nodes: dict[int, Node]) -> None:
    for n in nodes.values():
        n.follow(c.image)


def replicate(c: Cluster, nodes: dict[int, Node], tp: TopicIdPartition, now_ms: int) -> None:
    """Fetch rounds until no follower moves; then the leader's ISR proposal, if any, to the controller."""
    p = c.image.partition(*tp)
    assert p is not None
    leader = nodes[p.leader].replica(tp)
    assert leader is not None and leader.is_leader
    for _ in range(50):
        moved = False
        for b in p.replicas:
            part = nodes[b].replica(tp)
            if b == p.leader or part is None:
                continue
            offset = part.log.log_end_offset
            fetch = leader.serve_follower_fetch(b, nodes[b].epoch, offset, part.log.latest_epoch, MAX_BYTES, now_ms)
            answer = FetchAnswer(
                leader_epoch=part.leader_epoch,
                fetch_offset=offset,
                error=int(fetch.error.code) if fetch.error else 0,
                high_watermark=fetch.read.high_watermark,
                log_start_offset=fetch.read.log_start_offset,
                records=fetch.read.records,
                diverging=fetch.read.diverging,
            )
            moved = part.apply_fetch_answer(answer).changed or moved
        if not moved:
            break
    assert leader.leader is not None
    proposal = leader.leader.propose_isr_change(now_ms)
    if proposal is not None:
        c.run(
            c.ctl.alter_partition(
                p.leader,
                c.epoch(p.leader),
                tp.topic_id,
                tp.partition,
                leader_epoch=p.leader_epoch,
                partition_epoch=proposal.partition_epoch,
                new_isr=list(proposal.new_isr),
            )
        )
        publish(c, nodes)


def produce(part: Partition, tag: str, count: int = 5) -> int:
    result = part.append(
        make_batch(0, count, tag=tag), max_message_bytes=MAX_BYTES, acks=-1, min_insync_replicas=1, sync=False
    )
    return result.last_offset


def test_a_partition_moves_from_1_2_3_to_2_3_4_without_losing_a_record(
    world: tuple[Cluster, dict[int, Node], TopicIdPartition],
) -> None:
    c, nodes, tp = world
    publish(c, nodes)
    leader = nodes[1].replica(tp)
    assert leader is not None and leader.is_leader and nodes[4].replica(tp) is None
    for i in range(4):
        produce(leader, f"before-{i}")
    replicate(c, nodes, tp, now_ms=1)
    epoch_before = leader.leader_epoch

    response = c.run(c.ctl.alter_partition_reassignments([("t", 0, [2, 3, 4])]))
    assert response.results[0].error == ErrorCode.NONE
    publish(c, nodes)
    follower = nodes[4].replica(tp)
    assert follower is not None and not follower.is_leader and follower.leader_id == 1
    assert follower.log.log_end_offset == 0  # a new, empty replica
    assert leader.leader is not None and leader.leader.replicas == (2, 3, 4, 1) and 4 in leader.leader.followers
    assert leader.leader_epoch == epoch_before  # same epoch: nothing in flight is failed

    last = produce(leader, "during")
    replicate(c, nodes, tp, now_ms=2)  # 4 catches up, joins the ISR, the move completes
    p = c.image.partition(*tp)
    assert p is not None and p.replicas == (2, 3, 4) and not p.reassigning and p.leader == 2
    assert nodes[1].replica(tp) is None and nodes[1].stored_replicas() == 0  # stopped, data deleted
    new_leader = nodes[2].replica(tp)
    assert new_leader is not None and new_leader.is_leader and new_leader.leader is not None
    assert new_leader.leader.replicas == (2, 3, 4)
    replicate(c, nodes, tp, now_ms=3)
    assert new_leader.high_watermark == last + 1
    got = [v for _, v in values(new_leader.log.read(0, 1 << 24))]
    assert got == [
        f"{tag}:{i}".encode() for tag in ["before-0", "before-1", "before-2", "before-3", "during"] for i in range(5)
    ]
    moved = nodes[4].replica(tp)
    assert moved is not None and values(moved.log.read(0, 1 << 24)) == values(new_leader.log.read(0, 1 << 24))


def test_a_new_replica_starts_at_the_leaders_log_start(
    world: tuple[Cluster, dict[int, Node], TopicIdPartition],
) -> None:
    c, nodes, tp = world
    publish(c, nodes)
    leader = nodes[1].replica(tp)
    assert leader is not None
    for i in range(4):
        produce(leader, f"b{i}")
    replicate(c, nodes, tp, now_ms=1)
    leader.log.delete_before(10)  # retention removed the front
    c.run(c.ctl.alter_partition_reassignments([("t", 0, [1, 2, 4])]))
    publish(c, nodes)
    replicate(c, nodes, tp, now_ms=2)
    replicate(c, nodes, tp, now_ms=3)
    p = c.image.partition(*tp)
    assert p is not None and p.replicas == (1, 2, 4) and p.leader == 1
    four = nodes[4].replica(tp)
    assert four is not None and four.log.log_start_offset == 10 and four.log.log_end_offset == 20
    assert nodes[3].replica(tp) is None and nodes[3].stored_replicas() == 0


def test_an_acks_all_produce_waiting_on_a_removed_leader_fails_over(
    world: tuple[Cluster, dict[int, Node], TopicIdPartition],
) -> None:
    c, nodes, tp = world
    publish(c, nodes)
    leader = nodes[1].replica(tp)
    assert leader is not None
    replicate(c, nodes, tp, now_ms=1)
    c.run(c.ctl.alter_partition_reassignments([("t", 0, [2, 3, 4])]))
    publish(c, nodes)
    replicate(c, nodes, tp, now_ms=2)  # 4 (empty, like the leader) joins: the move completes
    assert nodes[1].replica(tp) is None
    outcome = acks_all_outcome(leader, 0, 0, 1, timed_out=False, timeout_ms=1000)
    assert outcome is not None and outcome.error == ErrorCode.NOT_LEADER_OR_FOLLOWER
