"""Adding partitions to a topic (topics.create_partitions): refusals, records, placement, brokers' local changes."""

from __future__ import annotations

from collections import Counter

import pytest

from coordinator.metadata import MetadataDelta, MetadataImage, TopicIdPartition, local_changes
from coordinator.metadata.placement import assign_replicas
from coordinator.metadata.topics import INTERNAL_TOPICS
from ketch.errors import ErrorCode, KetchError
from tests.test_metadata_support import Cluster, check_invariants, check_snapshot


def refused(c: Cluster, name: str, total: int) -> KetchError:
    before = c.image
    with pytest.raises(KetchError) as err:
        c.ctl.create_partitions(name, total)
    assert c.image is before
    return err.value


def test_new_partitions_are_one_batch_of_partition_records_like_creation() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    tid = c.create("t", 2, 2, {"retention.ms": "1000"})
    before = dict(c.image.topics[tid].partitions)
    result = c.ctl.create_partitions("t", 4)
    assert [r.WhichOneof("record") for r in result.records] == ["partition", "partition"]
    assert [r.partition.partition for r in result.records] == [2, 3]
    offset = c.offset
    c.run(result)
    assert c.offset == offset + 1  # one entry
    t = c.image.topics[tid]
    assert sorted(t.partitions) == [0, 1, 2, 3] and t.configs == {"retention.ms": "1000"}
    assert {i: t.partitions[i] for i in (0, 1)} == before  # the old ones are untouched
    for i in (2, 3):
        p = t.partitions[i]
        assert len(p.replicas) == 2 and len(set(p.replicas)) == 2
        assert p.isr == p.replicas and p.leader == p.replicas[0]
        assert (p.leader_epoch, p.partition_epoch, p.recovering) == (0, 0, False)
    assert result.response.topic_id == tid and result.response.name == "t"
    assert result.response.partitions == {2: t.partitions[2], 3: t.partitions[3]}
    check_invariants(c.image)
    check_snapshot(c.image)


def test_validate_only_checks_everything_and_writes_nothing() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    tid = c.create("t", 1, 3)
    result = c.ctl.create_partitions("t", 3, validate_only=True)
    assert result.records == [] and sorted(result.response.partitions) == [1, 2]
    assert sorted(c.image.topics[tid].partitions) == [0]
    with pytest.raises(KetchError) as err:
        c.ctl.create_partitions("t", 1, validate_only=True)
    assert err.value.code == ErrorCode.INVALID_PARTITIONS


def test_the_total_must_grow_and_the_error_names_both_counts() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    c.create("t", 3, 1)
    for total in (3, 2, 0, -1):
        err = refused(c, "t", total)
        assert err.code == ErrorCode.INVALID_PARTITIONS
        assert "has 3 partition(s)" in err.message and f"new total {total} " in err.message


def test_unknown_topic_and_internal_topics_are_refused() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    assert refused(c, "nope", 4).code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    for name in sorted(INTERNAL_TOPICS):
        c.create(name, 2, 1)
        err = refused(c, name, 4)
        assert err.code == ErrorCode.INVALID_REQUEST and "hashed" in err.message


def test_internal_topic_names_match_the_coordinators() -> None:
    from node.group_coordinator import OFFSETS_TOPIC
    from node.txn_coordinator import TRANSACTION_STATE_TOPIC

    assert {OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC} == INTERNAL_TOPICS


def test_not_enough_unfenced_brokers_for_the_replication_factor() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    c.create("t", 2, 3)
    c.advance(10_000, alive=[1, 2])  # 3 is fenced
    err = refused(c, "t", 3)
    assert err.code == ErrorCode.INVALID_REPLICATION_FACTOR
    assert "replication factor 3" in err.message and "2 of 3 registered broker" in err.message
    c.create("two", 1, 2)
    c.run(c.ctl.create_partitions("two", 3))  # a factor that fits still works, on the unfenced brokers only
    t = c.image.topic("two")
    assert t is not None and all(3 not in p.replicas for p in t.partitions.values())


def test_a_topic_grown_on_the_same_brokers_is_placed_as_if_created_with_the_total() -> None:
    for start in range(5):
        c = Cluster()
        c.add_brokers(range(6), racks={b: f"r{b % 3}" for b in range(6)})
        grown = c.create("grown", 4, 3, start=start)
        c.run(c.ctl.create_partitions("grown", 12))
        c.run(c.ctl.create_partitions("grown", 13))
        direct = c.create("direct", 13, 3, start=start)
        replicas = {i: p.replicas for i, p in c.image.topics[grown].partitions.items()}
        assert replicas == {i: p.replicas for i, p in c.image.topics[direct].partitions.items()}
        leaders = Counter(r[0] for r in list(replicas.values())[:12])
        assert sorted(leaders.values()) == [2] * 6  # 12 partitions led 2 by each broker
        assert all(len({b % 3 for b in r}) == 3 for r in replicas.values())  # one replica per rack


def test_new_brokers_get_the_new_leaders() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    tid = c.create("t", 3, 2, start=0)
    c.add_brokers([4, 5, 6])
    c.run(c.ctl.create_partitions("t", 6))
    parts = c.image.topics[tid].partitions
    assert Counter(p.leader for p in parts.values()) == dict.fromkeys(range(1, 7), 1)
    assert [parts[i].leader for i in (3, 4, 5)] == [4, 5, 6]


def test_a_fenced_preferred_replica_of_partition_0_still_places_on_unfenced_brokers() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3, 4])
    tid = c.create("t", 1, 2, start=1)
    assert c.image.topics[tid].partitions[0].replicas[0] == 2
    c.advance(10_000, alive=[1, 3, 4])  # 2 is fenced
    c.run(c.ctl.create_partitions("t", 7))
    new = [c.image.topics[tid].partitions[i] for i in range(1, 7)]
    assert all(2 not in p.replicas for p in new)
    assert Counter(p.leader for p in new) == {1: 2, 3: 2, 4: 2}
    assert new[0].leader == 4  # the round-robin goes on from the next broker: (1 + start 1) over [1, 3, 4]
    assert [p.replicas for p in new] == assign_replicas({1: "", 3: "", 4: ""}, 7, 2, 1)[1:]
    check_invariants(c.image)


def test_brokers_see_the_new_partitions_as_local_changes() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    tid = c.create("t", 2, 2)
    old = c.image
    result = c.ctl.create_partitions("t", 5)
    delta = MetadataDelta(old)
    delta.replay_batch(c.offset + 1, result.records)
    new = delta.apply()
    seen: dict[TopicIdPartition, int] = {}
    for b in (1, 2, 3):
        changes = delta.local_changes(b)
        assert not changes.deletes
        assert all(tp.partition >= 2 for tp in {**changes.leaders, **changes.followers})  # old ones unchanged
        for tp, lp in changes.leaders.items():
            assert lp.state.leader == b and lp.topic_name == "t"
            seen[tp] = b
        for lp in changes.followers.values():
            assert b in lp.state.replicas and lp.state.leader != b
    assert seen == {TopicIdPartition(tid, i): new.topics[tid].partitions[i].leader for i in (2, 3, 4)}
    # A broker that starts from an empty image (a restart) gets every partition, old and new.
    for b in (1, 2, 3):
        fresh = local_changes(MetadataImage(), new, b)
        assert set(fresh.leaders) | set(fresh.followers) == {
            TopicIdPartition(tid, i) for i, p in new.topics[tid].partitions.items() if b in p.replicas
        }


def test_a_topic_whose_partition_0_is_moving_grows_with_its_target_replication_factor() -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3, 4])
    tid = c.create("t", 1, 3)
    c.run(c.ctl.alter_partition_reassignments([("t", 0, [2, 3, 4])]))
    moving = c.image.topics[tid].partitions[0]
    assert len(moving.replicas) == 4 and moving.removing  # the target plus the replica leaving
    result = c.ctl.create_partitions("t", 2)
    assert [len(r.partition.replicas) for r in result.records] == [3]
