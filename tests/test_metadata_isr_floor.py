"""KIP-966 in the controller: the ISR floor, unclean shutdowns and unclean recovery.

Three brokers, one topic with RF 3, and the controller's min.insync.replicas
default at 2 unless a test says otherwise (election.py, brokers.py, recovery.py).
"""

from __future__ import annotations

import pytest

from coordinator.metadata import NO_LEADER, PartitionRegistration, TopicIdPartition
from ketch.errors import ErrorCode, KetchError
from tests.test_metadata_support import Cluster, check_invariants, check_snapshot


def cluster(min_isr: int = 2, configs: dict[str, str] | None = None) -> tuple[Cluster, str]:
    c = Cluster(session_timeout_ms=1000, min_isr=min_isr)
    c.add_brokers([1, 2, 3])
    return c, c.create("t", 1, 3, configs)


def state(c: Cluster, tid: str) -> PartitionRegistration:
    p = c.image.partition(tid, 0)
    assert p is not None
    return p


def test_fencing_keeps_min_insync_members() -> None:
    c, tid = cluster()
    assert state(c, tid).leader == 1
    assert c.advance(2000, alive=[2, 3]) == (1,)
    assert set(state(c, tid).isr) == {2, 3} and state(c, tid).leader == 2
    assert c.advance(2000, alive=[3]) == (2,)
    p = state(c, tid)
    # 2 is fenced but stays: it may hold acknowledged records that 3 lacks.
    assert p.leader == 3 and set(p.isr) == {2, 3}
    check_invariants(c.image, min_isr=2)


def test_a_topic_override_lowers_the_floor() -> None:
    c, tid = cluster(configs={"min.insync.replicas": "1"})
    c.advance(2000, alive=[2, 3])
    c.advance(2000, alive=[3])
    assert state(c, tid).isr == (3,)


def test_controlled_shutdown_respects_the_floor() -> None:
    c, tid = cluster()
    c.run(c.ctl.shutdown_broker(1, c.epoch(1)))
    c.run(c.ctl.shutdown_broker(2, c.epoch(2)))
    p = state(c, tid)
    assert p.leader == 3 and set(p.isr) == {2, 3}


def test_alter_partition_may_not_shrink_below_the_floor() -> None:
    c, tid = cluster()
    p = state(c, tid)
    args = (1, c.epoch(1), tid, 0)
    with pytest.raises(KetchError) as err:
        c.ctl.alter_partition(*args, leader_epoch=p.leader_epoch, partition_epoch=p.partition_epoch, new_isr=[1])
    assert err.value.code == ErrorCode.INVALID_REQUEST and "min.insync.replicas" in err.value.message
    result = c.ctl.alter_partition(
        *args, leader_epoch=p.leader_epoch, partition_epoch=p.partition_epoch, new_isr=[1, 3]
    )
    assert c.run(result).state.isr == (1, 3)


def test_a_member_kept_by_the_floor_stays_after_a_clean_restart_and_leaves_after_an_unclean_one() -> None:
    for clean in (True, False):
        c, tid = cluster()
        c.advance(2000, alive=[2, 3])
        c.advance(2000, alive=[3])
        assert set(state(c, tid).isr) == {2, 3}
        c.register(2, clean=clean)
        assert set(state(c, tid).isr) == ({2, 3} if clean else {3})


def test_an_unclean_restart_leaves_the_isr_even_below_the_floor() -> None:
    c, tid = cluster()
    c.register(2, clean=False)
    assert set(state(c, tid).isr) == {1, 3}
    c.heartbeat(2)
    c.register(3, clean=False)
    p = state(c, tid)
    # Below the floor, knowingly: 3 may have lost records; 1 holds every committed one.
    assert p.leader == 1 and p.isr == (1,) and not p.recovering
    check_invariants(c.image, min_isr=2)


def test_the_last_member_back_from_an_unclean_shutdown_starts_recovery() -> None:
    c, tid = cluster()
    tp = TopicIdPartition(tid, 0)
    c.register(2, clean=False)
    c.register(3, clean=False)
    c.heartbeat_all()
    assert state(c, tid).isr == (1,)
    c.register(1, clean=False, logs={tp: (0, 5)})
    p = state(c, tid)
    assert p.recovering and p.leader == NO_LEADER and p.isr == (1,)
    check_invariants(c.image, min_isr=2)
    check_snapshot(c.image)
    c.heartbeat(1)
    assert state(c, tid).leader == NO_LEADER  # an ordinary election does not end recovery
    c.advance(10, alive=[])
    assert state(c, tid).recovering  # 2 and 3 are usable and have not reported yet
    c.heartbeat(2, logs={tp: (0, 9)})
    c.heartbeat(3, logs={tp: (0, 7)})
    c.advance(10, alive=[])
    p = state(c, tid)
    # 2 has the longest log of the newest epoch: it leads alone; the others truncate to it and rejoin.
    assert p.leader == 2 and p.isr == (2,) and not p.recovering
    check_invariants(c.image, min_isr=2)


def test_recovery_waits_for_the_best_replica_when_it_is_fenced() -> None:
    c, tid = cluster()
    tp = TopicIdPartition(tid, 0)
    c.register(2, clean=False, logs={tp: (1, 99)})
    c.register(3, clean=False)
    c.heartbeat_all()
    assert state(c, tid).isr == (1,)
    c.register(1, clean=False, logs={tp: (1, 20)})
    assert state(c, tid).recovering
    c.heartbeat(1)
    c.advance(10, alive=[1])
    assert state(c, tid).recovering  # reports from before the recovery (2's 99) do not count
    c.heartbeat(2, logs={tp: (1, 10)})
    c.heartbeat(3, logs={tp: (1, 50)})  # 3 reports the best log, then goes quiet
    assert c.advance(1100, alive=[1, 2]) == (3,)
    c.advance(10, alive=[1, 2])
    p = state(c, tid)
    assert p.recovering and p.leader == NO_LEADER  # wait for 3
    c.register(3, clean=False, logs={tp: (1, 30)})  # back, with less than it reported (it lost its tail)
    c.heartbeat(3)
    c.advance(10, alive=[1, 2, 3])
    p = state(c, tid)
    assert p.leader == 3 and p.isr == (3,) and not p.recovering


def test_a_newer_epoch_beats_a_longer_log() -> None:
    c, tid = cluster()
    tp = TopicIdPartition(tid, 0)
    c.register(2, clean=False)
    c.register(3, clean=False)
    c.heartbeat_all()
    c.register(1, clean=False, logs={tp: (2, 5)})
    c.heartbeat(1)
    c.heartbeat(2, logs={tp: (1, 90)})
    c.heartbeat(3, logs={tp: (2, 4)})
    c.advance(10, alive=[])
    assert state(c, tid).leader == 1


def test_malformed_reports_are_refused_by_the_service_helper() -> None:
    from coordinator.service import _replica_logs
    from ketch.api.v1 import controller_pb2 as cpb

    good = cpb.ReplicaLogReport(topic_id="x", partition=0, latest_epoch=-1, log_end_offset=0)
    assert _replica_logs([good]) == {TopicIdPartition("x", 0): (-1, 0)}
    for bad in (
        cpb.ReplicaLogReport(topic_id="", partition=0),
        cpb.ReplicaLogReport(topic_id="x", partition=-1),
        cpb.ReplicaLogReport(topic_id="x", partition=0, latest_epoch=-2),
        cpb.ReplicaLogReport(topic_id="x", partition=0, log_end_offset=-1),
    ):
        with pytest.raises(KetchError) as err:
            _replica_logs([bad])
        assert err.value.code == ErrorCode.INVALID_REQUEST


def test_recovery_waits_for_a_replica_that_was_down_all_along() -> None:
    c, tid = cluster()
    tp = TopicIdPartition(tid, 0)
    c.register(2, clean=False)
    c.heartbeat_all()
    assert c.advance(1100, alive=[1, 2]) == (3,)  # 3 is kept in the ISR by the floor, fenced
    c.register(1, clean=False, logs={tp: (1, 20)})
    c.heartbeat(1)
    c.heartbeat(2, logs={tp: (1, 10)})
    assert state(c, tid).isr == (3,)  # 1 left: 3 is the last member, and it is down
    c.register(3, clean=False, logs={tp: (1, 5)})
    assert state(c, tid).recovering
    c.advance(10, alive=[1, 2])
    assert state(c, tid).leader == NO_LEADER  # 1's and 2's reports predate the recovery
    c.heartbeat(3)
    c.heartbeat(1, logs={tp: (1, 20)})
    c.advance(10, alive=[1, 3])
    assert state(c, tid).leader == NO_LEADER  # 2 has not reported since: it may hold more
    c.heartbeat(2, logs={tp: (1, 10)})
    c.advance(10, alive=[1, 2, 3])
    p = state(c, tid)
    assert p.leader == 1 and p.isr == (1,) and not p.recovering


def test_an_unclean_election_topic_does_not_wait_for_recovery() -> None:
    c, tid = cluster(configs={"unclean.leader.election.enable": "true"})
    c.register(2, clean=False)
    c.register(3, clean=False)
    c.heartbeat_all()
    c.register(1, clean=False)
    c.heartbeat(1)
    p = state(c, tid)
    assert p.leader == 1 and not p.recovering
