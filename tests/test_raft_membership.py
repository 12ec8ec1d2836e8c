"""Unit tests of the Raft core's membership rules (coordinator/raft/membership.py, KIP-853).

Each test drives ``RaftNode`` instances by hand through ``Net``, the minimal driver of
tests/test_raft_core.py grown by what membership needs: every replica has a directory
id (``dir-<id>-<incarnation>``), ``wipe`` restarts one with an empty disk and a new
directory (a new replica under the same node id), and ids beyond the bootstrap
voters start as observers. What the tests show, rule by rule:

- changes: a caught-up observer is added and the quorum grows; a second change while
  one is uncommitted, a change before the leader committed in its term, adding a
  lagging or unknown replica, and removing the last voter are refused;
- the set in force: a CONF entry counts from the moment it is appended, on the leader
  and on a follower, and truncating it brings the old set back;
- a leader that removes itself leads (without counting itself) until the entry
  commits, then steps down and, as an observer, never campaigns;
- directories: the leader binds unbound voters in one CONF entry after its NOOP
  commits; a wiped replica neither votes for a candidate that names the old
  directory nor counts as a voter when it answers; it answers a leader's message to
  the old directory with OBSERVE, and with auto-join it is removed as the old replica
  and added back as the new one (two CONF entries);
- snapshots carry the voter set, and the codec round-trips voter sets (with the old
  id-only snapshot format decoding to unbound voters).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from coordinator.raft import (
    JOIN_CONTEXT,
    NONE,
    Config,
    Entry,
    EntryKind,
    HardState,
    MembershipChangeRefused,
    Message,
    MessageType,
    NotLeader,
    PersistedState,
    RaftNode,
    Role,
    Snapshot,
    Voter,
)
from coordinator.raft_codec import (
    entry_from_bytes,
    entry_to_bytes,
    message_from_pb,
    message_to_pb,
    snapshot_from_bytes,
    snapshot_from_pb,
    snapshot_to_bytes,
)
from ketch.api.v1 import raft_pb2
from tests import raft_net


class Net(raft_net.Net):
    """Bootstrap voters 1..n plus ``observers``, each with a disk and a directory; messages move by hand.

    ``bound_voters=False`` gives the bootstrap voters no directory ("" matches any), so
    no binding entry appears; observers always have one (a voter is added with it).
    """

    def __init__(self, n: int = 3, observers: tuple[int, ...] = (), bound_voters: bool = True, **opts: object) -> None:
        self.bound_voters = bound_voters
        super().__init__(n, observers=observers, **opts)

    def directory(self, i: int) -> str:
        if i in self.voters and not self.bound_voters:
            return ""
        return f"dir-{i}-{self.incarnation[i]}"

    def conf_entries(self, i: int) -> list[Entry]:
        return [e for e in self.node(i).log.entries if e.kind == EntryKind.CONF]


def elected(n: int = 3, observers: tuple[int, ...] = (), bound_voters: bool = True, **opts: object) -> Net:
    """Node 1 leads; with bound voters, its binding entry is committed too."""
    net = Net(n, observers, bound_voters, **opts)
    net.node(1).campaign()
    net.deliver()
    assert net.leader() == 1
    net.tick(1)
    return net


def observed(net: Net, i: int) -> None:
    """Observer ``i`` times out, sends OBSERVE, and the leader brings it up to date."""
    net.tick(i, times=2 * net.node(i).config.election_timeout_ticks)
    net.deliver()


def voter_ids(node: RaftNode) -> list[int]:
    return [v.id for v in node.voters]


# -- single-server changes ---------------------------------------------------------------------


def test_leader_adds_a_caught_up_observer_and_the_quorum_grows() -> None:
    net = elected(observers=(4,))
    leader = net.node(1)
    assert not net.node(4).is_voter and leader.quorum == 2
    observed(net, 4)
    assert not [m for m in net.sent if m.frm == 4 and m.type in (MessageType.PRE_VOTE, MessageType.VOTE)]
    assert leader.status().observers == (4,)
    assert net.node(4).log.last_index == leader.log.last_index

    index = leader.add_voter(4)
    assert voter_ids(leader) == [1, 2, 3, 4] and leader.quorum == 3
    assert leader.voters[-1] == Voter(4, "dir-4-0")
    with pytest.raises(MembershipChangeRefused, match="not committed yet"):
        leader.remove_voter(2)
    net.deliver()
    assert leader.log.committed >= index
    assert net.node(4).is_voter and all(voter_ids(net.node(i)) == [1, 2, 3, 4] for i in (2, 3, 4))

    # Three of four voters are a quorum now: 1 and 4 alone no longer commit.
    net.crash(2)
    net.crash(3)
    x = leader.propose(b"x")
    net.deliver()
    assert leader.log.committed < x
    net.restart(3)
    net.tick(1)
    assert leader.log.committed >= x


def test_change_refused_before_the_leader_commits_in_its_term() -> None:
    net = Net(3, observers=(4,), bound_voters=False, pre_vote=False)
    net.node(1).campaign()
    net.deliver(rounds=2)  # votes out and back: 1 leads, its NOOP is still in flight
    leader = net.node(1)
    assert leader.role == Role.LEADER and leader.log.committed == 0
    with pytest.raises(MembershipChangeRefused, match="not committed an entry of its term"):
        leader.remove_voter(3)
    net.deliver()
    leader.remove_voter(3)  # the NOOP committed: now it may


def test_lagging_unknown_and_existing_replicas_are_not_added() -> None:
    net = elected(observers=(4,))
    leader = net.node(1)
    with pytest.raises(MembershipChangeRefused, match="not an observer"):
        leader.add_voter(5)
    with pytest.raises(MembershipChangeRefused, match="leads: it is a voter"):
        leader.add_voter(1)
    with pytest.raises(MembershipChangeRefused, match="already a voter"):
        leader.add_voter(2)
    # 4's OBSERVE reaches the leader, but nothing the leader sends reaches 4.
    for _ in range(2 * net.node(4).config.election_timeout_ticks):
        net.node(4).tick()
    leader.propose(b"x")
    net.deliver(only=(1, 2, 3))
    assert 4 in leader.status().observers and net.node(4).log.last_index == 0
    with pytest.raises(MembershipChangeRefused, match="has not caught up"):
        leader.add_voter(4)
    net.tick(1)
    leader.add_voter(4)


def test_the_last_voter_cannot_be_removed() -> None:
    net = elected(1, bound_voters=False)
    leader = net.node(1)
    with pytest.raises(MembershipChangeRefused, match="last voter"):
        leader.remove_voter(1)
    with pytest.raises(MembershipChangeRefused, match="not a voter"):
        leader.remove_voter(2)


def test_only_a_leader_changes_membership() -> None:
    net = elected()
    with pytest.raises(NotLeader):
        net.node(2).remove_voter(3)


def removed_and_failed(net: Net) -> RaftNode:
    """Leader 1 removes itself, crashes before anyone gets the entry, and restarts with it."""
    index = net.node(1).remove_voter(1)
    net.process()
    net.flight = []
    net.crash(1)
    net.restart(1)
    removed = net.node(1)
    assert removed.conf_index == index > removed.log.committed and not removed.is_voter
    return removed


def test_a_leader_that_removed_itself_and_failed_finishes_the_change() -> None:
    # Under the old set {1, 2}, 2 needs the vote of 1, whose longer log refuses it. 1 is out
    # of the set in force on its own log, but while that entry is uncommitted it may still
    # campaign: elected by {2}, it commits its removal and steps down (membership
    # simulation, stressed operator changes, seeds 25, 199 and 200: no leader ever again).
    net = elected(2)
    removed = removed_and_failed(net)
    assert removed.electable
    net.tick(times=60)
    assert net.leader() == 2 and voter_ids(net.node(2)) == [2]
    assert not removed.is_voter and not removed.electable


def test_a_removed_leader_finishes_its_change_while_another_voter_is_down() -> None:
    # Voter 4 is down for good (in the simulation, a wiped voter not replaced yet): the old
    # set needs three of {1, 2, 3} and 1 refuses the others; the new set {2, 3, 4} needs two.
    net = elected(4)
    net.crash(4)
    removed_and_failed(net)
    net.tick(1, 2, 3, times=80)
    new = net.leader()
    assert new in (2, 3) and voter_ids(net.node(new)) == [2, 3, 4]
    assert net.node(new).log.committed == net.node(new).log.last_index


# -- the voter set in force ---------------------------------------------------------------------


def test_a_conf_entry_is_in_force_once_appended_on_leader_and_follower() -> None:
    net = elected(observers=(4,))
    observed(net, 4)
    leader = net.node(1)
    index = leader.add_voter(4)
    assert voter_ids(leader) == [1, 2, 3, 4] and leader.conf_index == index > leader.log.committed
    net.process()
    net.flight = [m for m in net.flight if m.to == 2 and m.type == MessageType.APP]
    net.deliver(rounds=1, only=(2,))  # 2 appends the entry; its acknowledgement is dropped
    follower = net.node(2)
    assert follower.log.last_index == index and follower.log.committed < index
    assert voter_ids(follower) == [1, 2, 3, 4] and follower.quorum == 3
    assert voter_ids(net.node(3)) == [1, 2, 3]


def test_a_truncated_conf_entry_brings_the_old_set_back() -> None:
    node = RaftNode(Config(2, (1, 2, 3)))
    added = (Voter(1), Voter(2), Voter(3), Voter(4, "d4"))
    conf = Entry(1, 2, kind=EntryKind.CONF, voters=added)
    node.step(Message(MessageType.APP, 1, 2, 1, entries=(Entry(1, 1, kind=EntryKind.NOOP), conf), commit=1))
    assert node.voters == added and node.conf_index == 2 and node.quorum == 3
    # Leader 3 of term 2 never had the CONF entry: its append overwrites index 2.
    node.step(Message(MessageType.APP, 3, 2, 2, log_term=1, index=1, entries=(Entry(2, 2, b"y"),), commit=1))
    assert node.log.entries[-1].data == b"y"
    assert node.voters == (Voter(1), Voter(2), Voter(3)) and node.conf_index == 0 and node.quorum == 2


def test_a_leader_that_removes_itself_leads_until_the_entry_commits_then_observes() -> None:
    net = elected()
    leader = net.node(1)
    index = leader.remove_voter(1)
    assert voter_ids(leader) == [2, 3] and not leader.is_voter
    # The leader no longer counts itself: with 3 down, 2 alone is not a quorum of {2, 3}.
    net.crash(3)
    net.tick(1, times=3)
    assert leader.role == Role.LEADER and leader.log.committed < index
    with pytest.raises(MembershipChangeRefused):
        leader.add_voter(1)
    net.restart(3)
    net.tick(1)
    assert leader.log.committed >= index
    assert leader.role == Role.FOLLOWER and leader.leader == NONE
    before = len(net.sent)
    net.tick(times=60)
    mine = [m for m in net.sent[before:] if m.frm == 1]
    assert not [m for m in mine if m.type in (MessageType.PRE_VOTE, MessageType.VOTE)]
    assert [m for m in mine if m.type == MessageType.OBSERVE]
    new = net.leader()
    assert new in (2, 3) and not net.node(1).is_voter
    assert net.node(1).log.committed == net.node(new).log.committed


def test_an_observer_that_no_longer_hears_from_its_leader_forgets_it_and_answers_votes() -> None:
    # Leader 1 adds 2 and loses leadership before 2 hears of it: 1 needs 2's vote now,
    # and 2, an observer in its own eyes, must not keep the lease of a leader that is gone.
    net = elected(1, observers=(2,))
    observed(net, 2)
    leader, observer = net.node(1), net.node(2)
    leader.add_voter(2)
    for _ in range(3 * leader.config.election_timeout_ticks):
        leader.tick()
        net.process()
        net.flight = []  # nothing reaches 2: 1 hears from no quorum of {1, 2} and steps down
    assert leader.role != Role.LEADER and voter_ids(leader) == [1, 2]
    assert not observer.is_voter and observer.leader == 1
    for _ in range(observer.randomized_timeout):
        observer.tick()
    assert observer.leader == NONE
    net.tick(times=50)
    assert net.leader() == 1 and observer.is_voter


# -- directory ids: binding, wiped replicas, auto-join ------------------------------------------


def test_the_leader_binds_unbound_voters_in_one_entry_after_its_noop_commits() -> None:
    net = Net(3, pre_vote=False)
    assert all(v.directory == "" for v in net.node(1).voters)
    net.node(1).campaign()
    net.deliver()
    leader = net.node(1)
    assert [e.kind for e in leader.log.entries] == [EntryKind.NOOP]  # nothing until a tick
    net.tick(1, times=5)
    confs = net.conf_entries(1)
    bound = (Voter(1, "dir-1-0"), Voter(2, "dir-2-0"), Voter(3, "dir-3-0"))
    assert [e.index for e in confs] == [2] and confs[0].voters == bound
    assert leader.log.committed >= 2 and all(net.node(i).voters == bound for i in (1, 2, 3))


def test_a_voter_not_heard_from_is_bound_later() -> None:
    net = Net(3, pre_vote=False)
    net.crash(3)
    net.node(1).campaign()
    net.deliver()
    net.tick(1, times=3)
    assert [e.voters for e in net.conf_entries(1)] == [(Voter(1, "dir-1-0"), Voter(2, "dir-2-0"), Voter(3))]
    net.restart(3)
    net.tick(1, times=3)
    assert net.conf_entries(1)[-1].voters[-1] == Voter(3, "dir-3-0")
    assert len(net.conf_entries(1)) == 2


def wiped_two() -> tuple[Net, RaftNode]:
    """Voters 1..3 bound by leader 1; then 2's disk is wiped (directory dir-2-1, empty log)."""
    net = elected(pre_vote=False)
    net.node(1).propose(b"x")
    net.deliver()
    net.wipe(2)
    wiped = net.node(2)
    assert wiped.directory == "dir-2-1" and wiped.log.last_index == 0
    return net, wiped


def test_a_wiped_replica_does_not_vote_for_a_candidate_that_names_its_old_directory() -> None:
    net, wiped = wiped_two()
    net.crash(1)
    before = len(net.sent)
    net.node(3).campaign()
    net.process()
    requests = [m for m in net.sent[before:] if m.type == MessageType.VOTE and m.to == 2]
    assert [m.to_directory for m in requests] == ["dir-2-0"]
    net.deliver()
    assert wiped.vote == NONE and wiped.term == 0
    assert not [m for m in net.sent[before:] if m.frm == 2]
    assert net.node(3).role == Role.CANDIDATE  # 3 + a wiped 2 is no quorum while 1 is down


def test_a_wiped_replicas_vote_does_not_count() -> None:
    net, wiped = wiped_two()
    candidate = net.node(3)
    candidate.campaign()
    net.process()
    net.flight = []
    grant = Message(MessageType.VOTE_RESP, 2, 3, candidate.term, directory=wiped.directory)
    candidate.step(grant)
    assert candidate.role == Role.CANDIDATE
    candidate.step(Message(MessageType.VOTE_RESP, 2, 3, candidate.term, directory="dir-2-0"))
    assert candidate.role == Role.LEADER  # the same grant from the replica the set names counts


def test_a_wiped_replica_with_an_empty_log_wins_no_vote() -> None:
    net, wiped = wiped_two()
    net.crash(1)
    voter = net.node(3)
    voter.election_elapsed = voter.config.election_timeout_ticks  # out of the leader lease
    assert wiped.is_voter  # its empty log only knows the bootstrap voters
    wiped.campaign()
    wiped.campaign()
    net.deliver()
    assert wiped.role == Role.CANDIDATE and voter.vote != 2
    answers = [m for m in net.sent if m.type == MessageType.VOTE_RESP and m.to == 2]
    assert answers and all(m.reject for m in answers)  # its empty log is behind every voter's


def test_a_voter_with_a_stale_set_still_votes_for_a_rejoined_replica() -> None:
    # 3 missed 2's rejoin: its set still binds 2 to dir-2-0. Once 2 (dir-2-1) is a voter again
    # with the newest log, 3's vote may be the one it needs: 3 judges the log, not its stale set
    # (membership simulation, seed 61 of the heavy-wipe profile: no leader ever again).
    net, wiped = wiped_two()
    voter = net.node(3)
    voter.election_elapsed = voter.config.election_timeout_ticks
    log = voter.log
    for kind in (MessageType.PRE_VOTE, MessageType.VOTE):
        ask = Message(kind, 2, 3, voter.term + 1, log_term=log.last_term, index=log.last_index + 5)
        voter.step(replace(ask, directory=wiped.directory))
        net.process()
        assert net.sent[-1].type in (MessageType.PRE_VOTE_RESP, MessageType.VOTE_RESP) and not net.sent[-1].reject
    assert voter.vote == 2


def test_a_stale_vote_request_is_answered_with_the_newer_term() -> None:
    # Voter sets differ across replicas while a change is in flight, so the replica at the
    # newer term may never ask this candidate for its vote: the rejection is how the candidate
    # learns the term it must exceed (membership simulation, seed 197 of the stressed profile).
    voter = RaftNode(Config(3, (1, 2, 3)), PersistedState(HardState(9, 0, 0)))
    candidate = RaftNode(Config(1, (1, 2, 3), pre_vote=False), PersistedState(HardState(4, 0, 0)))
    candidate.campaign()
    rd = candidate.ready()
    assert rd is not None
    candidate.advance(rd)
    voter.step(next(m for m in rd.messages if m.to == 3))
    answer = voter.ready()
    assert answer is not None
    assert [(m.type, m.term, m.reject) for m in answer.messages] == [(MessageType.VOTE_RESP, 9, True)]
    candidate.step(answer.messages[0])
    assert candidate.role == Role.FOLLOWER and candidate.term == 9


def test_a_leaders_message_to_the_old_directory_is_answered_with_observe() -> None:
    net, wiped = wiped_two()
    net.node(1).tick()
    net.process()
    heartbeat = [m for m in net.flight if m.to == 2]
    assert heartbeat and all(m.to_directory == "dir-2-0" for m in heartbeat)
    net.flight = heartbeat
    net.deliver(rounds=1, only=(2,))
    assert wiped.log.last_index == 0 and wiped.leader == NONE
    answers = [m for m in net.flight if m.frm == 2]
    assert [(m.type, m.to, m.directory) for m in answers] == [(MessageType.OBSERVE, 1, "dir-2-1")]
    net.deliver()
    assert 2 in net.node(1).status().observers  # tracked as a new replica, no longer the voter
    assert wiped.log.last_index == net.node(1).log.last_index and not wiped.is_voter


def test_the_leader_tracks_a_voter_whose_wiped_replica_went_quiet() -> None:
    # The wiped replica's OBSERVE replaced voter 2's progress (another directory); when it went
    # quiet, check quorum dropped that progress and voter 2 had none: a transfer to it raised
    # KeyError (membership simulation, seed 556), and nothing was sent to its old directory.
    net, _ = wiped_two()
    leader = net.node(1)
    net.tick(1, 2, 3, times=2)
    assert 2 in leader.status().observers  # the new replica, tracked under dir-2-1
    net.crash(2)
    net.tick(1, 3, times=3 * leader.config.election_timeout_ticks)
    assert leader.role == Role.LEADER and 2 in dict(leader.status().match)
    leader.transfer_leadership(2)
    net.tick(1, 3, times=2 * leader.config.election_timeout_ticks)
    assert leader.role == Role.LEADER  # the transfer to a dead voter was abandoned


def test_auto_join_replaces_a_wiped_voter_in_two_conf_entries() -> None:
    net = elected(auto_join=True)
    leader = net.node(1)
    leader.propose(b"x")
    net.deliver()
    before = len(net.conf_entries(1))
    net.wipe(2)
    net.tick(times=30)
    assert JOIN_CONTEXT in [m.context for m in net.sent if m.type == MessageType.OBSERVE and m.frm == 2]
    changes = [e.voters for e in net.conf_entries(1)[before:]]
    assert changes == [
        (Voter(1, "dir-1-0"), Voter(3, "dir-3-0")),  # the old replica of 2 goes first...
        (Voter(1, "dir-1-0"), Voter(2, "dir-2-1"), Voter(3, "dir-3-0")),  # ...then the new one joins
    ]
    assert leader.log.committed == leader.log.last_index
    assert net.node(2).is_voter and net.node(2).voters == changes[-1]
    net.crash(3)  # the new 2 counts toward the quorum now
    y = leader.propose(b"y")
    net.deliver()
    assert leader.log.committed >= y
    assert [e.data for e in net.applied[2] if e.kind == EntryKind.NORMAL] == [b"x", b"y"]


def test_auto_join_survives_a_lost_join_request() -> None:
    # The replica asks once when it learns it was displaced; the leader keeps heartbeating
    # it as an observer, so without a repeat it would never time out to ask again.
    net = elected(auto_join=True)
    net.wipe(2)
    lost = 0
    for _ in range(40):
        for i in (1, 2, 3):
            net.node(i).tick()
        for _ in range(50):
            net.process()
            if not net.flight:
                break
            batch, net.flight = net.flight, []
            for m in batch:
                if m.type == MessageType.OBSERVE and m.context == JOIN_CONTEXT and not lost:
                    lost += 1
                    continue
                net.node(m.to).step(m)
    assert lost == 1 and net.node(2).is_voter
    assert net.node(1).voters[1] == Voter(2, "dir-2-1")


def test_without_auto_join_a_wiped_voter_waits_for_the_operator() -> None:
    net = elected()
    net.wipe(2)
    net.tick(times=30)
    leader = net.node(1)
    assert leader.status().observers == (2,) and len(net.conf_entries(1)) == 1
    with pytest.raises(MembershipChangeRefused, match="already a voter"):
        leader.add_voter(2)  # an id that is a voter under another directory is removed first
    net.tick(1, times=2)
    leader.remove_voter(2)
    net.tick(1, times=2)
    leader.add_voter(2)
    net.tick(1, times=2)
    assert leader.voters[1] == Voter(2, "dir-2-1") and net.node(2).is_voter


def test_a_wiped_replica_of_a_removed_voter_can_be_added_back() -> None:
    # The operator's sequence for a dead disk: remove-controller, replace the disk, start it,
    # add-controller. (Not displaced, it does not auto-join: membership.py.)
    net = elected(auto_join=True)
    leader = net.node(1)
    leader.remove_voter(3)
    net.tick(1, times=2)
    net.crash(3)
    net.tick(1, 2, times=3 * leader.config.election_timeout_ticks)  # the leader forgets a silent observer
    assert 3 not in leader.status().observers
    net.wipe(3)
    net.tick(times=100)
    assert 3 in leader.status().observers  # a replica the leader replicates to: add_voter can take it
    leader.add_voter(3)
    net.tick(times=5)
    assert voter_ids(leader) == [1, 2, 3] and net.node(3).is_voter


# -- snapshots and the codec -------------------------------------------------------------------


def test_snapshots_carry_the_voter_set() -> None:
    net = elected(observers=(4,))
    observed(net, 4)
    leader = net.node(1)
    net.crash(3)
    conf = leader.add_voter(4)
    for k in range(3):
        leader.propose(b"%d" % k)
    net.deliver()
    assert leader.log.committed > conf
    snap = leader.compact(leader.log.applied, b"state")
    assert snap.index > conf and voter_ids(leader) == [1, 2, 3, 4]
    assert snap.voters == (Voter(1, "dir-1-0"), Voter(2, "dir-2-0"), Voter(3, "dir-3-0"), Voter(4, "dir-4-0"))
    assert not net.conf_entries(1)  # the set now lives in the snapshot alone

    net.restart(3)  # its log ends before the CONF entry: it is restored from the snapshot
    assert voter_ids(net.node(3)) == [1, 2, 3]
    net.tick(1)
    assert net.disk[3].snapshot == snap and net.node(3).voters == snap.voters
    assert not net.conf_entries(3) and net.node(3).quorum == 3
    restarted = RaftNode(Config(3, (1, 2, 3)), PersistedState(snapshot=snap))
    assert restarted.voters == snap.voters and restarted.conf_index == 0


def test_an_empty_snapshot_voter_set_means_the_bootstrap_voters() -> None:
    state = PersistedState(HardState(1, 0, 6), Snapshot(5, 1, (), b"s5"), (Entry(1, 6, b"x"),))
    node = RaftNode(Config(2, (1, 2, 3)), state)
    assert node.voters == (Voter(1), Voter(2), Voter(3))
    rd = node.ready()
    assert rd is not None
    node.advance(rd)
    assert node.compact(6, b"s6").voters == (Voter(1), Voter(2), Voter(3))  # written out in full


VOTERS = (Voter(1, "a1b2c3", "ctl-1:9093"), Voter(2, "d4e5f6"), Voter(7))


def test_codec_round_trips_conf_entries_snapshots_and_directories() -> None:
    conf = Entry(3, 17, kind=EntryKind.CONF, voters=VOTERS)
    assert entry_from_bytes(entry_to_bytes(conf)) == conf
    snap = Snapshot(17, 3, VOTERS, b"state")
    assert snapshot_from_bytes(snapshot_to_bytes(snap)) == snap
    m = Message(MessageType.APP, 1, 2, 3, entries=(conf,), directory="a1b2c3", to_directory="d4e5f6")
    assert message_from_pb(message_to_pb(m)) == m
    join = Message(MessageType.OBSERVE, 2, 1, 3, context=JOIN_CONTEXT, directory="d4e5f6")
    assert message_from_pb(message_to_pb(join)) == join


def test_codec_reads_an_old_snapshot_as_unbound_voters_and_refuses_bad_sets() -> None:
    old = raft_pb2.RaftSnapshot(index=4, term=2, voters=[1, 2, 3], data=b"s")
    assert snapshot_from_pb(old) == Snapshot(4, 2, (Voter(1), Voter(2), Voter(3)), b"s")
    new = raft_pb2.RaftSnapshot.FromString(snapshot_to_bytes(Snapshot(4, 2, VOTERS, b"s")))
    assert list(new.voters) == [1, 2, 7]  # still readable by a store that knows only ids
    with pytest.raises(ValueError, match="CONF entry without voters"):
        entry_from_bytes(entry_to_bytes(Entry(1, 1, kind=EntryKind.CONF)))
    twice = Entry(1, 1, kind=EntryKind.CONF, voters=(Voter(1), Voter(1, "x")))
    with pytest.raises(ValueError, match="distinct positive ids"):
        entry_from_bytes(entry_to_bytes(twice))
