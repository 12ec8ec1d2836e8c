"""Partition reassignment (KIP-455) in the controller: start, replace, cancel, complete, fail over.

The rules are coordinator/metadata/reassignment.py's docstring; each test names the one it checks.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.metadata import (
    NO_LEADER,
    Controller,
    MetadataDelta,
    PartitionRegistration,
    TopicIdPartition,
    decode_snapshot,
    encode_snapshot,
)
from coordinator.metadata import records as rec
from coordinator.metadata.reassignment import ReassignmentsResponse, completion
from ketch.errors import ErrorCode
from tests.test_metadata_support import Cluster, check_invariants, check_snapshot


def cluster(brokers: int = 4, configs: dict[str, str] | None = None, min_isr: int = 1) -> tuple[Cluster, str]:
    """Brokers 1..``brokers``; topic "t" with one partition on [1, 2, 3] led by 1."""
    c = Cluster(min_isr=min_isr)
    c.add_brokers([1, 2, 3])
    tid = c.create("t", 1, 3, configs)
    c.add_brokers(range(4, brokers + 1))
    assert state(c, tid).replicas == (1, 2, 3) and state(c, tid).leader == 1
    return c, tid


def state(c: Cluster, tid: str, index: int = 0) -> PartitionRegistration:
    p = c.image.partition(tid, index)
    assert p is not None
    return p


def reassign(c: Cluster, target: Sequence[int] | None, topic: str = "t", index: int = 0) -> tuple[ErrorCode, str]:
    """Run one reassignment (None: cancel); its code and message."""
    response: ReassignmentsResponse = c.run(c.ctl.alter_partition_reassignments([(topic, index, target)]))
    (result,) = response.results
    check_invariants(c.image)
    return result.error, result.message


def alter_isr(c: Cluster, tid: str, new_isr: Sequence[int]) -> PartitionRegistration:
    """The leader's AlterPartition to ``new_isr``; returns the state the response reports."""
    p = state(c, tid)
    response = c.run(
        c.ctl.alter_partition(
            p.leader,
            c.epoch(p.leader),
            tid,
            0,
            leader_epoch=p.leader_epoch,
            partition_epoch=p.partition_epoch,
            new_isr=list(new_isr),
        )
    )
    assert response.state == state(c, tid)
    check_invariants(c.image)
    return response.state


# -- rule 1: start --


def test_start_grows_the_replica_set_and_keeps_leader_and_isr() -> None:
    c, tid = cluster()
    before = state(c, tid)
    assert reassign(c, [2, 3, 4]) == (ErrorCode.NONE, "")
    (batch,) = [records for _, records in c.batches[-1:]]
    change = batch[0].partition_change
    assert not change.HasField("leader") and not change.HasField("isr")
    p = state(c, tid)
    assert p.replicas == (2, 3, 4, 1) and p.adding == (4,) and p.removing == (1,)
    assert p.isr == (1, 2, 3) and p.leader == 1 and p.leader_epoch == before.leader_epoch
    assert p.partition_epoch == before.partition_epoch + 1
    assert c.image.reassigning_partition_count == 1
    check_snapshot(c.image)


def test_start_refusals_name_the_problem() -> None:
    c, tid = cluster()
    offset = c.offset
    cases: list[tuple[str, int, list[int], ErrorCode, str]] = [
        ("nope", 0, [1], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "nope-0"),
        ("t", 5, [1], ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, "t-5"),
        ("t", 0, [], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "empty"),
        ("t", 0, [2, 3, 2], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "[2] appear more than once"),
        ("t", 0, [2, 9], ErrorCode.INVALID_REPLICA_ASSIGNMENT, "broker 9"),
    ]
    for topic, index, target, code, text in cases:
        error, message = reassign(c, target, topic, index)
        assert error == code and text in message, (target, error, message)
    assert c.offset == offset and not state(c, tid).reassigning  # nothing written


def test_a_target_equal_to_the_replicas_writes_nothing_and_a_new_order_moves_no_data() -> None:
    c, tid = cluster()
    offset = c.offset
    assert reassign(c, [1, 2, 3])[0] == ErrorCode.NONE and c.offset == offset
    assert reassign(c, [3, 1, 2])[0] == ErrorCode.NONE
    p = state(c, tid)
    assert p.replicas == (3, 1, 2) and not p.reassigning and p.leader == 1  # preferred election moves it later


def test_shrinking_completes_at_once_when_the_target_is_in_sync() -> None:
    c, tid = cluster()
    assert reassign(c, [2, 3])[0] == ErrorCode.NONE
    ((_, records),) = c.batches[-1:]
    assert len(records) == 2  # the start and its completion, one entry
    p = state(c, tid)
    assert p.replicas == (2, 3) and p.isr == (2, 3) and p.leader == 2 and not p.reassigning
    assert p.leader_epoch == 1


def test_unclean_recovery_and_offline_partitions_are_refused() -> None:
    c, tid = cluster()
    c.run(c.ctl.shutdown_broker(2, c.epoch(2)))
    c.run(c.ctl.shutdown_broker(3, c.epoch(3)))
    c.register(1, clean=False)  # the last ISR member lost its tail: unclean recovery
    assert state(c, tid).recovering
    error, message = reassign(c, [2, 3, 4])
    assert error == ErrorCode.LEADER_NOT_AVAILABLE and "unclean recovery" in message
    c2, tid2 = cluster()
    for b in (1, 2, 3):
        c2.run(c2.ctl.shutdown_broker(b, c2.epoch(b)))
    assert state(c2, tid2).offline
    error, message = reassign(c2, [4])
    assert error == ErrorCode.LEADER_NOT_AVAILABLE and "no leader" in message


def test_a_move_may_not_shrink_below_min_insync_replicas_but_a_single_replica_may_move() -> None:
    c, _ = cluster(configs={"min.insync.replicas": "2"})
    error, message = reassign(c, [4])
    assert error == ErrorCode.INVALID_REPLICA_ASSIGNMENT and "min.insync.replicas" in message
    assert reassign(c, [2, 4])[0] == ErrorCode.NONE  # two replicas still meet the floor
    c1 = Cluster(min_isr=2)
    c1.add_brokers([1, 2])
    tid1 = c1.create("one", 1, 1)
    before = state(c1, tid1).replicas
    other = 2 if before == (1,) else 1
    assert reassign(c1, [other], "one")[0] == ErrorCode.NONE  # floor min(2, 1 in-sync original) = 1
    p = state(c1, tid1)
    assert p.replicas == (other, *before) and p.adding == (other,)
    p = alter_isr(c1, tid1, [*before, other])
    assert p.replicas == (other,) and p.leader == other and not p.reassigning


# -- rule 1: replace --


def test_a_new_target_replaces_the_move_computed_against_the_original_replicas() -> None:
    c, tid = cluster(brokers=5)
    reassign(c, [2, 3, 4])
    assert alter_isr(c, tid, [1, 2, 3]).adding == (4,)  # no change
    assert reassign(c, [2, 3, 5])[0] == ErrorCode.NONE
    p = state(c, tid)
    assert p.replicas == (2, 3, 5, 1) and p.adding == (5,) and p.removing == (1,)
    assert p.isr == (1, 2, 3) and p.leader == 1


def test_replacing_drops_an_adding_replica_from_the_isr_and_its_leadership() -> None:
    c, tid = cluster(brokers=5)
    reassign(c, [4, 5, 1])  # adding 4 and 5, removing 2 and 3
    p = alter_isr(c, tid, [1, 2, 3, 4])
    assert p.reassigning and p.isr == (1, 2, 3, 4)
    c.run(c.ctl.shutdown_broker(1, c.epoch(1)))  # the leader leaves: 2 (first in replica order in the ISR)
    p = state(c, tid)
    assert p.replicas == (4, 5, 1, 2, 3) and p.leader == 4  # replica order: the adding 4 comes first
    leader_epoch = p.leader_epoch
    assert reassign(c, [2, 3, 5])[0] == ErrorCode.NONE  # 4 is neither original nor target
    p = state(c, tid)
    assert p.replicas == (2, 3, 5, 1) and p.adding == (5,) and p.removing == (1,)
    assert 4 not in p.isr and p.leader == 2 and p.leader_epoch == leader_epoch + 1


# -- rule 2: cancel --


def test_cancel_without_a_move_is_refused() -> None:
    c, _ = cluster()
    error, message = reassign(c, None)
    assert error == ErrorCode.NO_REASSIGNMENT_IN_PROGRESS and "t-0" in message


def test_cancel_goes_back_to_the_original_replicas() -> None:
    c, tid = cluster(brokers=5)
    reassign(c, [4, 5, 1])
    alter_isr(c, tid, [1, 2, 3, 4])
    assert reassign(c, None)[0] == ErrorCode.NONE
    p = state(c, tid)
    assert p.replicas == (1, 2, 3) and not p.reassigning and p.isr == (1, 2, 3) and p.leader == 1


def test_cancel_re_elects_a_leader_that_was_only_an_adding_replica() -> None:
    c, tid = cluster(brokers=5)
    reassign(c, [4, 5, 1])
    alter_isr(c, tid, [1, 2, 3, 4])
    c.run(c.ctl.shutdown_broker(1, c.epoch(1)))
    assert state(c, tid).leader == 4
    assert reassign(c, None)[0] == ErrorCode.NONE
    p = state(c, tid)
    assert p.replicas == (1, 2, 3) and p.isr == (2, 3) and p.leader == 2


def test_cancel_is_refused_when_no_original_replica_is_in_sync() -> None:
    c, tid = cluster(brokers=5)
    reassign(c, [4, 5])
    alter_isr(c, tid, [1, 2, 3, 4])
    for b in (1, 2, 3):
        c.run(c.ctl.shutdown_broker(b, c.epoch(b)))
    p = state(c, tid)
    assert p.isr == (4,) and p.leader == 4
    error, message = reassign(c, None)
    assert error == ErrorCode.INVALID_REPLICA_ASSIGNMENT and "in-sync replicas [4]" in message
    assert state(c, tid) == p


# -- rule 3: completion --


def test_the_last_adding_replica_joining_the_isr_completes_the_move_and_moves_the_leader() -> None:
    c, tid = cluster()
    reassign(c, [2, 3, 4])
    before = state(c, tid)
    p = alter_isr(c, tid, [1, 2, 3, 4])
    ((_, records),) = c.batches[-1:]
    assert [r.WhichOneof("record") for r in records] == ["partition_change", "partition_change"]
    assert p.replicas == (2, 3, 4) and p.isr == (2, 3, 4) and not p.reassigning
    assert p.leader == 2 and p.leader_epoch == before.leader_epoch + 1  # target[0] leads
    assert p.partition_epoch == before.partition_epoch + 2  # the ISR change, then the completion


def test_a_leader_in_the_target_keeps_its_epoch() -> None:
    c, tid = cluster()
    reassign(c, [1, 3, 4])
    before = state(c, tid)
    p = alter_isr(c, tid, [1, 2, 3, 4])
    assert p.replicas == (1, 3, 4) and p.isr == (1, 3, 4) and p.leader == 1
    assert p.leader_epoch == before.leader_epoch


def test_completion_waits_for_every_target_replica() -> None:
    c, tid = cluster(brokers=5)
    reassign(c, [2, 4, 5])
    assert alter_isr(c, tid, [1, 2, 3, 4]).reassigning  # 5 not yet
    assert alter_isr(c, tid, [1, 3, 4, 5]).reassigning  # 2 fell out meanwhile
    assert c.ctl.tick(c.now).records == []
    p = alter_isr(c, tid, [1, 3, 4, 5, 2])
    assert p.replicas == (2, 4, 5) and p.isr == (4, 5, 2) and p.leader == 2


def test_completion_never_leaves_fewer_in_sync_replicas_than_min_isr_while_the_originals_have_more() -> None:
    c, tid = cluster(configs={"min.insync.replicas": "2"})
    t = c.image.topics[tid]
    moving = PartitionRegistration(replicas=(4, 1, 2, 3), isr=(1, 2, 3, 4), leader=1, adding=(4,), removing=(1, 2, 3))
    assert completion(c.image, t, 0, moving) is None  # 3 original replicas in sync: the floor is 2
    degraded = PartitionRegistration(replicas=(4, 1, 2, 3), isr=(1, 4), leader=1, adding=(4,), removing=(1, 2, 3))
    done = completion(c.image, t, 0, degraded)  # only 1 original replica in sync: the floor is 1
    assert done is not None and list(done.partition_change.replicas.values) == [4]
    assert done.partition_change.leader == 4


def test_completion_waits_while_no_target_replica_may_lead() -> None:
    c, tid = cluster()
    t = c.image.topics[tid]
    c.run(c.ctl.shutdown_broker(4, c.epoch(4)))
    p = PartitionRegistration(replicas=(4, 1), isr=(1, 4), leader=1, adding=(4,), removing=(1,))
    assert completion(c.image, t, 0, p) is None


# -- failover: a newly active controller completes on its tick --


def test_a_new_active_controller_completes_a_ready_move_on_its_tick() -> None:
    c, tid = cluster()
    reassign(c, [2, 3, 4])
    # The state an older controller could leave: every target replica in sync, not completed yet.
    c.offset += 1
    c.ctl.replay_batch(c.offset, [rec.partition_change(tid, 0, isr=[1, 2, 3, 4])])
    for image in (c.ctl.committed_image, decode_snapshot(encode_snapshot(c.ctl.committed_image))):
        standby = Controller(c.ctl.config, image)
        standby.activate()
        result = standby.tick(c.now)
        assert len(result.records) == 1
        delta = MetadataDelta(standby.image)
        delta.replay_batch(c.offset + 1, result.records)
        p = delta.apply().partition(tid, 0)
        assert p is not None and p.replicas == (2, 3, 4) and p.leader == 2 and not p.reassigning
        assert delta.local_changes(1).deletes.keys() == {TopicIdPartition(tid, 0)}


def test_a_snapshot_keeps_a_move_in_progress() -> None:
    c, tid = cluster()
    reassign(c, [2, 3, 4])
    check_snapshot(c.image)
    p = decode_snapshot(encode_snapshot(c.image)).partition(tid, 0)
    assert p is not None and p.adding == (4,) and p.removing == (1,)


# -- what brokers are told --


def test_local_changes_follow_the_replica_set() -> None:
    c, tid = cluster()
    tp = TopicIdPartition(tid, 0)
    before = c.image
    reassign(c, [2, 3, 4])
    delta = MetadataDelta(before)
    delta.replay_batch(c.offset, c.batches[-1][1])
    assert tp in delta.local_changes(4).followers  # a new follower: it starts fetching
    assert tp in delta.local_changes(1).leaders  # the leader learns its new replica set
    assert not delta.local_changes(1).deletes
    middle = c.image
    alter_isr(c, tid, [1, 2, 3, 4])
    delta = MetadataDelta(middle)
    delta.replay_batch(c.offset, c.batches[-1][1])
    assert tp in delta.local_changes(1).deletes  # removed: stop and delete
    assert tp in delta.local_changes(2).leaders
    assert tp in delta.local_changes(4).followers


def test_several_partitions_in_one_request_answer_each_on_its_own() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    tid = c.create("m", 3, 2)
    response = c.run(c.ctl.alter_partition_reassignments([("m", 0, [3]), ("m", 1, [9]), ("m", 2, None), ("m", 0, [1])]))
    codes = [r.error for r in response.results]
    assert codes == [
        ErrorCode.NONE,
        ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        ErrorCode.NO_REASSIGNMENT_IN_PROGRESS,
        ErrorCode.NONE,
    ]
    assert state(c, tid, 0).replicas[0] == 1  # the second request for m-0 replaced the first
    check_invariants(c.image)
    assert all(p.leader != NO_LEADER for _, _, p in c.image.all_partitions())
