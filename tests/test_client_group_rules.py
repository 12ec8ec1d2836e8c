"""The client's pure consumer-group rules (ketch/group_rules.py, re-exported by
ketch/aio/group_member.py): error → action, assignor selection, JoinGroup metadata, the
leader's assignment, assignment changes, topic matching. Hypothesis drives the leader's
assignment and whole cooperative rebalance sequences (no partition ever has two owners;
every partition has one once the group settles). The asyncio driver is tested in
test_client_group_member.py.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ketch.assignors import ASSIGNORS, RebalanceProtocol, decode_assignment, decode_subscription
from ketch.errors import ErrorCode
from ketch.group_rules import (
    Action,
    OffsetAndMetadata,
    action_for,
    apply_assignment,
    leader_assignments,
    malformed_members,
    match_topics,
    normalize_offsets,
    rebalance_protocol,
    resolve_assignors,
    subscription_protocols,
)
from ketch.records import TopicPartition

TP = TopicPartition


def test_error_actions() -> None:
    assert action_for(ErrorCode.NONE) is Action.OK
    for code in (
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
    ):
        assert action_for(code) is Action.FIND_COORDINATOR
    assert action_for(ErrorCode.REBALANCE_IN_PROGRESS) is Action.REJOIN
    assert action_for(ErrorCode.ILLEGAL_GENERATION) is Action.REJOIN
    assert action_for(ErrorCode.UNKNOWN_MEMBER_ID) is Action.RESET_MEMBER
    assert action_for(ErrorCode.NOT_ENOUGH_REPLICAS) is Action.RETRY
    for code in (ErrorCode.INCONSISTENT_GROUP_PROTOCOL, ErrorCode.INVALID_SESSION_TIMEOUT, ErrorCode.INVALID_GROUP_ID):
        assert action_for(code) is Action.FATAL


def test_assignor_names_and_protocol() -> None:
    assert [a.name for a in resolve_assignors(("range",))] == ["range"]
    assert [a.name for a in resolve_assignors("roundrobin, range")] == ["roundrobin", "range"]
    names = ["org.apache.kafka.clients.consumer.CooperativeStickyAssignor", "RangeAssignor", "range"]
    assert [a.name for a in resolve_assignors(names)] == ["cooperative-sticky", "range"]
    assert resolve_assignors(ASSIGNORS["roundrobin"])[0] is ASSIGNORS["roundrobin"]
    with pytest.raises(ValueError, match="unknown partition assignment strategy"):
        resolve_assignors("sticky-ish")
    with pytest.raises(ValueError):
        resolve_assignors([])
    assert rebalance_protocol(resolve_assignors("cooperative-sticky")) is RebalanceProtocol.COOPERATIVE
    assert rebalance_protocol(resolve_assignors("cooperative-sticky,range")) is RebalanceProtocol.EAGER


def test_join_metadata_claims_owned_partitions_only_when_cooperative() -> None:
    owned = [TP("t", 2), TP("t", 0)]
    eager = subscription_protocols(resolve_assignors("range,roundrobin"), ["t", "u"], owned, 4, RebalanceProtocol.EAGER)
    assert [name for name, _ in eager] == ["range", "roundrobin"]
    sub = decode_subscription(eager[0][1])
    assert sub.topics == {"t", "u"} and sub.owned == () and sub.generation == -1
    coop = subscription_protocols(
        resolve_assignors("cooperative-sticky"), ["t"], owned, 4, RebalanceProtocol.COOPERATIVE
    )
    sub = decode_subscription(coop[0][1])
    assert sub.owned == (("t", 0), ("t", 2)) and sub.generation == 4


def test_assignment_changes() -> None:
    eager = apply_assignment([], [TP("t", 0), TP("t", 1)], RebalanceProtocol.EAGER)
    assert eager.added == {TP("t", 0), TP("t", 1)} and not eager.revoked and not eager.rejoin
    coop = apply_assignment([TP("t", 0), TP("t", 1)], [TP("t", 1), TP("t", 2)], RebalanceProtocol.COOPERATIVE)
    assert coop.added == {TP("t", 2)} and coop.revoked == {TP("t", 0)} and coop.rejoin
    same = apply_assignment([TP("t", 1)], [TP("t", 1)], RebalanceProtocol.COOPERATIVE)
    assert not same.added and not same.revoked and not same.rejoin


def test_topic_matching_and_offsets() -> None:
    assert match_topics(["a", "b"], None, ["x"]) == {"a", "b"}
    pattern = re.compile(r"orders-.*")
    available = ["orders-eu", "orders-us", "xorders-eu", "__consumer_offsets", "orders"]
    assert match_topics([], pattern, available) == {"orders-eu", "orders-us"}
    assert match_topics([], re.compile(r".*"), available) == {"orders-eu", "orders-us", "xorders-eu", "orders"}
    got = normalize_offsets({("t", 0): 5, TP("t", 1): OffsetAndMetadata(7, "m")})
    assert got == {TP("t", 0): OffsetAndMetadata(5), TP("t", 1): OffsetAndMetadata(7, "m", -1)}
    with pytest.raises(ValueError):
        normalize_offsets({TP("t", 0): -1})


members_st = st.dictionaries(
    st.sampled_from([f"m{i}" for i in range(6)]),
    st.frozensets(st.sampled_from(["a", "b", "c"]), min_size=1),
    min_size=1,
)
counts_st = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(1, 7))


@settings(max_examples=150, deadline=None)
@given(members=members_st, counts=counts_st, name=st.sampled_from(["range", "roundrobin", "cooperative-sticky"]))
def test_leader_assigns_every_partition_once_to_a_subscriber(
    members: dict[str, frozenset[str]], counts: dict[str, int], name: str
) -> None:
    assignors = resolve_assignors(name)
    protocol = rebalance_protocol(assignors)
    join = [(m, subscription_protocols(assignors, topics, [], -1, protocol)[0][1]) for m, topics in members.items()]
    result = leader_assignments(ASSIGNORS[name], join, counts)
    assert set(result) == set(members)
    owner: dict[TopicPartition, str] = {}
    for member, data in result.items():
        for tp in decode_assignment(data).partitions:
            assert tp not in owner, f"{tp} assigned twice"
            assert tp.topic in members[member]
            owner[TP(*tp)] = member
    wanted = {TP(t, p) for t, n in counts.items() if any(t in s for s in members.values()) for p in range(n)}
    assert set(owner) == wanted


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(st.sets(st.sampled_from([f"m{i}" for i in range(5)]), min_size=1), min_size=1, max_size=5),
    partitions=st.integers(1, 9),
)
def test_cooperative_rebalances_never_double_own_and_settle(steps: list[set[str]], partitions: int) -> None:
    """Run the client side of KIP-429 over changing memberships: each member joins with what it owns,
    applies its assignment (revoke, then add) and rejoins while it revoked something."""
    assignors = resolve_assignors("cooperative-sticky")
    owned: dict[str, set[TopicPartition]] = {}
    generation = 0
    for members in steps:
        owned = {m: owned.get(m, set()) for m in members}  # members that left lost their partitions
        for _ in range(3):  # a change settles within two rebalances; a third must change nothing
            generation += 1
            join = [
                (
                    m,
                    subscription_protocols(assignors, ["t"], owned[m], generation - 1, RebalanceProtocol.COOPERATIVE)[
                        0
                    ][1],
                )
                for m in sorted(members)
            ]
            result = leader_assignments(assignors[0], join, {"t": partitions})
            rejoin = False
            for m in sorted(members):
                change = apply_assignment(
                    owned[m], decode_assignment(result[m]).partitions, RebalanceProtocol.COOPERATIVE
                )
                owned[m] = (owned[m] - change.revoked) | change.added
                rejoin |= change.rejoin
            everyone = [tp for tps in owned.values() for tp in tps]
            assert len(everyone) == len(set(everyone)), "a partition has two owners"
            if not rejoin:
                break
        assert not rejoin, "still revoking after three rebalances"
        assert {tp for tps in owned.values() for tp in tps} == {TP("t", p) for p in range(partitions)}
        sizes = [len(tps) for tps in owned.values()]
        assert max(sizes) - min(sizes) <= 1


def test_a_malformed_subscription_gets_nothing_and_is_named_for_the_log() -> None:
    good = subscription_protocols(resolve_assignors(["range"]), {"t"}, set(), -1, RebalanceProtocol.EAGER)[0][1]
    members = [("a", good), ("b", b"\xff not a subscription")]
    result = leader_assignments(ASSIGNORS["range"], members, {"t": 2})
    assert decode_assignment(result["b"]).partitions == ()
    assert len(decode_assignment(result["a"]).partitions) == 2
    assert malformed_members(members) == ["b"]
