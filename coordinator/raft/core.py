"""RaftNode: one controller's Raft state machine, with no I/O, clock or randomness source.

Inputs are method calls — ``tick()``, ``step(message)``, ``propose(data)``,
``read_index(context)``, ``campaign()``, ``transfer_leadership(to)``,
``compact(index, data)`` — and the only output is ``ready()``: a ``Ready`` holding
what to persist, send and apply (see ready.py for the driver contract). This is
etcd-io/raft's RawNode model, so the same core runs under the asyncio/gRPC driver and
inside the deterministic simulation.

Term and vote rules (checked in ``step`` before a message reaches its role's handler):
- A message from a higher term makes the node a follower of that term (forgetting its
  vote, which belonged to the old term) — except:
  - PRE_VOTE never changes anyone's term, and neither does a granted PRE_VOTE_RESP
    (it carries the future term the pre-candidate asked about);
  - with ``check_quorum``, a VOTE or PRE_VOTE is ignored entirely while the node is in
    a leader lease (it heard from a leader within the election timeout), unless the
    vote comes from a leadership transfer. This, with pre-vote, is why a partitioned
    node that rejoins cannot depose a healthy leader: its pre-vote never gathers a
    quorum, so it never raises its term.
- A message from a lower term is dropped; a stale APP or HEARTBEAT is answered with an
  APP_RESP carrying our term (so an old leader learns it was deposed), a stale
  PRE_VOTE or VOTE with a rejection (while voter sets differ, a node at a newer term
  may never ask that candidate for its vote: this is how the candidate learns it).
- A node grants at most one VOTE per term: it grants if it already voted for that
  candidate, or has no vote and knows no leader in this term; and only if the
  candidate's log is at least as up to date (§5.4.1). The vote lands in the hard state,
  which the driver persists before sending the VOTE_RESP, so a restart cannot grant a
  second vote in the same term. Granting a vote restarts the election timer.
- A candidate becomes leader on a quorum of grants (its own included) and a follower
  again on a quorum of rejections; a pre-candidate that wins its pre-vote starts the
  real election at term + 1. A single voter wins as soon as it campaigns.

Followers and votes: follower.py (``handle_vote``, ``step_follower``).

Restart: ``RaftNode(config, persisted, applied)`` resumes as a follower with the stored
term, vote, log and commit index; ``applied`` (default: the snapshot index) is where the
state machine stands, so committed entries after it are handed out again exactly once.

Membership (membership.py has the rules): ``voters`` is the voter set in force (the
newest CONF entry, else the snapshot's, else ``config.voters``); a replica outside
it, or whose directory id it does not name, is an observer: it does not campaign
(unless the set's newest CONF entry removed it and is not committed yet: see
membership.py), its vote responses do not count, and on an election timeout it
sends OBSERVE to the voters instead, so a leader replicates to it.
``add_voter``/``remove_voter`` change the set one voter at a time; a message meant
for another directory of this id is dropped (a leader's is answered with OBSERVE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from coordinator.raft import follower, membership
from coordinator.raft.config import Config, NotLeader, Role, SplitMix64, TransferInProgress
from coordinator.raft.leader import Leader
from coordinator.raft.log import RaftLog
from coordinator.raft.messages import (
    JOIN_CONTEXT,
    NONE,
    TRANSFER_CONTEXT,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    Voter,
    vote_response_type,
)
from coordinator.raft.ready import PersistedState, ReadState, Ready, SoftState, Status

_FROM_LEADER = (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP)
_VOTES = (MessageType.VOTE, MessageType.PRE_VOTE)
_GOLDEN = 0x9E3779B97F4A7C15


class RaftNode:
    def __init__(self, config: Config, persisted: PersistedState | None = None, applied: int | None = None) -> None:
        state = persisted or PersistedState()
        self.config = config
        self.id = config.id
        self.directory = config.directory
        self._bootstrap = membership.bootstrap_voters(config.voters)
        self._known_dirs: dict[int, str] = {}
        self._rng = SplitMix64(config.seed ^ (config.id * _GOLDEN))
        self.log = RaftLog(state.snapshot, state.entries, state.hard_state.commit)
        self._conf_entry: Entry | None = None
        self._displaced = False
        self._lead: Leader | None = None
        start = state.snapshot.index if applied is None else applied
        if not state.snapshot.index <= start <= self.log.committed:
            raise ValueError(f"applied {start} outside [snapshot {state.snapshot.index}, commit {self.log.committed}]")
        self.log.applied = start
        self.term = state.hard_state.term
        self.vote = state.hard_state.vote
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.election_elapsed = 0
        self.randomized_timeout = config.election_timeout_ticks
        self.votes: dict[int, bool] = {}
        self.outbox: list[Message] = []
        self.read_states: list[ReadState] = []
        self._refresh_voters(recompute=True)
        self._become_follower(self.term, NONE)
        self._prev_hard = HardState(self.term, self.vote, self.log.committed)
        self._prev_soft = SoftState()
        self._outstanding: Ready | None = None

    # -- inputs --------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        if self._lead is not None:
            if not self._lead.tick():
                self._become_follower(self.term, NONE)
            return
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            if self.electable:
                self.campaign()
                if self.log.last_index == 0 and self.directory:
                    self._observe()  # perhaps a wiped replica the voter set no longer names: find a leader
            else:
                self.leader = NONE  # a whole timeout without a word: no leader, and no lease to keep
                self._observe()

    def campaign(self) -> None:
        """Start an election now (a pre-vote first, if configured); no-op on a leader or observer."""
        if self.role == Role.LEADER or not self.electable:
            return
        self._campaign(pre=self.config.pre_vote, transfer=False)

    def propose(self, data: bytes) -> int:
        """Append ``data`` to the log; returns its index. Raises ``NotLeader`` elsewhere.

        The entry is committed when it appears in ``Ready.committed_entries``; it may
        also be lost if leadership changes first (the driver notices because another
        entry, or none, shows up at that index) — clients retry, as with Kafka.
        """
        lead = self._lead
        if lead is None:
            raise NotLeader(self.leader)
        if lead.transferee != NONE:
            raise TransferInProgress(lead.transferee)
        index = self.log.last_index + 1
        self.log.append((Entry(self.term, index, data),))
        lead.appended(index)
        return index

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; the answer is a ``ReadState`` in a later Ready.

        ``context`` must be unique cluster-wide (e.g. node id + counter). Reads can be
        lost with messages or leader changes: the driver times them out and retries.
        """
        if self._lead is not None:
            self._lead.read_index(context, self.id)
        elif self.leader != NONE:
            self.send(Message(MessageType.READ_INDEX, self.id, self.leader, self.term, context=context))
        else:
            raise NotLeader(NONE)

    def transfer_leadership(self, to: int) -> None:
        """Hand leadership to voter ``to`` (controlled shutdown). Leader only."""
        if self._lead is None:
            raise NotLeader(self.leader)
        if membership.find(self.voters, to) is None:
            raise ValueError(f"{to} is not a voter")
        if to != self.id:
            self._lead.transfer(to)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The state machine at applied ``index`` is ``data``: drop the log up to there.

        The driver stores the returned snapshot durably before it deletes the stored
        entries up to ``index`` (in that order, or atomically). Followers that need
        compacted entries receive this snapshot instead.
        """
        term = self.log.term(index)
        if term is None:
            raise ValueError(f"cannot compact at {index}: not in the log")
        voters, _ = membership.voters_at(
            self.log.snapshot, self.log.slice(self.log.first_index, index + 1), self._bootstrap
        )
        snapshot = Snapshot(index, term, voters, data)
        self.log.compact(snapshot)
        return snapshot

    def step(self, m: Message) -> None:
        """Feed one message from the network. Anything stale or misrouted is ignored."""
        if m.to != self.id or m.frm == self.id:
            return
        t = m.type
        if m.directory:
            self._known_dirs[m.frm] = m.directory
        if m.to_directory and self.directory and m.to_directory != self.directory:
            if t in _FROM_LEADER:
                self._observe(m.frm)  # meant for an earlier replica of this id: tell the leader
            return
        if t == MessageType.OBSERVE:
            if self._lead is not None:
                self._lead.on_observe(m)
            elif self.leader not in (NONE, m.frm):  # the observer may not know the leader: pass it on
                self.outbox.append(replace(m, to=self.leader, to_directory=""))
            return
        if m.term > self.term:
            if t in _VOTES:
                in_lease = self.config.check_quorum and self.leader != NONE
                in_lease = in_lease and self.election_elapsed < self.config.election_timeout_ticks
                if in_lease and m.context != TRANSFER_CONTEXT:
                    return
            if t == MessageType.PRE_VOTE or (t == MessageType.PRE_VOTE_RESP and not m.reject):
                pass
            else:
                self._become_follower(m.term, m.frm if t in _FROM_LEADER else NONE)
        elif m.term < self.term:
            if t in (MessageType.APP, MessageType.HEARTBEAT):
                self.send(Message(MessageType.APP_RESP, self.id, m.frm, self.term))
            elif t in _VOTES:
                self.send(Message(vote_response_type(t), self.id, m.frm, self.term, reject=True))
            return
        if t in _VOTES:
            follower.handle_vote(self, m)
        elif self._lead is not None:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            follower.step_follower(self, m)
        else:
            self._step_candidate(m)

    # -- output --------------------------------------------------------------------------

    def ready(self) -> Ready | None:
        """Everything to persist, send and apply now; ``None`` if there is nothing."""
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready before asking for another")
        if self._lead is not None:
            self._lead.flush()
            if not self.is_voter and self.log.committed >= self.conf_index:
                self._become_follower(self.term, NONE)  # our removal committed: step down
        log = self.log
        hard = HardState(self.term, self.vote, log.committed)
        soft = SoftState(self.leader, self.role)
        entries = log.unstable_entries()
        snapshot = log.pending_snapshot
        start = max(log.applied, snapshot.index if snapshot else 0) + 1
        committed = log.slice(start, log.committed + 1) if log.committed >= start else ()
        hard_changed = hard != self._prev_hard
        changed = hard_changed or entries or snapshot or committed or self.outbox or self.read_states
        if not changed and soft == self._prev_soft:
            return None
        prev = self._prev_hard
        rd = Ready(
            soft_state=soft,
            hard_state=hard if hard_changed else None,
            entries=entries,
            snapshot=snapshot,
            messages=tuple(self.outbox),
            committed_entries=committed,
            read_states=tuple(self.read_states),
            must_sync=bool(entries or snapshot or hard.term != prev.term or hard.vote != prev.vote),
        )
        self.outbox = []
        self.read_states = []
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver persisted, sent and applied ``rd`` as the contract says."""
        if rd is not self._outstanding:
            raise RuntimeError("advance() must be given the Ready last returned by ready()")
        self._outstanding = None
        log = self.log
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        self._prev_soft = rd.soft_state
        if rd.snapshot is not None:
            log.stable_snapshot_to(rd.snapshot.index)
            log.applied = max(log.applied, rd.snapshot.index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if rd.committed_entries:
            log.applied = max(log.applied, rd.committed_entries[-1].index)

    def status(self) -> Status:
        log = self.log
        match = tuple(sorted((k, p.match) for k, p in self._lead.progress.items())) if self._lead else ()
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            vote=self.vote,
            leader=self.leader,
            commit=log.committed,
            applied=log.applied,
            first_index=log.first_index,
            last_index=log.last_index,
            last_term=log.last_term,
            snapshot_index=log.offset,
            match=match,
            voters=self.voters,
            observers=self._lead.observers() if self._lead else (),
            directory=self.directory,
            is_voter=self.is_voter,
        )

    def entry(self, index: int) -> Entry | None:
        """The log entry at ``index``, or ``None`` if compacted or not (yet) present."""
        k = index - self.log.offset
        return self.log.entries[k - 1] if 0 < k <= len(self.log.entries) else None

    def send(self, m: Message) -> None:
        to_dir = self._to_directory(m)
        if self.directory or to_dir:
            m = replace(m, directory=self.directory, to_directory=to_dir)
        self.outbox.append(m)

    def _to_directory(self, m: Message) -> str:
        """The recipient's directory as we know it; for a vote request, the voter set's."""
        if m.type in _VOTES:
            voter = membership.find(self.voters, m.to)
            return voter.directory if voter else ""
        if self._lead is not None:
            pr = self._lead.progress.get(m.to)
            if pr is not None:
                return pr.directory
        return self._known_dirs.get(m.to, "")

    # -- membership ----------------------------------------------------------------------

    def add_voter(self, node_id: int, address: str = "") -> int:
        """Propose adding the observer ``node_id`` (caught up) as a voter; returns the CONF index."""
        voter = self._leader_for_change().caught_up_observer(node_id, address)
        return self._propose_voters(membership.with_voter(self.voters, voter))

    def remove_voter(self, node_id: int) -> int:
        """Propose removing voter ``node_id``; returns the CONF index."""
        self._leader_for_change()
        return self._propose_voters(membership.without_voter(self.voters, node_id))

    def _leader_for_change(self) -> Leader:
        lead = self._lead
        if lead is None:
            raise NotLeader(self.leader)
        if lead.transferee != NONE:
            raise TransferInProgress(lead.transferee)
        why = lead.change_blocked()
        if why:
            raise membership.ChangeNotReady(why)
        return lead

    def _propose_voters(self, voters: tuple[Voter, ...]) -> int:
        lead = self._lead
        assert lead is not None
        index = self.log.last_index + 1
        entry = Entry(self.term, index, kind=EntryKind.CONF, voters=voters)
        self.log.append((entry,))
        self._refresh_voters(recompute=True)
        lead.appended(index)
        return index

    def _refresh_voters(self, appended: Sequence[Entry] = (), recompute: bool = False) -> None:
        """Keep ``voters`` equal to the set in force after a change of the log."""
        conf = self._conf_entry
        if conf is not None and conf.index > self.log.offset and self.entry(conf.index) is not conf:
            recompute = True  # the CONF entry we followed was truncated away
        if not (recompute or any(e.kind == EntryKind.CONF for e in appended)):
            return
        log = self.log
        voters, index = membership.voters_at(log.snapshot, log.entries, self._bootstrap)
        self._conf_entry = self.entry(index) if index else None
        self.voters = voters
        self.conf_index = index
        self.quorum = membership.quorum_size(voters)
        self.is_voter = membership.is_voter(voters, self.id, self.directory)
        mine = membership.find(voters, self.id)
        if mine is not None and mine.directory and self.directory and mine.directory != self.directory:
            self._displaced = True  # the voter set names an earlier replica of our id
        if self._lead is not None:
            self._lead.voters_changed()
        elif not self.is_voter and self.leader != NONE and self._wants_join():
            self._observe(self.leader)  # learned we are not a voter: ask to join now

    @property
    def electable(self) -> bool:
        """Whether this replica may campaign: a voter, or one that an uncommitted CONF entry removed."""
        log = self.log
        if self.is_voter or self.conf_index <= log.committed:
            return self.is_voter
        before, _ = membership.voters_at(log.snapshot, log.slice(log.first_index, self.conf_index), self._bootstrap)
        return membership.is_voter(before, self.id, self.directory)

    def _wants_join(self) -> bool:
        return self.config.auto_join and self._displaced and not self.is_voter

    def _observe(self, to: int = NONE) -> None:
        """Ask the leader (``to``, or every voter we know) to replicate to this replica."""
        context = JOIN_CONTEXT if self._wants_join() else b""
        targets = (to,) if to else sorted({v.id for v in self.voters} | set(self.config.voters))
        for peer in targets:
            if peer != self.id:
                self.send(Message(MessageType.OBSERVE, self.id, peer, self.term, context=context))

    # -- roles ---------------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
        self.leader = NONE
        self.election_elapsed = 0
        self.randomized_timeout = self.config.election_timeout_ticks + self._rng.below(
            self.config.election_timeout_ticks
        )
        self.votes = {}
        self._lead = None

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        lead = self._lead = Leader(self)
        index = self.log.last_index + 1
        self.log.append((Entry(self.term, index, b"", EntryKind.NOOP),))
        lead.appended(index)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self.role = Role.PRE_CANDIDATE
            self.leader = NONE
            self.votes = {}
            kind, term = MessageType.PRE_VOTE, self.term + 1
        else:
            self._reset(self.term + 1)
            self.role = Role.CANDIDATE
            self.vote = self.id
            kind, term = MessageType.VOTE, self.term
        if self.is_voter and self._poll(self.id, True):
            return
        context = TRANSFER_CONTEXT if transfer else b""
        log = self.log
        for v in self.voters:
            if v.id != self.id:
                self.send(
                    Message(kind, self.id, v.id, term, log_term=log.last_term, index=log.last_index, context=context)
                )

    def _poll(self, frm: int, granted: bool) -> bool:
        """Record a vote; returns True if the election was decided by it."""
        self.votes.setdefault(frm, granted)
        yes = sum(1 for g in self.votes.values() if g)
        if yes >= self.quorum:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
            return True
        if len(self.votes) - yes >= self.quorum:
            self._become_follower(self.term, NONE)
            return True
        return False

    # -- handlers ------------------------------------------------------------------------

    def _step_leader(self, m: Message) -> None:
        lead = self._lead
        assert lead is not None
        t = m.type
        if t == MessageType.APP_RESP:
            lead.on_append_response(m)
        elif t == MessageType.HEARTBEAT_RESP:
            lead.on_heartbeat_response(m)
        elif t == MessageType.READ_INDEX:
            lead.read_index(m.context, m.frm)

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in _FROM_LEADER:
            self._become_follower(self.term, m.frm)
            follower.step_follower(self, m)
        elif t == (
            MessageType.VOTE_RESP if self.role == Role.CANDIDATE else MessageType.PRE_VOTE_RESP
        ) and membership.is_voter(self.voters, m.frm, m.directory):
            self._poll(m.frm, not m.reject)
