"""Replica placement (round-robin, rack-aware) and the leader-election rules."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.metadata import NO_LEADER, Election, PartitionRegistration
from coordinator.metadata.election import build_change, change_result, elect_leader
from coordinator.metadata.placement import assign_replicas, rack_alternated


def test_rack_alternated_order() -> None:
    brokers = {1: "a", 2: "a", 3: "b", 4: "c", 5: "c", 6: "a"}
    assert rack_alternated(brokers) == [1, 3, 4, 2, 5, 6]
    assert rack_alternated({3: "", 1: "", 2: ""}) == [1, 2, 3]


def test_kafka_style_round_robin() -> None:
    # 5 brokers, one rack, start 0: leaders go round-robin, followers shift every n partitions
    got = assign_replicas(dict.fromkeys(range(5), ""), 10, 3, 0)
    assert [r[0] for r in got] == [0, 1, 2, 3, 4] * 2
    assert got[0] == (0, 1, 2) and got[5] == (0, 2, 3)
    assert assign_replicas(dict.fromkeys(range(5), ""), 2, 1, 7) == [(2,), (3,)]


def test_placement_rejects_impossible_factors() -> None:
    with pytest.raises(ValueError):
        assign_replicas({1: ""}, 1, 2, 0)
    with pytest.raises(ValueError):
        assign_replicas({1: ""}, 1, 0, 0)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 9),
    partitions=st.integers(1, 40),
    rf_seed=st.integers(1, 9),
    start=st.integers(0, 1000),
)
def test_placement_is_balanced_over_equal_brokers(n: int, partitions: int, rf_seed: int, start: int) -> None:
    rf = 1 + rf_seed % n
    got = assign_replicas(dict.fromkeys(range(n), ""), partitions, rf, start)
    assert len(got) == partitions
    assert all(len(r) == rf and len(set(r)) == rf for r in got)
    leaders = Counter(r[0] for r in got)
    counts = [leaders.get(b, 0) for b in range(n)]
    assert max(counts) - min(counts) <= 1
    replicas = Counter(b for r in got for b in r)
    per_broker = [replicas.get(b, 0) for b in range(n)]
    assert max(per_broker) - min(per_broker) <= rf
    if partitions % n == 0:
        assert max(per_broker) == min(per_broker)


@settings(max_examples=150, deadline=None)
@given(
    racks=st.lists(st.sampled_from("abcd"), min_size=1, max_size=9),
    partitions=st.integers(1, 30),
    rf_seed=st.integers(1, 9),
    start=st.integers(0, 100),
)
def test_placement_spreads_replicas_over_racks(racks: list[str], partitions: int, rf_seed: int, start: int) -> None:
    brokers = dict(enumerate(racks))
    n = len(brokers)
    rf = 1 + rf_seed % n
    got = assign_replicas(brokers, partitions, rf, start)
    distinct_racks = len(set(racks))
    for r in got:
        assert len(set(r)) == rf
        assert len({brokers[b] for b in r}) == min(rf, distinct_racks)
    leaders = Counter(r[0] for r in got)
    counts = [leaders.get(b, 0) for b in brokers]
    assert max(counts) - min(counts) <= 1


# -- election --


def reg(replicas: tuple[int, ...], isr: tuple[int, ...], leader: int) -> PartitionRegistration:
    return PartitionRegistration(replicas=replicas, isr=isr, leader=leader, leader_epoch=3, partition_epoch=7)


def test_current_leader_stays_when_it_can() -> None:
    p = reg((1, 2, 3), (1, 2, 3), 2)
    assert elect_leader(p, [1, 2, 3], lambda b: True) == (2, (1, 2, 3))
    assert build_change("T", 0, p, lambda b: True) is None


def test_first_live_isr_replica_in_replica_order_takes_over() -> None:
    p = reg((1, 2, 3), (3, 2), 2)
    change = build_change("T", 0, p, lambda b: b != 2)
    assert change is not None
    assert change.partition_change.leader == 3 and list(change.partition_change.isr.values) == [3]
    after = change_result(p, change)
    assert (after.leader, after.isr, after.leader_epoch, after.partition_epoch) == (3, (3,), 4, 8)


def test_isr_shrink_without_leader_change_keeps_the_leader_epoch() -> None:
    p = reg((1, 2, 3), (1, 2, 3), 1)
    change = build_change("T", 0, p, lambda b: b != 3)
    assert change is not None and not change.partition_change.HasField("leader")
    after = change_result(p, change)
    assert (after.leader, after.isr, after.leader_epoch, after.partition_epoch) == (1, (1, 2), 3, 8)


def test_no_isr_member_alive_means_offline_with_the_isr_kept() -> None:
    p = reg((1, 2, 3), (2,), 2)
    after = change_result(p, build_change("T", 0, p, lambda b: b != 2))
    assert (after.leader, after.isr, after.leader_epoch) == (NO_LEADER, (2,), 4)
    # offline stays offline, without a new record, while 2 is away
    assert build_change("T", 0, after, lambda b: b != 2) is None


def test_unclean_election_takes_the_first_live_replica_and_resets_the_isr() -> None:
    p = reg((1, 2, 3), (2,), NO_LEADER)
    after = change_result(p, build_change("T", 0, p, lambda b: b == 3, unclean=True))
    assert (after.leader, after.isr) == (3, (3,))
    assert build_change("T", 0, p, lambda b: False, unclean=True) is None


def test_preferred_election() -> None:
    p = reg((1, 2, 3), (1, 2, 3), 2)
    after = change_result(p, build_change("T", 0, p, lambda b: True, election=Election.PREFERRED))
    assert after.leader == 1 and after.leader_epoch == 4
    not_in_isr = reg((1, 2, 3), (2, 3), 2)
    assert build_change("T", 0, not_in_isr, lambda b: True, election=Election.PREFERRED) is None


@settings(max_examples=300, deadline=None)
@given(
    replicas=st.permutations(range(5)).map(lambda r: tuple(r[:3])),
    isr_mask=st.lists(st.booleans(), min_size=3, max_size=3),
    alive=st.sets(st.integers(0, 4)),
    leader_pick=st.integers(0, 3),
    unclean=st.booleans(),
    preferred=st.booleans(),
)
def test_election_results_hold_the_partition_invariants(
    replicas: tuple[int, ...],
    isr_mask: list[bool],
    alive: set[int],
    leader_pick: int,
    unclean: bool,
    preferred: bool,
) -> None:
    isr = tuple(r for r, m in zip(replicas, isr_mask, strict=True) if m) or replicas[:1]
    leader = isr[leader_pick] if leader_pick < len(isr) else NO_LEADER
    p = reg(replicas, isr, leader)
    election = Election.PREFERRED if preferred else Election.ONLINE
    change = build_change("T", 0, p, alive.__contains__, election=election, unclean=unclean)
    after = change_result(p, change)
    assert after.check() is None
    assert after.leader_epoch >= p.leader_epoch and after.partition_epoch >= p.partition_epoch
    assert (after.leader != p.leader) == (after.leader_epoch == p.leader_epoch + 1)
    if after.leader != NO_LEADER:
        assert after.leader in alive
        if after.isr != (after.leader,) or after.leader in isr:
            assert after.leader in isr  # clean: from the old ISR
        assert all(b in alive for b in after.isr)
    elif not unclean or not (alive & set(replicas)):
        assert not (alive & set(isr))  # offline only when no ISR member is alive
        assert after.isr == isr
