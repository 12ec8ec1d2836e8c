"""Membership: who votes, how the voter set changes, and how a wiped replica is kept from voting twice.

This is KIP-853's model (Kafka's dynamic KRaft quorum) on the Raft dissertation's
single-server changes (Ongaro, §4.1-4.2), written for this push-based core.

Voters and replicas:
- A replica is a node id plus a *directory id*: a random id its driver creates
  the first time it opens an empty Raft store (coordinator/raft_storage.py). A
  controller whose disk was wiped comes back with the same node id and a NEW
  directory id: it is a new replica, which has never voted and holds nothing.
- The voter set is a tuple of ``Voter(id, directory, address)``. A voter's
  directory is "" until the leader binds it (below); "" matches any directory.
  A replica is a voter when its id is in the set and the directory matches;
  every other replica is an *observer*: it receives the log but never
  campaigns, votes or counts toward a quorum.
- Where the set comes from: the newest CONF entry in the log (committed or
  not: a change is in force from the moment it is appended, as in the
  dissertation and KIP-853), else the snapshot's ``voters``, else the
  bootstrap voters of ``Config.voters`` (all unbound). A truncation that
  removes a CONF entry brings back the set before it.

Changes (leader only, ``RaftNode.add_voter`` / ``remove_voter``):
- One voter added or removed per CONF entry (so any majority of the old set
  and any majority of the new one share a replica); binding directories of the
  current voters is a change too, but changes no ids, so it may bind several.
- A change is refused (``MembershipChangeRefused``) while another CONF entry is
  uncommitted, and until the leader has committed an entry of its own term
  (the fix to the dissertation's single-server bug that KIP-853 adopts).
- A voter is added only from an observer the leader replicates to whose
  directory is known and that holds everything committed (it fetched the
  log, from a snapshot if need be): it then cannot slow commits down.
  An id that is a voter under another directory must be removed first.
- The last voter cannot be removed. A leader that removes itself keeps
  leading (without counting itself) until the entry commits, then steps down
  and stays an observer.
- Who campaigns: a voter of the set in force, and also a replica that the
  newest CONF entry removed while that entry is not committed (``electable``):
  a leader that removed itself and failed (crash, or check quorum) before the
  entry reached the new set must be able to finish the change, since the other
  voters, still under the old set, may need its vote, which its longer log
  refuses them (two voters, or a voter down: no leader ever again). Its votes
  are counted under the set in force, without its own: the usual quorum.

Finding the leader: an observer sends OBSERVE to every voter it knows on each
election timeout without a word from a leader, and so does a replica with a
directory id and an empty log while it campaigns (it may be a wiped replica whose id the voters no
longer hold: its bootstrap set says it votes, the others do not contact it).
A follower that knows the leader passes an OBSERVE on to it.

Double votes after a wiped disk (KIP-853's VoterDirectoryId):
- Every message names its sender's directory and the directory the sender
  expects the recipient to have. A replica drops a message meant for another
  directory of its id; a message from a leader is answered with OBSERVE, so the
  leader learns about the new replica. A vote is granted only when the
  request was meant for this directory; a vote response only counts from a
  matching voter. The candidate's directory is not checked against the local
  set, as in Kafka: that set may be stale (a voter that missed a wiped
  replica's rejoin would refuse the rejoined voter forever). A wiped replica
  whose log lacks the binding entry is behind every voter that holds it, so
  the log rule refuses it; once its log holds the entry it is no voter and
  does not campaign.
- The leader binds each unbound voter's directory as soon as it has heard from
  it (one CONF entry, after its first commit of the term), so after a
  cluster's first election a wiped replica can no longer stand in for the
  voter it replaced — as long as the candidate's log holds that entry. The
  remaining window: a candidate whose log lacks the binding entry (it was
  down or partitioned when the entry spread) asks for votes naming no
  directory, and a wiped replica, whose empty log is behind anything,
  grants one; with it that candidate can win a term another leader holds,
  or lose a committed entry (the membership simulation's ignore_directory
  control shows both). So the window lasts until every voter holds the
  binding entry, normally the first seconds of a new cluster, longer if a
  voter is down then. KIP-853 closes it by formatting every controller with
  the initial directory ids; Ketch's nodes format themselves.

Auto-join (``Config.auto_join``, like Kafka's controller.quorum.auto.join.enable
but only for a replaced replica): an observer that has seen the voter set name
its id under another directory (it is a wiped replica's new self) sends OBSERVE
with ``JOIN_CONTEXT``. Once it is caught up, the leader removes the voter that
holds its id under the old directory, and once that commits, adds it back with
its new directory. A replica the operator removed is not displaced, so it stays
an observer until it is added again (unlike Kafka, where a running removed
controller with auto-join rejoins at once). The "displaced" mark lives in memory:
a replica restarted between the two changes needs ``add_voter``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from coordinator.raft.config import RaftError
from coordinator.raft.messages import Entry, EntryKind, Snapshot, Voter


class MembershipChangeRefused(RaftError):
    """The leader cannot make this membership change now; the reason says why (retry or fix)."""


class ChangeNotReady(MembershipChangeRefused):
    """Not now: a change is pending, the leader is new, or the node has not caught up; retry."""


class DuplicateVoter(MembershipChangeRefused):
    """The node to add is already a voter (Kafka's DUPLICATE_VOTER)."""


class VoterNotFound(MembershipChangeRefused):
    """The node to remove is not a voter (Kafka's VOTER_NOT_FOUND)."""


def bootstrap_voters(ids: Iterable[int]) -> tuple[Voter, ...]:
    return tuple(Voter(i) for i in sorted(ids))


def voters_at(
    snapshot: Snapshot, entries: Sequence[Entry], bootstrap: tuple[Voter, ...]
) -> tuple[tuple[Voter, ...], int]:
    """The voter set in force after ``entries`` and the index of the CONF entry it came from (0 if none)."""
    for e in reversed(entries):
        if e.kind == EntryKind.CONF:
            return e.voters, e.index
    return (snapshot.voters or bootstrap), 0


def matches(voter: Voter, directory: str) -> bool:
    """Whether a replica with ``directory`` is this voter ("" on either side matches)."""
    return not voter.directory or not directory or voter.directory == directory


def find(voters: Sequence[Voter], node_id: int) -> Voter | None:
    for v in voters:
        if v.id == node_id:
            return v
    return None


def is_voter(voters: Sequence[Voter], node_id: int, directory: str) -> bool:
    v = find(voters, node_id)
    return v is not None and matches(v, directory)


def quorum_size(voters: Sequence[Voter]) -> int:
    return len(voters) // 2 + 1


def with_voter(voters: Sequence[Voter], new: Voter) -> tuple[Voter, ...]:
    if find(voters, new.id) is not None:
        raise DuplicateVoter(f"node {new.id} is already a voter; remove it first")
    if not new.directory:
        raise MembershipChangeRefused(f"node {new.id}'s directory id is not known yet")
    return tuple(sorted((*voters, new), key=lambda v: v.id))


def without_voter(voters: Sequence[Voter], node_id: int) -> tuple[Voter, ...]:
    if find(voters, node_id) is None:
        raise VoterNotFound(f"node {node_id} is not a voter")
    if len(voters) == 1:
        raise MembershipChangeRefused("the last voter cannot be removed")
    return tuple(v for v in voters if v.id != node_id)


def bound(voters: Sequence[Voter], directories: dict[int, str]) -> tuple[Voter, ...]:
    """``voters`` with each unbound directory set from ``directories`` where known."""
    return tuple(Voter(v.id, directories.get(v.id, ""), v.address) if not v.directory else v for v in voters)
