"""Group membership transitions: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and the timeouts.

Each test drives the pure GroupCoordinator through one rule of
coordinator/groups/membership.py and checks the answers, the state, the
records written and (``check_invariants``) that replaying the log gives the
same persisted state.
"""

from __future__ import annotations

from coordinator.groups import GroupConfig, GroupMetadataKey, GroupState, decode_record
from ketch.errors import ErrorCode
from tests.test_groups_support import FAST, Driver, check_invariants

E = ErrorCode


def test_first_member_joins_leads_and_becomes_stable_on_its_sync() -> None:
    d = Driver()
    join = d.join_answer(d.join("g"))
    assert (join.error, join.generation, join.leader, join.member_id) == (E.NONE, 1, "member-1", "member-1")
    assert join.protocol == "range" and join.members == (("member-1", b"sub:a"),)
    assert d.state("g") is GroupState.COMPLETING_REBALANCE and d.log == []
    sync = d.sync_answer(d.sync("g", "member-1", 1, {"member-1": b"a-0"}))
    assert (sync.error, sync.protocol, sync.assignment) == (E.NONE, "range", b"a-0")
    assert d.state("g") is GroupState.STABLE
    [(key, value)] = d.log
    record = decode_record(key, value)
    assert record.key == GroupMetadataKey("g") and record.value is not None
    check_invariants(d)


def test_initial_rebalance_delay_collects_members_then_answers_all() -> None:
    d = Driver(GroupConfig(min_session_timeout_ms=10, initial_rebalance_delay_ms=1500))
    first, second = d.join("g"), d.join("g")
    assert first not in d.answers and second not in d.answers  # parked
    assert d.state("g") is GroupState.PREPARING_REBALANCE
    d.tick(1499)
    assert first not in d.answers
    d.tick(1)
    leader, follower = d.join_answer(first), d.join_answer(second)
    assert leader.generation == follower.generation == 1 and leader.leader == follower.leader == "member-1"
    assert [m for m, _ in leader.members] == ["member-1", "member-2"] and follower.members == ()
    check_invariants(d)


def test_follower_rejoin_in_stable_gets_current_generation_but_leader_rejoin_rebalances() -> None:
    d = Driver()
    (leader, gen), (follower, _) = d.stable_group("g", 2)
    again = d.join_answer(d.join("g", follower))
    assert again.generation == gen and d.state("g") is GroupState.STABLE
    parked = d.join("g", leader)
    assert parked not in d.answers and d.state("g") is GroupState.PREPARING_REBALANCE
    assert d.heartbeat("g", follower, gen) == E.REBALANCE_IN_PROGRESS
    d.join("g", follower)
    assert d.join_answer(parked).generation == gen + 1
    check_invariants(d)


def test_changed_protocols_rebalance_and_unknown_or_mismatched_joins_are_refused() -> None:
    d = Driver()
    (leader, _gen), (follower, _) = d.stable_group("g", 2)
    d.join("g", follower, protocols=(("roundrobin", b"sub:ab"),))
    assert d.state("g") is GroupState.PREPARING_REBALANCE
    d.join("g", leader)
    assert d.state("g") is GroupState.COMPLETING_REBALANCE
    assert d.coordinator.describe_group("g").protocol == "roundrobin"  # the only one both support
    assert d.join_answer(d.join("g", "nobody")).error == E.UNKNOWN_MEMBER_ID
    assert d.join_answer(d.join("g", protocol_type="connect")).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert d.join_answer(d.join("g", protocols=(("sticky", b""),))).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert d.join_answer(d.join("g", session_ms=1)).error == E.INVALID_SESSION_TIMEOUT
    assert d.join_answer(d.join("")).error == E.INVALID_GROUP_ID
    assert d.join_answer(d.join("h", protocols=())).error == E.INCONSISTENT_GROUP_PROTOCOL
    assert "h" not in d.coordinator.groups  # a refused join leaves nothing behind
    check_invariants(d)


def test_protocol_with_most_first_choice_votes_wins() -> None:
    d = Driver(GroupConfig(min_session_timeout_ms=10, initial_rebalance_delay_ms=100))
    d.join("g", protocols=(("range", b""), ("roundrobin", b"")))
    d.join("g", protocols=(("roundrobin", b""), ("range", b"")))
    d.join("g", protocols=(("roundrobin", b""), ("range", b"")))
    d.tick(100)
    assert d.coordinator.describe_group("g").protocol == "roundrobin"


def test_rebalance_timeout_completes_the_join_without_members_that_did_not_rejoin() -> None:
    d = Driver()
    (leader, _), (follower, gen) = d.stable_group("g", 2)
    newcomer = d.join("g", rebalance_ms=500)
    d.join("g", leader)
    for _ in range(4):  # the follower keeps its session alive but does not rejoin
        d.tick(499)
        assert d.heartbeat("g", follower, gen) == E.REBALANCE_IN_PROGRESS
    d.tick(3)  # 1999 ms: the largest rebalance timeout is 2000 ms
    assert newcomer not in d.answers
    d.tick(1)
    answer = d.join_answer(newcomer)
    assert answer.error == E.NONE and answer.generation == gen + 1
    assert follower not in {m.member_id for m in d.coordinator.describe_group("g").members}
    assert d.heartbeat("g", follower, gen) == E.UNKNOWN_MEMBER_ID
    check_invariants(d)


def test_session_expiry_rebalances_and_the_last_expiry_empties_the_group() -> None:
    d = Driver()
    (leader, gen), (follower, _) = d.stable_group("g", 2)
    d.tick(600)
    assert d.heartbeat("g", leader, gen) == E.NONE
    assert d.tick(400) == (("g", follower),)  # 1000 ms session timeout
    assert d.state("g") is GroupState.PREPARING_REBALANCE
    assert d.heartbeat("g", leader, gen) == E.REBALANCE_IN_PROGRESS
    assert d.tick(1000) == (("g", leader),)
    assert d.state("g") is GroupState.EMPTY and d.coordinator.describe_group("g").generation == gen + 1
    check_invariants(d)  # the Empty group record is in the log


def test_follower_sync_waits_for_the_leader_and_sync_errors() -> None:
    d = Driver()
    first = d.join_answer(d.join("g"))
    second = d.join("g")
    assert d.sync_answer(d.sync("g", first.member_id, 1)).error == E.REBALANCE_IN_PROGRESS  # preparing
    leader = d.join_answer(d.join("g", first.member_id))
    follower = d.join_answer(second)
    waiting = d.sync("g", follower.member_id, 2)
    assert waiting not in d.answers
    assert d.sync_answer(d.sync("g", follower.member_id, 1)).error == E.ILLEGAL_GENERATION
    assert waiting not in d.answers  # the stale sync does not disturb the parked one
    assert d.sync_answer(d.sync("g", "nobody", 2)).error == E.UNKNOWN_MEMBER_ID
    assert d.sync_answer(d.sync("missing", "nobody", 2)).error == E.UNKNOWN_MEMBER_ID
    d.sync("g", leader.member_id, 2, {follower.member_id: b"f", "stranger": b"x"})
    assert d.sync_answer(waiting).assignment == b"f"
    late = d.sync_answer(d.sync("g", follower.member_id, 2))  # Stable: answered at once
    assert late.assignment == b"f"
    assert {m.member_id: m.assignment for m in d.coordinator.describe_group("g").members} == {
        leader.member_id: b"",
        follower.member_id: b"f",
    }
    check_invariants(d)


def test_leave_rebalances_and_answers_the_leavers_parked_requests() -> None:
    d = Driver()
    (leader, gen), (follower, _) = d.stable_group("g", 2)
    parked = d.join("g", leader)
    assert d.leave("g", leader) == E.NONE
    assert d.join_answer(parked).error == E.UNKNOWN_MEMBER_ID
    assert d.leave("g", leader) == E.UNKNOWN_MEMBER_ID
    assert d.leave("missing", leader) == E.UNKNOWN_MEMBER_ID
    rejoin = d.join_answer(d.join("g", follower))
    assert rejoin.leader == follower and rejoin.generation == gen + 1
    check_invariants(d)


def test_leaving_during_completing_rebalance_bounces_parked_syncs() -> None:
    d = Driver()
    (leader, _), (follower, _gen) = d.stable_group("g", 2)
    d.join("g", leader)
    answer = d.join_answer(d.join("g", follower))
    waiting = d.sync("g", follower, answer.generation)
    d.leave("g", leader)
    assert d.sync_answer(waiting).error == E.REBALANCE_IN_PROGRESS
    assert d.state("g") is GroupState.PREPARING_REBALANCE
    check_invariants(d)


def test_members_that_never_sync_are_removed_at_the_sync_deadline() -> None:
    d = Driver()
    (leader, _), (follower, gen) = d.stable_group("g", 2)
    d.join("g", leader)
    d.join("g", follower)
    d.sync("g", leader, gen + 1, {leader: b"l", follower: b"f"})
    for _ in range(3):  # the follower heartbeats but never sends SyncGroup
        assert d.tick(500) == ()
        d.heartbeat("g", follower, gen + 1)
        d.heartbeat("g", leader, gen + 1)
    assert d.tick(500) == (("g", follower),)  # the rebalance timeout (2000 ms) after the join completed
    assert d.state("g") is GroupState.PREPARING_REBALANCE
    check_invariants(d)


def test_a_newer_join_from_the_same_member_supersedes_the_parked_one() -> None:
    d = Driver()
    (leader, _), (follower, _) = d.stable_group("g", 2)
    old = d.join("g", leader)
    new = d.join("g", leader)
    assert d.join_answer(old).error == E.REBALANCE_IN_PROGRESS
    d.join("g", follower)
    assert d.join_answer(new).error == E.NONE
    check_invariants(d)


def test_heartbeat_fencing() -> None:
    d = Driver()
    [(member, gen)] = d.stable_group("g", 1)
    assert d.heartbeat("g", member, gen) == E.NONE
    assert d.heartbeat("g", member, gen - 1) == E.ILLEGAL_GENERATION
    assert d.heartbeat("g", "nobody", gen) == E.UNKNOWN_MEMBER_ID
    assert d.heartbeat("missing", member, gen) == E.UNKNOWN_MEMBER_ID
    assert d.heartbeat("", member, gen) == E.INVALID_GROUP_ID


def test_parked_join_keeps_the_session_alive_until_the_rebalance_timeout() -> None:
    d = Driver(GroupConfig(min_session_timeout_ms=10, initial_rebalance_delay_ms=0))
    (leader, _), (follower, _) = d.stable_group("g", 2)
    parked = d.join("g", leader, session_ms=100, rebalance_ms=5000)
    assert d.tick(4000) == (("g", follower),)  # follower's session (1000 ms) ran out; the parked leader is alive
    assert d.join_answer(parked).error == E.NONE  # and the join completed without the follower
    assert FAST.initial_rebalance_delay_ms == 0
    check_invariants(d)
