"""Controller commands: brokers, sessions, fencing, topics, AlterPartition, elections, replay/commit/resign."""

from __future__ import annotations

import pytest

from coordinator.metadata import (
    NO_LEADER,
    AlterPartitionResponse,
    Controller,
    ControllerResult,
    MetadataDelta,
    MetadataImage,
    TopicIdPartition,
)
from coordinator.metadata import records as rec
from ketch.errors import ErrorCode, KetchError
from tests.test_metadata_support import Cluster, check_invariants


def refused(fn: object, *args: object, **kwargs: object) -> ErrorCode:
    assert callable(fn)
    with pytest.raises(KetchError) as err:
        fn(*args, **kwargs)
    return err.value.code


def three(partitions: int = 3, configs: dict[str, str] | None = None) -> tuple[Cluster, str]:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    return c, c.create("t", partitions, 3, configs)


# -- brokers --


def test_register_then_heartbeat_unfences_once_caught_up() -> None:
    c = Cluster()
    epoch = c.register(1)
    assert c.image.brokers[1].fenced and epoch == c.offset
    behind = c.run(c.ctl.broker_heartbeat(1, epoch, epoch - 1, now_ms=0))
    assert behind.fenced and not behind.caught_up and c.image.brokers[1].fenced
    result = c.ctl.broker_heartbeat(1, epoch, epoch, now_ms=0)
    assert [r.WhichOneof("record") for r in result.records] == ["broker_fence"]
    assert not result.response.fenced
    c.run(result)
    assert c.image.is_usable(1)
    assert c.ctl.broker_heartbeat(1, epoch, epoch, now_ms=1).records == []  # already unfenced


def test_heartbeat_refusals() -> None:
    c = Cluster()
    epoch = c.register(1)
    assert refused(c.ctl.broker_heartbeat, 7, 1, 1, now_ms=0) == ErrorCode.BROKER_ID_NOT_REGISTERED
    assert refused(c.ctl.broker_heartbeat, 1, epoch - 1, epoch, now_ms=0) == ErrorCode.STALE_BROKER_EPOCH
    assert refused(c.ctl.register_broker, -1, "i", "h", 1, now_ms=0) == ErrorCode.INVALID_REQUEST
    assert refused(c.ctl.register_broker, 1, "", "h", 1, now_ms=0) == ErrorCode.INVALID_REQUEST
    assert refused(c.ctl.register_broker, 1, "i", "h", 0, now_ms=0) == ErrorCode.INVALID_REQUEST


def test_reregistration_gets_a_new_epoch_and_moves_old_leaderships() -> None:
    c, tid = three()
    old = c.epoch(1)
    led = [i for i, p in c.image.topics[tid].partitions.items() if p.leader == 1]
    assert led
    response = c.run(c.ctl.register_broker(1, "restarted", "h", 9001, now_ms=0))
    assert response.replaced_epoch == old
    assert c.epoch(1) == c.offset > old and c.image.brokers[1].fenced
    for i in led:
        p = c.image.topics[tid].partitions[i]
        assert p.leader not in (1, NO_LEADER) and 1 not in p.isr and p.leader_epoch == 1
    assert refused(c.ctl.broker_heartbeat, 1, old, c.offset, now_ms=0) == ErrorCode.STALE_BROKER_EPOCH
    check_invariants(c.image)


def test_session_expiry_fences_and_moves_leaders_within_the_isr() -> None:
    c, tid = three(6)
    before = dict(c.image.topics[tid].partitions)
    assert c.advance(9_000, alive=[]) == ()  # exactly the timeout: not yet
    fenced = c.advance(1, alive=[1, 2])
    assert fenced == (3,)
    image = c.image
    assert image.brokers[3].fenced and image.fenced_broker_count == 1
    for i, p in image.topics[tid].partitions.items():
        old = before[i]
        assert 3 not in p.isr and p.leader in old.isr and p.leader != 3
        assert p.leader_epoch == old.leader_epoch + (1 if old.leader == 3 else 0)
        assert p.partition_epoch == old.partition_epoch + 1
    assert image.leaders_per_broker[3] == 0 and image.offline_partition_count == 0
    check_invariants(image)


def test_fencing_every_isr_member_leaves_the_last_ones_and_goes_offline() -> None:
    c, tid = three(1)
    c.advance(5_000, alive=[3])
    assert c.advance(5_000, alive=[3]) == (1, 2)
    p = c.image.topics[tid].partitions[0]
    assert (p.leader, p.isr) == (3, (3,))
    assert c.advance(10_000, alive=[]) == (3,)
    p = c.image.topics[tid].partitions[0]
    assert p.offline and p.isr == (3,) and c.image.offline_partition_count == 1
    # 1 comes back: not in the ISR, so no clean election
    c.heartbeat(1)
    assert c.image.is_usable(1) and c.image.topics[tid].partitions[0].offline
    # 3 comes back: it was the last in-sync replica and leads again
    c.heartbeat(3)
    p = c.image.topics[tid].partitions[0]
    assert (p.leader, p.isr) == (3, (3,)) and c.image.offline_partition_count == 0


def test_simultaneous_fencing_keeps_the_whole_isr_and_elects_whoever_returns() -> None:
    c, tid = three(1)
    assert c.advance(10_000, alive=[]) == (1, 2, 3)
    p = c.image.topics[tid].partitions[0]
    assert p.offline and set(p.isr) == {1, 2, 3}
    c.heartbeat(2)
    p = c.image.topics[tid].partitions[0]
    assert (p.leader, p.isr) == (2, (2,))  # fenced members leave the ISR as it comes back online
    check_invariants(c.image)


def test_unclean_election_is_an_opt_in() -> None:
    for unclean in (False, True):
        c = Cluster()
        c.add_brokers([1, 2])
        tid = c.create("t", 1, 2, {"unclean.leader.election.enable": str(unclean).lower()})
        c.advance(5_000, alive=[1])
        c.advance(5_000, alive=[1])  # 2 fenced: ISR [1]
        c.advance(10_000, alive=[])  # 1 fenced: offline, ISR [1]
        c.heartbeat(2)  # only the out-of-sync replica returns
        p = c.image.topics[tid].partitions[0]
        if unclean:
            assert (p.leader, p.isr) == (2, (2,))
        else:
            assert p.offline and p.isr == (1,)
        check_invariants(c.image)


def test_failover_starts_session_clocks_at_the_first_tick() -> None:
    c, _ = three()
    c.now += 60_000  # long silence while no controller was active
    standby = Controller(c.ctl.config, c.image)
    standby.activate()
    assert standby.tick(c.now).records == []
    assert standby.tick(c.now + 9_000).records == []
    assert standby.tick(c.now + 9_001).response.fenced == (1, 2, 3)


def test_controlled_shutdown_moves_leaders_and_stays_fenced() -> None:
    c, tid = three(3)
    led = sum(1 for p in c.image.topics[tid].partitions.values() if p.leader == 2)
    epoch = c.epoch(2)
    response = c.run(c.ctl.shutdown_broker(2, epoch))
    assert response.leaders_moved == led == 1
    b = c.image.brokers[2]
    assert b.fenced and b.shut_down
    assert all(p.leader != 2 and 2 not in p.isr for p in c.image.topics[tid].partitions.values())
    hb = c.run(c.ctl.broker_heartbeat(2, epoch, c.offset, now_ms=0))
    assert hb.should_shut_down and hb.fenced and c.image.brokers[2].fenced
    assert c.ctl.shutdown_broker(2, epoch).records == []  # idempotent
    assert refused(c.ctl.shutdown_broker, 2, epoch - 1) == ErrorCode.STALE_BROKER_EPOCH
    c.register(2)
    c.heartbeat(2)
    assert c.image.is_usable(2) and not c.image.brokers[2].shut_down


def test_shutdown_of_the_last_isr_member_takes_the_partition_offline() -> None:
    c = Cluster()
    c.add_brokers([1])
    tid = c.create("t", 1, 1)
    c.run(c.ctl.shutdown_broker(1, c.epoch(1)))
    p = c.image.topics[tid].partitions[0]
    assert p.offline and p.isr == (1,) and p.leader_epoch == 1


# -- topics --


def test_create_topic_records_and_balanced_rack_aware_assignment() -> None:
    c = Cluster()
    c.add_brokers(range(6), racks={b: f"r{b % 3}" for b in range(6)})
    result = c.ctl.create_topic("orders", 12, 3, {"retention.ms": "1000"}, topic_id="T", start_index=4)
    kinds = [r.WhichOneof("record") for r in result.records]
    assert kinds == ["topic"] + ["partition"] * 12
    c.run(result)
    t = c.image.topic("orders")
    assert t is not None and t.topic_id == "T" and t.configs == {"retention.ms": "1000"}
    leaders = [p.leader for p in t.partitions.values()]
    assert sorted(leaders.count(b) for b in range(6)) == [2] * 6
    for p in t.partitions.values():
        assert p.isr == p.replicas and p.leader == p.replicas[0] and (p.leader_epoch, p.partition_epoch) == (0, 0)
        assert len({f"r{r % 3}" for r in p.replicas}) == 3
    assert result.response.partitions == dict(t.partitions)


@pytest.mark.parametrize(
    ("name", "partitions", "rf", "configs", "code"),
    [
        ("bad name", 1, 1, {}, ErrorCode.INVALID_TOPIC_EXCEPTION),
        ("t", 1, 1, {}, ErrorCode.TOPIC_ALREADY_EXISTS),
        ("u", 0, 1, {}, ErrorCode.INVALID_PARTITIONS),
        ("u", 1, 0, {}, ErrorCode.INVALID_REPLICATION_FACTOR),
        ("u", 1, 3, {}, ErrorCode.INVALID_REPLICATION_FACTOR),
        ("u", 1, 1, {"retention.ms": "x"}, ErrorCode.INVALID_CONFIG),
        ("u", 1, 1, {"nope": "1"}, ErrorCode.INVALID_CONFIG),
        ("u", 1, 1, {"unclean.leader.election.enable": "yes"}, ErrorCode.INVALID_CONFIG),
    ],
)
def test_create_topic_refusals(name: str, partitions: int, rf: int, configs: dict[str, str], code: ErrorCode) -> None:
    c = Cluster()
    c.add_brokers([1, 2, 3])
    c.create("t", 1, 1)
    c.advance(10_000, alive=[1, 2])  # 3 fenced: 2 usable brokers
    before = c.image
    assert refused(c.ctl.create_topic, name, partitions, rf, configs, topic_id="U", start_index=0) == code
    assert c.image is before


def test_replication_factor_error_names_the_counts() -> None:
    c = Cluster()
    c.add_brokers([1, 2])
    c.register(3)
    with pytest.raises(KetchError, match="2 of 3 registered broker"):
        c.ctl.create_topic("t", 1, 3, topic_id="T", start_index=0)


def test_delete_topic() -> None:
    c, tid = three()
    response = c.run(c.ctl.delete_topic("t"))
    assert response.topic_id == tid and c.image.topic("t") is None and not c.image.topics
    assert refused(c.ctl.delete_topic, "t") == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert c.create("t", 1, 1) != tid


# -- AlterPartition --


def alter(
    c: Cluster, tid: str, index: int, new_isr: list[int], **overrides: int
) -> ControllerResult[AlterPartitionResponse]:
    p = c.image.topics[tid].partitions[index]
    args = {"broker_id": p.leader, "leader_epoch": p.leader_epoch, "partition_epoch": p.partition_epoch}
    args.update(overrides)
    epoch = overrides.get("broker_epoch", c.epoch(args["broker_id"]))
    return c.ctl.alter_partition(
        args["broker_id"],
        epoch,
        tid,
        index,
        leader_epoch=args["leader_epoch"],
        partition_epoch=args["partition_epoch"],
        new_isr=new_isr,
    )


def test_alter_partition_shrinks_and_expands_against_the_partition_epoch() -> None:
    c, tid = three(1)
    p = c.image.topics[tid].partitions[0]
    follower = p.isr[-1]
    shrink = alter(c, tid, 0, [r for r in p.isr if r != follower])
    state = shrink.response.state
    assert (state.isr, state.partition_epoch, state.leader_epoch) == (p.isr[:-1], 1, 0)
    c.run(shrink)
    assert c.image.topics[tid].partitions[0] == state
    # a second request built on the old partition epoch is refused
    code = refused(
        c.ctl.alter_partition,
        p.leader,
        c.epoch(p.leader),
        tid,
        0,
        leader_epoch=0,
        partition_epoch=0,
        new_isr=[p.leader],
    )
    assert code == ErrorCode.INVALID_UPDATE_VERSION
    c.run(alter(c, tid, 0, list(p.isr)))
    assert c.image.topics[tid].partitions[0].isr == p.isr
    assert alter(c, tid, 0, list(p.isr)).records == []  # unchanged: nothing to write


def test_alter_partition_refusals() -> None:
    c, tid = three(1)
    p = c.image.topics[tid].partitions[0]
    leader, other = p.leader, p.isr[1]

    def code(new_isr: list[int], **kw: int) -> ErrorCode:
        with pytest.raises(KetchError) as err:
            alter(c, tid, 0, new_isr, **kw)
        return err.value.code

    assert code(list(p.isr), broker_id=other) == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert code(list(p.isr), leader_epoch=1) == ErrorCode.FENCED_LEADER_EPOCH
    assert code(list(p.isr), partition_epoch=3) == ErrorCode.INVALID_UPDATE_VERSION
    assert code(list(p.isr), broker_epoch=c.epoch(leader) - 1) == ErrorCode.STALE_BROKER_EPOCH
    assert code([other]) == ErrorCode.INVALID_REQUEST  # lacks the leader
    assert code([leader, 9]) == ErrorCode.INVALID_REQUEST  # not a replica
    assert code([leader, leader]) == ErrorCode.INVALID_REQUEST
    assert (
        refused(
            c.ctl.alter_partition, leader, c.epoch(leader), "nope", 0, leader_epoch=0, partition_epoch=0, new_isr=[1]
        )
        == ErrorCode.UNKNOWN_TOPIC_ID
    )
    assert (
        refused(c.ctl.alter_partition, leader, c.epoch(leader), tid, 5, leader_epoch=0, partition_epoch=0, new_isr=[1])
        == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    )
    assert (
        refused(c.ctl.alter_partition, 8, 1, tid, 0, leader_epoch=0, partition_epoch=0, new_isr=[8])
        == ErrorCode.BROKER_ID_NOT_REGISTERED
    )


def test_alter_partition_only_adds_unfenced_brokers_at_their_current_epoch() -> None:
    c, tid = three(1)
    p = c.image.topics[tid].partitions[0]
    out = next(r for r in p.replicas if r != p.leader)
    keep = [r for r in p.replicas if r != out]
    alive = [b for b in (1, 2, 3) if b != out]
    c.run(alter(c, tid, 0, keep))
    c.advance(10_000, alive=alive)  # `out` is fenced
    assert refused(alter, c, tid, 0, [*keep, out]) == ErrorCode.INELIGIBLE_REPLICA
    c.heartbeat(out)
    p2 = c.image.topics[tid].partitions[0]

    def expand(seen_epoch: int) -> ControllerResult[AlterPartitionResponse]:
        return c.ctl.alter_partition(
            p2.leader,
            c.epoch(p2.leader),
            tid,
            0,
            leader_epoch=p2.leader_epoch,
            partition_epoch=p2.partition_epoch,
            new_isr=[*keep, out],
            isr_broker_epochs={out: seen_epoch},
        )

    assert refused(expand, c.epoch(out) - 1) == ErrorCode.INELIGIBLE_REPLICA
    c.run(expand(c.epoch(out)))
    assert set(c.image.topics[tid].partitions[0].isr) == {1, 2, 3}


# -- preferred leader election --


def test_preferred_leader_election() -> None:
    c, tid = three(3)
    assert c.ctl.elect_preferred_leaders().response.results == {}
    pref = c.image.topics[tid].partitions[0].replicas[0]
    c.advance(10_000, alive=[b for b in (1, 2, 3) if b != pref])
    assert c.image.topics[tid].partitions[0].leader != pref
    assert c.ctl.elect_preferred_leaders([("t", 0)]).response.results == {
        ("t", 0): ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
    }
    c.heartbeat(pref)
    p = c.image.topics[tid].partitions[0]
    c.run(alter(c, tid, 0, [*p.isr, pref]))  # the leader lets it back into the ISR
    result = c.ctl.elect_preferred_leaders([("t", 0), ("t", 0), ("t", 9), ("zz", 0)])
    assert result.response.results == {
        ("t", 0): ErrorCode.NONE,
        ("t", 9): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
        ("zz", 0): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    }
    c.run(result)
    p = c.image.topics[tid].partitions[0]
    assert p.leader == pref and p.leader_epoch == 2
    assert c.ctl.elect_preferred_leaders([("t", 0)]).response.results == {("t", 0): ErrorCode.ELECTION_NOT_NEEDED}


# -- replay, commit, resign --


def test_commands_never_change_the_image() -> None:
    c, _ = three()
    before = c.image
    for result in (
        c.ctl.create_topic("u", 2, 2, topic_id="U", start_index=0),
        c.ctl.delete_topic("t"),
        c.ctl.shutdown_broker(1, c.epoch(1)),
        c.ctl.tick(c.now + 100_000),
        c.ctl.register_broker(1, "again", "h", 1, now_ms=0),
    ):
        assert result.records
        assert c.image is before


def test_speculative_replay_then_commit_or_resign() -> None:
    ctl = Controller()
    ctl.replay_batch(1, [rec.register_broker(1, "i", "h", 1)])
    ctl.replay_batch(2, [rec.broker_fence(1, 1, fenced=False)])
    committed = ctl.image
    first = ctl.create_topic("a", 1, 1, topic_id="A", start_index=0)
    ctl.replay_batch(3, first.records, committed=False)
    # the next command sees the pending topic
    assert refused(ctl.create_topic, "a", 1, 1, topic_id="B", start_index=0) == ErrorCode.TOPIC_ALREADY_EXISTS
    ctl.replay_batch(4, ctl.create_topic("b", 1, 1, topic_id="B", start_index=0).records, committed=False)
    with pytest.raises(ValueError, match="pending"):
        ctl.replay_batch(5, [rec.no_op(1)])
    ctl.commit(3)
    assert ctl.committed_image.topic("a") is not None and ctl.committed_image.topic("b") is None
    ctl.resign()
    assert ctl.image is ctl.committed_image and ctl.image.offset == 3 and ctl.image is not committed
    ctl.replay_batch(4, [rec.no_op(2)])  # the new leader's entry 4 replaced ours
    assert ctl.image.topic("b") is None and ctl.image.offset == 4
    ctl.reset(MetadataImage(offset=100))
    assert ctl.image.offset == ctl.committed_image.offset == 100


def test_broker_follows_the_log_with_local_changes() -> None:
    c, tid = three(3)
    follower = MetadataImage()
    views: dict[int, dict[TopicIdPartition, int]] = {1: {}, 2: {}, 3: {}}
    c.advance(10_000, alive=[1, 2])
    c.run(c.ctl.delete_topic("t"))
    c.create("t", 2, 2)
    for offset, records in c.batches:
        delta = MetadataDelta(follower)
        delta.replay_batch(offset, records)
        for b, view in views.items():
            changes = delta.local_changes(b)
            for tp in changes.deletes:
                view.pop(tp)
            for tp, lp in {**changes.leaders, **changes.followers}.items():
                view[tp] = lp.state.leader
        follower = delta.apply()
    assert follower == c.image
    for b, view in views.items():
        expect = {TopicIdPartition(t.topic_id, i): p.leader for t, i, p in c.image.partitions_of_broker(b)}
        assert view == expect
    assert tid not in {tp.topic_id for view in views.values() for tp in view}
