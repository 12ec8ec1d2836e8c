"""Membership in the Raft simulation (tests/raft_sim.py): wiped disks and an operator.

``MembershipFaults`` is the part of one run that wipes disks and changes the voter set
as an operator would; the pure functions below decide when it may, and what the
checker then expects. Why each rule:

- A replica's directory id is ``d<id>i<incarnation>s<seed>``: deterministic per seed,
  new at each wipe (the incarnation counts the node's restarts), readable in traces.
- A *ghost* is a voter whose directory is bound to a replica that no longer exists
  (its disk was wiped). It can never answer, so it is a dead voter until auto-join
  (or the operator) replaces it. Every voter set that may be in force must keep a
  quorum of replicas that still exist, or the quorum is lost for good: that is a
  real operator hazard (KIP-853 has it too), not what the simulation tests.
- When a wipe is safe: the new replica keeps the old one's node id, so only its
  directory tells the two apart. A voter set that leaves that id unbound ("") lets
  the new replica's vote, or a vote request to it, stand for the old one. That is
  not only the first election: any replica whose log lacks the binding entry (it
  lagged, it was down, it was itself wiped and has not caught up) still holds an
  unbound set, and a candidate with that set plus the wiped replica, whose empty log
  grants any request, can be a quorum (a second leader in a term the old replica
  already voted in). No rule local to either replica can tell this apart from a
  fresh cluster's first election. So a wipe happens only when every voter set that
  is or may come into force, on any node, on disk or in a message, binds the id to
  the replica being wiped.
- An open gap the simulation steps around (tests/test_raft_membership.py has it as
  a strict xfail): a wiped replica whose id is no longer in the voter set is never
  contacted. Its empty log says it is a voter (the bootstrap set), so it campaigns
  instead of sending OBSERVE, and a leader that does not write to its old
  directory never learns of it. Hence the rule above asks for the id to be IN every
  set, and the operator leaves a wiped voter's old replica to auto-join.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from coordinator.raft import Entry, EntryKind, Message, MessageType, RaftError, Ready, Snapshot, Voter
from coordinator.raft.membership import find, quorum_size, voters_at
from coordinator.raft.storage import MemoryStorage

if TYPE_CHECKING:
    from tests.raft_sim import SimNode, Simulation


OPERATOR_PATIENCE_MS = 1000


def directory_id(seed: int, node_id: int, incarnation: int) -> str:
    return f"d{node_id}i{incarnation}s{seed}"


def possible_sets(
    logs: Iterable[tuple[Snapshot, Sequence[Entry]]],
    in_flight: Iterable[Message],
    committed: Mapping[int, Entry],
    bootstrap: tuple[Voter, ...],
) -> set[tuple[Voter, ...]]:
    """Every voter set in force, or that may come into force, on some replica.

    For each log (a snapshot and the entries after it): the set after its committed
    prefix (the entries ``committed`` knows, which no truncation removes), and every
    CONF entry after that prefix (a truncation may bring any of them back). Messages
    in flight add the CONF entries and snapshots they carry.
    """
    sets: set[tuple[Voter, ...]] = set()
    for snapshot, entries in logs:
        k = 0
        while k < len(entries) and committed.get(entries[k].index) == entries[k]:
            k += 1
        sets.add(voters_at(snapshot, entries[:k], bootstrap)[0])
        sets.update(e.voters for e in entries[k:] if e.kind == EntryKind.CONF)
    for m in in_flight:
        sets.update(e.voters for e in m.entries if e.kind == EntryKind.CONF)
        if m.snapshot is not None and m.snapshot.voters:
            sets.add(m.snapshot.voters)
    return sets


def ghosts(voters: Iterable[Voter], directories: Mapping[int, str]) -> list[Voter]:
    """Voters bound to a directory that no replica has any more (wiped)."""
    return [v for v in voters if v.directory and v.directory != directories.get(v.id)]


def keeps_quorum(voters: Sequence[Voter], directories: Mapping[int, str]) -> bool:
    """Whether the replicas that still exist are a quorum of ``voters`` (crashed ones may restart)."""
    return len(voters) - len(ghosts(voters, directories)) >= quorum_size(voters)


def wipe_is_safe(node_id: int, sets: Iterable[tuple[Voter, ...]], directories: Mapping[int, str]) -> bool:
    """Whether replica ``node_id`` may lose its disk now (module docstring)."""
    after = {**directories, node_id: ""}
    for voters in sets:
        v = find(voters, node_id)
        if v is None or not v.directory or v.directory != directories[node_id]:
            return False  # unbound, or another replica's: the new one could stand in (or be stranded)
        if not keeps_quorum(voters, after):
            return False
    return True


class MembershipFaults:
    """The wiped disks and the operator of one simulation run (the rules above, applied)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.rejoining: dict[int, str] = {}
        """Wiped nodes whose new replica is not a voter yet: node id -> the new directory."""
        self.operator_confs: set[tuple[int, int]] = set()
        """(term, index) of the CONF entries the operator proposed, to tell auto-joins apart."""
        self.out_since: dict[int, int] = {}
        """When each wiped replica's id was first seen out of the voter set after healing (ms)."""

    def directory_id(self, node_id: int, incarnation: int) -> str:
        """Seeds without membership faults run as before membership existed: no directory ids."""
        return directory_id(self.sim.p.seed, node_id, incarnation) if self.sim.p.membership else ""

    def directories(self) -> dict[int, str]:
        return {i: n.directory for i, n in self.sim.nodes.items()}

    # -- faults --------------------------------------------------------------------------

    def chaos(self, up: list[SimNode]) -> None:
        """One chaos tick: maybe wipe a live bootstrap voter's disk, maybe an operator change."""
        p, rng = self.sim.p, self.sim.rng
        wipeable = [n for n in up if n.auto_join]
        if p.wipe_rate and wipeable and rng.random() < p.wipe_rate:
            victim = rng.choice(wipeable)
            if self.wipe_is_safe(victim):
                self.wipe(victim)
        if p.change_rate and rng.random() < p.change_rate:
            self.operator_change()

    def wiped_after_vote(self, n: SimNode, rd: Ready) -> bool:
        """Right after ``n`` made a granted vote durable and sent it, maybe wipe its disk (True if so)."""
        sim = self.sim
        p = sim.p
        if not (p.wipe_after_vote and sim.faults and n.auto_join and _grants_vote(rd)):
            return False
        if sim.rng.random() >= p.wipe_after_vote or not self.wipe_is_safe(n):
            return False
        sim.stats["wipes_after_vote"] += 1
        self.wipe(n)  # its vote is gone with its disk: the moment a double vote needs
        return True

    def wipe(self, n: SimNode) -> None:
        """Crash ``n`` and give it an empty disk: it restarts as a new replica, with a new directory id."""
        sim = self.sim
        sim.trace.append((sim.now, f"wipe {n.id}"))
        sim.stats["wipes"] += 1
        sim.crash(n)
        n.disk = MemoryStorage()
        n.former = n.former or n.directory
        n.directory = self.directory_id(n.id, n.incarnation)
        self.rejoining[n.id] = n.directory

    def wipe_is_safe(self, n: SimNode) -> bool:
        return wipe_is_safe(n.id, self.possible_sets(), self.directories())

    def possible_sets(self) -> set[tuple[Voter, ...]]:
        sim = self.sim
        logs: list[tuple[Snapshot, list[Entry]]] = []
        for n in sim.nodes.values():
            logs.append((n.disk.snapshot, n.disk.entries))
            if n.raft is not None:
                logs.append((n.raft.log.snapshot, n.raft.log.entries))
        return possible_sets(logs, sim.in_flight(), sim.history, sim.bootstrap)

    def operator_change(self) -> None:
        """An operator removes a voter or adds a replica back, at the leader; refusals are fine.

        A sensible operator does not remove a voter when the replicas left would not be
        a quorum (a wiped voter not replaced yet is gone for good), and leaves a wiped
        voter to auto-join (removing it first strands the new replica: the open gap above).
        """
        sim = self.sim
        found = sim.leader()
        if found is None:
            return
        n, raft = found
        if sim.rng.random() < 0.5:
            who = sim.rng.choice(raft.voters).id
            rest = tuple(v for v in raft.voters if v.id != who)
            if who in self.rejoining or not keeps_quorum(rest, self.directories()):
                return
            kind = "removals"
        else:
            outside = [i for i in sim.nodes if find(raft.voters, i) is None]
            if not outside:
                return
            who = sim.rng.choice(outside)
            kind = "additions"
        try:
            index = raft.remove_voter(who) if kind == "removals" else raft.add_voter(who)
        except RaftError:
            return
        sim.stats[kind] += 1
        sim.stats["observers_added"] += kind == "additions" and who not in sim.voters
        self.operator_confs.add((raft.term, index))
        sim.trace.append((sim.now, f"operator: {kind[:-1]} {who} at {n.id}"))
        sim.pump(n)

    def rejoin_by_hand(self) -> None:
        """After healing: the operator adds back a wiped replica whose id has been no voter for a second.

        Auto-join does it in two changes, and the "displaced" mark that drives it lives in
        memory: a replica restarted between them stays an observer and needs ``add_voter``
        (membership.py says so). While its old replica is still a voter, or for a second
        after it left (auto-join's second change), the operator waits.
        """
        sim = self.sim
        found = sim.leader()
        if found is None:
            return
        n, raft = found
        for node_id in sorted(self.rejoining):
            if find(raft.voters, node_id) is not None:
                self.out_since.pop(node_id, None)
                continue
            if sim.now - self.out_since.setdefault(node_id, sim.now) < OPERATOR_PATIENCE_MS:
                continue
            try:
                index = raft.add_voter(node_id)
            except RaftError:
                continue
            sim.stats["operator_rejoins"] += 1
            self.operator_confs.add((raft.term, index))
            sim.trace.append((sim.now, f"operator: add back {node_id} at {n.id}"))
            sim.pump(n)
            return

    # -- what the checker learns ---------------------------------------------------------

    def committed(self, e: Entry) -> None:
        """A CONF entry committed: count the wiped replicas it makes voters again (by auto-join)."""
        for node_id, directory in list(self.rejoining.items()):
            v = find(e.voters, node_id)
            if v is not None and v.directory == directory:
                del self.rejoining[node_id]
                self.sim.nodes[node_id].former = ""
                self.sim.stats["auto_joins"] += (e.term, e.index) not in self.operator_confs

    def settled(self, voters: Sequence[Voter]) -> bool:
        """Every wiped replica is a voter again, and no voter is a replica that no longer exists."""
        return not self.rejoining and not ghosts(voters, self.directories())


def _grants_vote(rd: Ready) -> bool:
    return any(m.type == MessageType.VOTE_RESP and not m.reject for m in rd.messages)
