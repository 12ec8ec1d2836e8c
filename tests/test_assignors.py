"""Partition assignors: range, roundrobin, cooperative-sticky (KIP-429), and the consumer protocol codec.

What the tests prove:
- Every assignor gives each partition of a subscribed, existing topic to at
  most one member, and only to a member subscribed to its topic; the eager
  ones (range, roundrobin) give every such partition out (Hypothesis).
- Balance per the assignor's definition: range per topic, roundrobin over all
  topics when subscriptions are identical, cooperative-sticky after its
  follow-up rebalance (max - min <= 1 for identical subscriptions; "no single
  move helps" in general).
- Cooperative-sticky never hands a partition to a new owner while its
  previous owner is still a member (it is withheld instead), converges in a
  second rebalance once the owners revoked, keeps what need not move (the
  number of owned partitions that move is exactly the minimum balance needs,
  for identical subscriptions) and leaves a settled assignment unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.groups.records import decode_record as decode_group_record
from coordinator.transactions.records import decode_record as decode_txn_record
from ketch.assignors import (
    ASSIGNORS,
    Assignment,
    CooperativeStickyAssignor,
    MemberSubscription,
    RangeAssignor,
    RoundRobinAssignor,
    TopicPartition,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
    subscribed_partitions,
)
from ketch.assignors.sticky import previous_owners

TP = TopicPartition
TOPICS = ("a", "b", "c", "d")
STICKY = CooperativeStickyAssignor()
Members = dict[str, MemberSubscription]


def subs(**topics: str) -> Members:
    return {m: MemberSubscription(frozenset(t)) for m, t in topics.items()}


def counts(assignment: Assignment) -> list[int]:
    return [len(v) for v in assignment.values()]


# -- unit tests --


def test_range_splits_each_topic_into_contiguous_ranges() -> None:
    out = RangeAssignor().assign(subs(m1="ab", m2="ab"), {"a": 3, "b": 2})
    assert out == {"m1": [TP("a", 0), TP("a", 1), TP("b", 0)], "m2": [TP("a", 2), TP("b", 1)]}


def test_roundrobin_deals_over_all_topics_and_skips_unsubscribed_members() -> None:
    out = RoundRobinAssignor().assign(subs(m1="ab", m2="b"), {"a": 2, "b": 2, "z": 5})
    # a0 → m1; a1: m2 is skipped → m1; b0 → m2 (next in the circle); b1 → m1.
    assert out == {"m1": [TP("a", 0), TP("a", 1), TP("b", 1)], "m2": [TP("b", 0)]}
    assert RoundRobinAssignor().assign(subs(m1="a", m2="a"), {"a": 3}) == {
        "m1": [TP("a", 0), TP("a", 2)],
        "m2": [TP("a", 1)],
    }


def test_missing_topics_and_members_without_partitions() -> None:
    for assignor in ASSIGNORS.values():
        assert assignor.assign(subs(m1="x", m2="a"), {"a": 1}) == {"m1": [], "m2": [TP("a", 0)]}


def test_sticky_keeps_owned_and_withholds_a_transfer_until_revoked() -> None:
    owned = (TP("a", 0), TP("a", 1), TP("a", 2), TP("a", 3))
    members = {"m1": MemberSubscription(frozenset("a"), owned, 3), "m2": MemberSubscription(frozenset("a"))}
    first = STICKY.assign(members, {"a": 4})
    assert first == {"m1": [TP("a", 2), TP("a", 3)], "m2": []}  # a0, a1 must be revoked by m1 first
    members = {m: MemberSubscription(frozenset("a"), tuple(first[m]), 4) for m in members}
    assert STICKY.assign(members, {"a": 4}) == {"m1": [TP("a", 2), TP("a", 3)], "m2": [TP("a", 0), TP("a", 1)]}


def test_sticky_gives_a_departed_members_partitions_out_at_once() -> None:
    members = {
        "m1": MemberSubscription(frozenset("a"), (TP("a", 0),), 2),
        "m2": MemberSubscription(frozenset("a"), (TP("a", 1),), 2),
    }  # m3, who owned a2 and a3, left
    out = STICKY.assign(members, {"a": 4})
    assert out == {"m1": [TP("a", 0), TP("a", 2)], "m2": [TP("a", 1), TP("a", 3)]}


def test_sticky_balancing_moves_what_the_giver_did_not_own_first() -> None:
    members = {"m0": MemberSubscription(frozenset("ab"), (TP("a", 0),), 1), "m1": MemberSubscription(frozenset("a"))}
    # Filling leaves m0 with a0, a2, b0 and m1 with a1; the move takes the new a2, not the owned a0.
    assert STICKY.assign(members, {"a": 3, "b": 1}) == {"m0": [TP("a", 0), TP("b", 0)], "m1": [TP("a", 1), TP("a", 2)]}


def test_sticky_resolves_double_claims_by_generation_then_member_id() -> None:
    members = {
        "m1": MemberSubscription(frozenset("a"), (TP("a", 0),), 1),
        "m2": MemberSubscription(frozenset("a"), (TP("a", 0),), 2),
        "m3": MemberSubscription(frozenset("a"), (TP("a", 1),), 2),
        "m4": MemberSubscription(frozenset("a"), (TP("a", 1),), 2),
    }
    assert previous_owners(members, {TP("a", 0), TP("a", 1)}) == {TP("a", 0): "m2", TP("a", 1): "m3"}


def test_sticky_drops_claims_on_unsubscribed_or_missing_partitions() -> None:
    members = {
        "m1": MemberSubscription(frozenset("b"), (TP("a", 0), TP("z", 0), TP("b", 9)), 1),
        "m2": MemberSubscription(frozenset("a")),
    }
    # m1 unsubscribed from a but still owns a0: m2 gets it only after m1 revokes it.
    assert STICKY.assign(members, {"a": 1, "b": 1}) == {"m1": [TP("b", 0)], "m2": []}


def test_consumer_protocol_round_trip_and_rejects_garbage() -> None:
    sub = MemberSubscription(frozenset({"b", "a"}), (TP("a", 1), TP("a", 0)), 7)
    data = encode_subscription(sub)
    assert decode_subscription(data) == MemberSubscription(frozenset({"a", "b"}), (TP("a", 0), TP("a", 1)), 7)
    assert encode_subscription(sub) == data
    got = decode_assignment(encode_assignment([TP("b", 0)], b"\x00\xff"))
    assert got.partitions == (TP("b", 0),) and got.user_data == b"\x00\xff"
    assert decode_assignment(b"").partitions == ()
    for bad in (b"\xff", b"[]", b'{"v":9}', b'{"v":0,"topics":"a"}', b'{"v":0,"topics":[],"owned":[["a","1"]]}'):
        with pytest.raises(ValueError):
            decode_subscription(bad)


# -- properties --

partition_counts = st.dictionaries(st.sampled_from(TOPICS), st.integers(0, 7), min_size=1)
member_ids = st.lists(st.sampled_from([f"m{i}" for i in range(7)]), min_size=1, max_size=7, unique=True)
topic_sets = st.frozensets(st.sampled_from((*TOPICS, "x")), min_size=1)


@st.composite
def groups(draw: st.DrawFn, identical: bool = False, with_owned: bool = True) -> tuple[Members, dict[str, int]]:
    """Members with subscriptions and a previous assignment (disjoint claims), and partition counts."""
    counts_ = draw(partition_counts)
    ids = draw(member_ids)
    shared = draw(topic_sets)
    topics = {m: shared if identical else draw(topic_sets) for m in ids}
    owned: dict[str, list[TopicPartition]] = {m: [] for m in ids}
    if with_owned:
        universe = [TP(t, p) for t in (*TOPICS, "z") for p in range(9)]
        for tp in draw(st.lists(st.sampled_from(universe), unique=True, max_size=25)):
            owner = draw(st.sampled_from(ids))
            owned[owner].append(tp)
    generation = draw(st.integers(0, 5))
    return {m: MemberSubscription(topics[m], tuple(owned[m]), generation) for m in ids}, counts_


def check_valid(members: Mapping[str, MemberSubscription], counts_: Mapping[str, int], out: Assignment) -> set[TP]:
    """Each partition at most once, only to subscribers, every member present; returns the assigned set."""
    assert sorted(out) == sorted(members)
    given_out = [tp for held in out.values() for tp in held]
    assert len(given_out) == len(set(given_out))
    wanted = set(subscribed_partitions(members, counts_))
    assert set(given_out) <= wanted
    for member, held in out.items():
        assert all(tp.topic in members[member].topics for tp in held)
    return set(given_out)


def settle(members: Members, counts_: Mapping[str, int], rounds: int) -> tuple[Assignment, int]:
    """Run cooperative rebalances (owners revoke what they lost) until nothing is withheld."""
    generation = max((s.generation for s in members.values()), default=0)
    for n in range(1, rounds + 1):
        out = STICKY.assign(members, counts_)
        check_valid(members, counts_, out)
        if set(subscribed_partitions(members, counts_)) == {tp for held in out.values() for tp in held}:
            return out, n
        generation += 1
        members = {m: MemberSubscription(s.topics, tuple(out[m]), generation) for m, s in members.items()}
    raise AssertionError(f"cooperative-sticky did not settle in {rounds} rebalances")


def locally_balanced(members: Members, out: Assignment) -> bool:
    return not any(
        len(out[other]) <= len(held) - 2
        for member, held in out.items()
        for tp in held
        for other in out
        if tp.topic in members[other].topics
    )


@settings(max_examples=200, deadline=None)
@given(groups(with_owned=False), st.sampled_from(["range", "roundrobin"]))
def test_eager_assignors_assign_every_partition_once_to_a_subscriber(
    group: tuple[Members, dict[str, int]], name: str
) -> None:
    members, counts_ = group
    out = ASSIGNORS[name].assign(members, counts_)
    assert check_valid(members, counts_, out) == set(subscribed_partitions(members, counts_))
    assert ASSIGNORS[name].assign(members, counts_) == out  # deterministic


@settings(max_examples=150, deadline=None)
@given(groups(with_owned=False))
def test_range_is_balanced_per_topic(group: tuple[Members, dict[str, int]]) -> None:
    members, counts_ = group
    out = RangeAssignor().assign(members, counts_)
    for topic in counts_:
        per_member = [sum(tp.topic == topic for tp in out[m]) for m in members if topic in members[m].topics]
        assert not per_member or max(per_member) - min(per_member) <= 1


@settings(max_examples=150, deadline=None)
@given(groups(identical=True, with_owned=False))
def test_roundrobin_is_balanced_with_identical_subscriptions(group: tuple[Members, dict[str, int]]) -> None:
    members, counts_ = group
    out = RoundRobinAssignor().assign(members, counts_)
    assert max(counts(out)) - min(counts(out)) <= 1


@settings(max_examples=300, deadline=None)
@given(groups())
def test_sticky_never_hands_a_claimed_partition_to_a_new_owner(group: tuple[Members, dict[str, int]]) -> None:
    members, counts_ = group
    out = STICKY.assign(members, counts_)
    assigned = check_valid(members, counts_, out)
    owners = previous_owners(members, set(subscribed_partitions(members, counts_)))
    for member, held in out.items():
        for tp in held:
            assert owners.get(tp, member) == member, f"{tp} moved from {owners[tp]} to {member} in one generation"
    for tp in set(subscribed_partitions(members, counts_)) - assigned:
        assert tp in owners  # only partitions waiting for their owner to revoke are left out


@settings(max_examples=300, deadline=None)
@given(groups(identical=True))
def test_sticky_identical_subscriptions_settle_in_two_rebalances_balanced_moving_the_minimum(
    group: tuple[Members, dict[str, int]],
) -> None:
    members, counts_ = group
    first = STICKY.assign(members, counts_)
    final, rounds = settle(members, counts_, rounds=2)
    assert rounds <= 2
    assert max(counts(final)) - min(counts(final)) <= 1
    # Stickiness: owned partitions that move are exactly as many as balance needs.
    total = len(subscribed_partitions(members, counts_))
    share, extra = divmod(total, len(members))
    owners = previous_owners(members, set(subscribed_partitions(members, counts_)))
    owned_counts = sorted((sum(1 for o in owners.values() if o == m) for m in members), reverse=True)
    caps = [share + 1] * extra + [share] * (len(members) - extra)
    needed = sum(max(0, o - cap) for o, cap in zip(owned_counts, caps, strict=True))
    kept = sum(1 for tp, owner in owners.items() if tp in final[owner])
    assert len(owners) - kept == needed
    # A member that gives up a partition never receives a new one in the same rebalance.
    for member, held in first.items():
        lost = any(owner == member and tp not in held for tp, owner in owners.items())
        gained = any(owners.get(tp) != member for tp in held)
        assert not (lost and gained)


@settings(max_examples=200, deadline=None)
@given(groups())
def test_sticky_settles_to_a_balanced_fixpoint_with_any_subscriptions(group: tuple[Members, dict[str, int]]) -> None:
    members, counts_ = group
    final, _ = settle(members, counts_, rounds=8)
    assert locally_balanced(members, final)
    again = {m: MemberSubscription(s.topics, tuple(final[m]), 99) for m, s in members.items()}
    assert STICKY.assign(again, counts_) == final  # nothing moves once settled


@pytest.mark.parametrize(
    "data",
    [
        b"[" * 100_000 + b"]" * 100_000,  # RecursionError inside json
        b'{"v":0,"topics":' + b"[" * 100_000 + b"}",
        b'{"v":' + b"9" * 5000 + b"}",  # longer than int_max_str_digits
        b'{"v":0,"topics":["\xff"]}',  # not UTF-8
    ],
)
def test_json_nested_too_deep_or_too_long_is_value_error_in_every_json_decoder(data: bytes) -> None:
    """Found by tests/test_fuzz_decoders.py: ``load_versioned`` (the consumer protocol, the offsets
    log, the transaction log) let json's RecursionError through on deeply nested arrays."""
    for decode in (
        decode_subscription,
        decode_assignment,
        lambda raw: decode_group_record(raw, None),
        lambda raw: decode_txn_record(raw, raw),
    ):
        with pytest.raises(ValueError, match="is not JSON"):
            decode(data)
