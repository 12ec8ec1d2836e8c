"""Unit and property tests of the pure Raft core (coordinator/raft).

The ``Net`` helper is a minimal driver: it keeps the Ready contract (persist, then
send, then apply) and delivers messages in the order a test asks for. Properties
checked with Hypothesis over random schedules of ticks, deliveries, drops,
duplicates, proposals, crashes and restarts:
- at most one leader per term;
- a node grants at most one vote per term, even across crashes (the vote is durable);
- every node's committed entries agree with every other node's;
- a follower fed any mix of duplicated and reordered appends cut from one leader log
  ends up with a prefix of that log and never loses a committed entry.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.raft import (
    NONE,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    PersistedState,
    RaftNode,
    Role,
    Snapshot,
    TransferInProgress,
    Voter,
)
from coordinator.raft.config import SplitMix64
from coordinator.raft.log import RaftLog
from coordinator.raft.progress import Progress, ProgressState
from tests.raft_net import Net

VOTERS_123 = (Voter(1), Voter(2), Voter(3))


def elected(n: int = 3, **opts: Any) -> Net:
    net = Net(n, **opts)
    net.node(1).campaign()
    net.deliver()
    assert net.leader() == 1
    return net


# -- configuration and determinism ---------------------------------------------------------


def test_config_is_validated() -> None:
    with pytest.raises(ValueError):
        Config(1, ())
    with pytest.raises(ValueError):
        Config(1, (1, 1, 2))
    with pytest.raises(ValueError):
        Config(1, (1,), election_timeout_ticks=3, heartbeat_ticks=3)
    with pytest.raises(ValueError):
        Config(0, (0, 1))


def test_randomized_timeout_is_in_range_and_seeded() -> None:
    draws = set()
    for seed in range(200):
        node = RaftNode(Config(1, (1, 2, 3), election_timeout_ticks=10, seed=seed))
        assert 10 <= node.randomized_timeout < 20
        draws.add(node.randomized_timeout)
    assert len(draws) == 10
    a, b = SplitMix64(42), SplitMix64(42)
    assert [a.next() for _ in range(5)] == [b.next() for _ in range(5)]


# -- elections -------------------------------------------------------------------------------


def test_single_voter_elects_itself_and_commits_alone() -> None:
    net = Net(1)
    node = net.node(1)
    for _ in range(20):
        node.tick()
    net.process()
    assert node.role == Role.LEADER and node.term == 1
    index = node.propose(b"x")
    node.read_index(b"r")
    rd = node.ready()
    assert rd is not None
    assert [e.data for e in rd.committed_entries] == [b"", b"x"][-len(rd.committed_entries) :]
    assert rd.read_states[0].context == b"r"
    assert rd.committed_entries[-1].index == index == 2


def test_election_with_prevote_and_noop() -> None:
    net = elected()
    leader = net.node(1)
    assert leader.term == 1
    assert all(net.node(i).leader == 1 for i in (2, 3))
    assert net.applied[1][0].kind == EntryKind.NOOP
    assert [m.term for m in net.sent if m.type == MessageType.PRE_VOTE] == [1, 1]


def test_a_node_grants_one_vote_per_term_and_keeps_it_across_restart() -> None:
    net = Net(3, pre_vote=False)
    net.node(1).campaign()
    net.process()
    net.node(2).step(net.flight[0])  # 1's vote request to 2
    net.process()
    assert net.node(2).vote == 1
    net.crash(2)
    net.restart(2)
    assert (net.node(2).term, net.node(2).vote) == (1, 1)
    net.node(2).step(Message(MessageType.VOTE, 3, 2, 1, log_term=0, index=0))
    net.process()
    answer = net.sent[-1]
    assert answer.type == MessageType.VOTE_RESP and answer.to == 3 and answer.reject


def test_vote_refused_to_a_stale_log() -> None:
    net = elected(pre_vote=False)
    net.node(1).propose(b"x")
    net.deliver()
    voter = net.node(2)
    voter.step(Message(MessageType.VOTE, 3, 2, 5, log_term=1, index=1, context=b"transfer"))
    net.process()
    assert net.sent[-1].reject and voter.term == 5 and voter.vote == NONE


def test_prevote_changes_no_term_and_is_ignored_in_lease() -> None:
    net = elected()
    follower = net.node(2)
    follower.step(Message(MessageType.PRE_VOTE, 3, 2, 9, log_term=1, index=99))
    follower.step(Message(MessageType.VOTE, 3, 2, 9, log_term=1, index=99))
    net.process()
    assert follower.term == 1 and not [m for m in net.flight if m.to == 3]
    for _ in range(10):
        follower.tick()  # out of the lease now; stay below the randomized timeout
    follower.election_elapsed = 10
    follower.step(Message(MessageType.PRE_VOTE, 3, 2, 9, log_term=1, index=99))
    net.process()
    grant = net.sent[-1]
    assert grant.type == MessageType.PRE_VOTE_RESP and not grant.reject and grant.term == 9
    assert follower.term == 1 and follower.vote == 1


def test_stale_leader_learns_the_new_term() -> None:
    net = elected()
    follower = net.node(2)
    follower.step(Message(MessageType.APP, 3, 2, 7))
    net.process()
    old = Message(MessageType.HEARTBEAT, 1, 2, 1)
    follower.step(old)
    net.process()
    reply = net.sent[-1]
    assert reply.type == MessageType.APP_RESP and reply.term == 7 and reply.to == 1


def test_check_quorum_steps_down_an_isolated_leader() -> None:
    net = elected()
    leader = net.node(1)
    for _ in range(25):
        leader.tick()
    assert leader.role == Role.FOLLOWER and leader.leader == NONE and leader.term == 1
    with pytest.raises(NotLeader):
        leader.propose(b"x")


# -- replication -----------------------------------------------------------------------------


def test_proposals_are_batched_and_pipelined() -> None:
    net = elected(max_entries_per_msg=4, max_inflight_msgs=2)
    leader = net.node(1)
    for k in range(10):
        leader.propose(b"%d" % k)
    rd = leader.ready()
    assert rd is not None
    apps = [m for m in rd.messages if m.type == MessageType.APP and m.to == 2]
    assert [len(m.entries) for m in apps] == [4, 4]  # two in flight, then paused
    leader.advance(rd)
    net.flight += rd.messages
    net.deliver()
    assert [e.data for e in net.applied[3][1:]] == [b"%d" % k for k in range(10)]


def test_follower_rejects_with_a_hint_and_leader_backs_up() -> None:
    net = elected()
    leader = net.node(1)
    net.crash(3)
    for k in range(5):
        leader.propose(b"%d" % k)
    net.deliver()
    net.restart(3)
    for _ in range(2):
        leader.tick()
    net.deliver()
    rejects = [m for m in net.sent if m.type == MessageType.APP_RESP and m.reject]
    assert rejects and rejects[0].frm == 3 and rejects[0].reject_hint == 1
    assert net.node(3).log.last_index == leader.log.last_index


def test_duplicated_messages_are_harmless() -> None:
    net = elected()
    net.node(1).propose(b"x")
    for _ in range(10):
        net.process()
        if not net.flight:
            break
        batch, net.flight = net.flight, []
        for m in batch + batch[::-1]:
            net.node(m.to).step(m)
    assert [[e.data for e in net.applied[i]] for i in (1, 2, 3)] == [[b"", b"x"]] * 3


def test_snapshot_sent_when_entries_are_compacted() -> None:
    net = elected()
    leader = net.node(1)
    net.crash(3)
    for k in range(4):
        leader.propose(b"%d" % k)
    net.deliver()
    snap = leader.compact(leader.log.applied, b"state")
    assert snap.index == 5 and leader.log.first_index == 6
    net.restart(3)
    leader.tick()
    net.deliver()
    assert net.disk[3].snapshot == snap
    assert net.node(3).log.committed == 5 and net.node(3).log.applied == 5
    assert any(m.type == MessageType.SNAP for m in net.sent)


def test_stale_or_matching_snapshot_only_moves_commit() -> None:
    net = elected()
    net.node(1).propose(b"x")
    net.deliver()
    follower = net.node(2)
    old = Snapshot(1, 1, VOTERS_123, b"old")
    follower.step(Message(MessageType.SNAP, 1, 2, 1, snapshot=old))
    net.process()
    assert follower.log.pending_snapshot is None and net.sent[-1].index == 2


def test_leadership_transfer() -> None:
    net = elected()
    leader = net.node(1)
    with pytest.raises(NotLeader) as info:
        net.node(2).transfer_leadership(3)
    assert info.value.leader == 1
    with pytest.raises(ValueError):
        leader.transfer_leadership(9)
    leader.transfer_leadership(3)
    with pytest.raises(TransferInProgress):
        leader.propose(b"x")
    net.deliver()
    assert net.leader() == 3 and net.node(3).term == 2


def test_read_index_at_follower_is_forwarded() -> None:
    net = Net(3)
    with pytest.raises(NotLeader):
        net.node(2).read_index(b"r0")
    net.node(1).campaign()
    net.deliver()
    net.node(2).read_index(b"r1")
    net.deliver()
    assert [(s.context, s.index) for s in net.reads[2]] == [(b"r1", 1)]
    assert [m.type for m in net.sent if m.context == b"r1"][:2] == [MessageType.READ_INDEX, MessageType.HEARTBEAT]


# -- the Ready contract and restart ----------------------------------------------------------


def test_ready_contract() -> None:
    node = RaftNode(Config(1, (1, 2, 3)))
    assert node.ready() is None
    node.campaign()
    rd = node.ready()
    assert rd is not None and rd.soft_state.role == Role.PRE_CANDIDATE
    assert rd.hard_state is None and not rd.must_sync  # pre-vote persists nothing
    with pytest.raises(RuntimeError):
        node.ready()
    node.advance(rd)
    with pytest.raises(RuntimeError):
        node.advance(rd)
    node.step(Message(MessageType.PRE_VOTE_RESP, 2, 1, 1))
    rd = node.ready()
    assert rd is not None and rd.hard_state == HardState(1, 1, 0) and rd.must_sync
    assert all(m.type == MessageType.VOTE for m in rd.messages)
    node.advance(rd)
    assert node.ready() is None


def test_conflicting_entries_restart_from_the_conflict_index() -> None:
    node = RaftNode(Config(2, (1, 2, 3)))
    node.step(Message(MessageType.APP, 1, 2, 1, entries=(Entry(1, 1), Entry(1, 2), Entry(1, 3))))
    rd = node.ready()
    assert rd is not None
    node.advance(rd)
    node.step(Message(MessageType.APP, 3, 2, 2, log_term=1, index=1, entries=(Entry(2, 2),), commit=2))
    rd = node.ready()
    assert rd is not None
    assert [(e.term, e.index) for e in rd.entries] == [(2, 2)]
    assert [(e.term, e.index) for e in rd.committed_entries] == [(1, 1), (2, 2)]
    assert node.log.last_index == 2


def test_restart_resumes_term_vote_commit_and_applies_once() -> None:
    entries = tuple(Entry(1, i, b"%d" % i) for i in range(4, 8))
    state = PersistedState(HardState(3, 2, 6), Snapshot(3, 1, VOTERS_123, b"s"), entries)
    node = RaftNode(Config(1, (1, 2, 3)), state)
    assert (node.role, node.term, node.vote, node.log.committed) == (Role.FOLLOWER, 3, 2, 6)
    rd = node.ready()
    assert rd is not None and [e.index for e in rd.committed_entries] == [4, 5, 6]
    assert rd.hard_state is None and not rd.entries
    again = RaftNode(Config(1, (1, 2, 3)), state, applied=6)
    assert again.ready() is None
    with pytest.raises(ValueError):
        RaftNode(Config(1, (1, 2, 3)), state, applied=7)


# -- the log and progress --------------------------------------------------------------------


def test_raft_log_rules() -> None:
    log = RaftLog(Snapshot(2, 1), [Entry(1, 3), Entry(2, 4), Entry(2, 5), Entry(3, 6)], committed=4)
    assert (log.term(1), log.term(2), log.term(6), log.term(7)) == (None, 1, 3, None)
    assert log.find_conflict_by_term(6, 2) == (5, 2)
    assert log.find_conflict_by_term(6, 0) == (1, 0)  # compacted: unknown term, stop
    assert log.maybe_append(4, 2, 9, [Entry(2, 5)]) == 5 and log.last_index == 6  # no truncation
    assert log.committed == 5
    with pytest.raises(AssertionError):
        log.append([Entry(9, 5)])
    log.applied = 5
    with pytest.raises(ValueError):
        log.compact(Snapshot(6, 3))
    log.compact(Snapshot(5, 2))
    assert log.first_index == 6 and log.term(5) == 2


def test_progress_ignores_stale_rejections() -> None:
    pr = Progress(10, max_inflight=2)
    assert pr.maybe_decrease(rejected=5, hint=3) is False  # not the probe we sent
    pr.sent(9, 0)
    assert pr.is_paused()
    assert pr.maybe_decrease(rejected=9, hint=3) and pr.next == 4
    pr.maybe_update(6)
    pr.become_replicate()
    pr.sent(8, 2)
    pr.sent(10, 2)
    assert pr.state == ProgressState.REPLICATE and pr.is_paused()
    assert pr.maybe_decrease(rejected=6, hint=0) is False
    pr.free_acknowledged(8)
    assert not pr.is_paused()


# -- properties ------------------------------------------------------------------------------

_KINDS = ["deliver"] * 6 + ["flush"] * 3 + ["tick"] * 3 + ["propose"] * 3 + ["campaign", "drop", "dup", "crash"]
ACTIONS = st.lists(st.tuples(st.sampled_from(_KINDS), st.integers(0, 99)), min_size=60, max_size=250)


@settings(max_examples=300, deadline=None)
@given(ACTIONS, st.booleans())
def test_random_schedules_keep_election_safety(actions: list[tuple[str, int]], pre_vote: bool) -> None:
    net = Net(3, pre_vote=pre_vote, election_timeout_ticks=4, heartbeat_ticks=1)
    leaders: dict[int, int] = {}
    for action, k in actions:
        i = 1 + k % 3
        node = net.nodes[i]
        if action == "crash":
            if node is None:
                net.restart(i)
            else:
                net.crash(i)
        elif node is not None and action == "tick":
            node.tick()
        elif node is not None and action == "campaign":
            node.campaign()
        elif node is not None and action == "propose" and node.role == Role.LEADER:
            node.propose(b"%d" % k)
        elif action == "flush":
            net.deliver(rounds=1)
        elif net.flight and action in ("deliver", "drop", "dup"):
            m = net.flight.pop(k % len(net.flight))
            target = net.nodes[m.to]
            if action == "dup":
                net.flight.append(m)
            if action != "drop" and target is not None:
                target.step(m)
        net.process()
        for j, n in net.nodes.items():
            if n is not None and n.role == Role.LEADER:
                assert leaders.setdefault(n.term, j) == j, f"two leaders in term {n.term}"
    grants: dict[tuple[int, int], set[int]] = {}
    for m in net.sent:
        if m.type == MessageType.VOTE_RESP and not m.reject:
            grants.setdefault((m.frm, m.term), set()).add(m.to)
    assert all(len(c) == 1 for c in grants.values()), grants
    logs = [n.log for n in net.nodes.values() if n is not None]
    for a in logs:
        for b in logs:
            for index in range(max(a.first_index, b.first_index), min(a.committed, b.committed) + 1):
                assert a.term(index) == b.term(index)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 3), min_size=1, max_size=12), st.lists(st.tuples(st.integers(0, 11), st.integers(0, 4))))
def test_reordered_appends_build_a_prefix_of_the_leader_log(terms: list[int], cuts: list[tuple[int, int]]) -> None:
    terms.sort()
    leader = [Entry(t, i + 1) for i, t in enumerate(terms)]
    log = RaftLog()
    for start, size in cuts:
        start %= len(leader)
        prev_term = leader[start - 1].term if start else 0
        before = log.committed
        log.maybe_append(start, prev_term, len(leader), leader[start : start + size])
        assert log.committed >= before
        assert log.entries == leader[: log.last_index]
