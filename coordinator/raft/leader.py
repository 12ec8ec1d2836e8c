"""Leader: the state that exists only while a node leads a term, and what it does.

A ``Leader`` is created by ``RaftNode._become_leader`` and thrown away on step-down, so
no replication or read state can leak into a later term.

Replication:
- Every follower has a ``Progress`` (see progress.py). ``send_append`` sends the next
  batch of at most ``max_entries_per_msg`` entries, or the snapshot if the follower
  needs entries that were compacted. Proposals are not sent one by one: the node
  marks the leader dirty and ``flush`` broadcasts once per Ready, so entries proposed
  together travel together (batching); in REPLICATE several APPs may be in flight
  (pipelining, capped by ``max_inflight_msgs``).
- Commit (Raft §5.3, §5.4.2): the commit index is the largest index held by a
  quorum of voters (the leader counts its own last index) and is only advanced to an
  entry of the current term; older entries commit implicitly with it. That is why a
  new leader appends a NOOP at once.
- Heartbeats go out every ``heartbeat_ticks`` with ``commit = min(match, commit)``;
  a heartbeat response un-pauses a probing follower and re-sends whatever it is
  missing, which is how lost APPs are recovered.

Check quorum: every election timeout (``check_quorum_ticks`` when set: the controller's
driver uses twice the election timeout) the leader counts the voters it heard from since
the previous count (itself included); without a quorum it steps down, so a leader
isolated by a partition stops believing it leads after at most two such windows. A
longer window than the followers' timeout keeps a short election timeout from deposing a
healthy leader whose only live follower stalls briefly while the third voter is down.
(The nodes in the majority elect a new leader meanwhile; pre-vote plus this rule also
give "leader stickiness": a voter that hears from a live leader ignores vote requests.)

ReadIndex (no lease): a read records ``index = commit`` and waits until a quorum
acknowledges a heartbeat sent after the read was recorded (the heartbeat carries the
newest pending ``context``). That proves that no other leader with a newer term
existed when the read arrived, so every write committed before the read is within
``index``. A lease would skip the round trip but assumes bounded clock drift between
controllers (a paused VM or a stepped clock breaks it); the controller quorum's read
rate does not justify that risk. A new leader does not yet know the true commit index
until an entry of its own term commits, so reads wait for its NOOP to commit. A single
voter answers at once. Reads pending when the leader steps down are dropped; the
driver times its read requests out and retries.

Voters and observers (membership.py): the leader keeps a ``Progress`` for every voter
and for every observer that sent OBSERVE, and replicates to all of them; only a
voter's progress whose directory matches the voter set counts toward commit, check
quorum and ReadIndex acknowledgements (the leader counts itself only while it is a
voter). A response or OBSERVE from another directory of a tracked id replaces that
progress (a new replica, probed from scratch). An observer not heard from during a
check-quorum round is forgotten (if it held a voter's id, that voter is tracked
again); it sends OBSERVE again after an election timeout.
On each tick, once a change is allowed, the leader binds the directories of unbound
voters it has heard from, then carries out auto-join requests (remove the old
replica of the id, then add the new one) — one CONF entry at a time.

Leadership transfer: the leader stops accepting proposals, brings the transferee up to
date, then sends it TIMEOUT_NOW; the transferee campaigns at once (no pre-vote) with
``TRANSFER_CONTEXT`` so voters in a lease still answer. The transfer is abandoned after
an election timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.raft import membership
from coordinator.raft.messages import JOIN_CONTEXT, NONE, Message, MessageType, Voter
from coordinator.raft.progress import Progress, ProgressState
from coordinator.raft.ready import ReadState

if TYPE_CHECKING:
    from coordinator.raft.core import RaftNode


class _PendingRead:
    __slots__ = ("acks", "context", "index", "requester")

    def __init__(self, context: bytes, index: int, requester: int, me: int) -> None:
        self.context = context
        self.index = index
        self.requester = requester
        self.acks = {me} if me != NONE else set()


class Leader:
    __slots__ = (
        "dirty",
        "heartbeat_elapsed",
        "node",
        "peers",
        "progress",
        "read_queue",
        "reads",
        "reads_before_commit",
        "transferee",
    )

    def __init__(self, node: RaftNode) -> None:
        self.node = node
        cfg = node.config
        last = node.log.last_index
        self.progress: dict[int, Progress] = {node.id: Progress(last + 1, cfg.max_inflight_msgs, node.directory)}
        me = self.progress[node.id]
        me.match = last
        me.become_replicate()
        self.peers: tuple[int, ...] = ()
        self.voters_changed()
        self.heartbeat_elapsed = 0
        self.dirty = False
        self.transferee = NONE
        self.read_queue: list[_PendingRead] = []
        self.reads: dict[bytes, _PendingRead] = {}
        self.reads_before_commit: list[tuple[bytes, int]] = []

    # -- voters and observers ------------------------------------------------------------

    def voters_changed(self) -> None:
        """The voter set changed (or the leader started): track every voter."""
        node = self.node
        for v in node.voters:
            if v.id not in self.progress:
                self.progress[v.id] = Progress(node.log.last_index + 1, node.config.max_inflight_msgs, v.directory)
        self.peers = tuple(sorted(k for k in self.progress if k != node.id))
        if self.maybe_commit():
            self.broadcast_append()

    def counts(self, node_id: int) -> bool:
        """Whether this replica's progress counts toward a quorum (a matching voter)."""
        voter = membership.find(self.node.voters, node_id)
        return voter is not None and membership.matches(voter, self.progress[node_id].directory)

    def observers(self) -> tuple[int, ...]:
        return tuple(k for k in self.peers if not self.counts(k))

    def _track(self, m: Message) -> Progress | None:
        """The progress of the replica that sent ``m``; a new one if it is another directory."""
        pr = self.progress.get(m.frm)
        if pr is None and m.type != MessageType.OBSERVE:
            return None
        if pr is None or (m.directory and pr.directory and pr.directory != m.directory):
            pr = self.progress[m.frm] = Progress(self.node.log.last_index + 1, self.node.config.max_inflight_msgs)
            self.peers = tuple(sorted(k for k in self.progress if k != self.node.id))
        if m.directory and not pr.directory:
            pr.directory = m.directory
        pr.recent_active = True
        return pr

    def on_observe(self, m: Message) -> None:
        pr = self._track(m)
        assert pr is not None
        pr.wants_join = m.context == JOIN_CONTEXT
        pr.probe_sent = False
        self.send_append(m.frm)

    def caught_up_observer(self, node_id: int, address: str) -> Voter:
        """The voter to add for observer ``node_id``, refused unless it holds everything committed."""
        node = self.node
        pr = self.progress.get(node_id)
        if node_id == node.id:
            raise membership.DuplicateVoter(f"node {node_id} leads: it is a voter")
        if pr is None:
            raise membership.ChangeNotReady(f"node {node_id} is not an observer of leader {node.id} (is it running?)")
        if pr.match < node.log.committed:
            raise membership.ChangeNotReady(
                f"node {node_id} has not caught up (holds up to {pr.match}, committed {node.log.committed})"
            )
        return Voter(node_id, pr.directory, address)

    def change_blocked(self) -> str:
        """Why a membership change cannot be proposed now ("" if it can)."""
        node = self.node
        log = node.log
        if log.term(log.committed) != node.term:
            return "the leader has not committed an entry of its term yet; retry shortly"
        if node.conf_index > log.committed:
            return f"the membership change at index {node.conf_index} is not committed yet; retry shortly"
        return ""

    def _change_membership(self) -> None:
        """Bind unbound voters' directories, then serve one auto-join request."""
        node = self.node
        if self.transferee != NONE or self.change_blocked():
            return
        known = {k: pr.directory for k, pr in self.progress.items() if pr.directory}
        voters = membership.bound(node.voters, known)
        if voters != node.voters:
            node._propose_voters(voters)
            return
        for k in self.peers:
            pr = self.progress[k]
            if not (pr.wants_join and pr.directory and pr.match >= node.log.committed):
                continue
            voter = membership.find(node.voters, k)
            if voter is None:
                node._propose_voters(membership.with_voter(node.voters, Voter(k, pr.directory)))
                return
            if voter.directory != pr.directory and len(node.voters) > 1:
                node._propose_voters(membership.without_voter(node.voters, k))
                return

    # -- ticks ---------------------------------------------------------------------------

    def tick(self) -> bool:
        """One tick; returns False if the leader must step down (check quorum failed)."""
        node = self.node
        cfg = node.config
        node.election_elapsed += 1
        if node.election_elapsed >= (cfg.check_quorum_ticks or cfg.election_timeout_ticks):
            node.election_elapsed = 0
            if cfg.check_quorum and not self._quorum_active():
                return False
            self.transferee = NONE
        self._change_membership()
        for peer in self.peers:
            pr = self.progress[peer]
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= cfg.election_timeout_ticks:
                    pr.snapshot_index = 0  # presumed lost: probe from match, resend if needed
                    pr.become_probe()
        self.heartbeat_elapsed += 1
        if self.heartbeat_elapsed >= cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self.broadcast_heartbeat()
        return True

    def _quorum_active(self) -> bool:
        node = self.node
        active = 1 if node.is_voter else 0
        for peer in self.peers:
            pr = self.progress[peer]
            if self.counts(peer):
                active += pr.recent_active
            elif not pr.recent_active:
                del self.progress[peer]  # an observer that went quiet
            pr.recent_active = False
        self.voters_changed()  # a voter whose id that observer held (a wiped replica) is tracked again
        return active >= node.quorum

    # -- sending -------------------------------------------------------------------------

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        node = self.node
        log = node.log
        pr = self.progress[to]
        if pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            snap = log.snapshot
            pr.become_snapshot(snap.index)
            node.send(Message(MessageType.SNAP, node.id, to, node.term, snapshot=snap))
            return True
        entries = log.slice(pr.next, min(log.last_index + 1, pr.next + node.config.max_entries_per_msg))
        if not entries and not send_if_empty:
            return False
        pr.sent_commit = max(pr.sent_commit, log.committed)
        node.send(
            Message(
                MessageType.APP,
                node.id,
                to,
                node.term,
                log_term=prev_term,
                index=prev,
                entries=entries,
                commit=log.committed,
            )
        )
        pr.sent(prev + len(entries), len(entries))
        return True

    def broadcast_append(self) -> None:
        for peer in self.peers:
            self.send_append(peer)

    def flush(self) -> None:
        """Send entries proposed since the last flush, one batch per follower."""
        if self.dirty:
            self.dirty = False
            for peer in self.peers:
                while self.send_append(peer, send_if_empty=False):
                    pass

    def broadcast_heartbeat(self) -> None:
        node = self.node
        context = self.read_queue[-1].context if self.read_queue else b""
        commit = node.log.committed
        for peer in self.peers:
            pr = self.progress[peer]
            pr.sent_commit = max(pr.sent_commit, min(pr.match, commit))
            node.send(
                Message(MessageType.HEARTBEAT, node.id, peer, node.term, commit=min(pr.match, commit), context=context)
            )

    # -- proposals and commit ------------------------------------------------------------

    def appended(self, last_index: int) -> None:
        """The leader appended entries up to ``last_index`` to its own log."""
        self.progress[self.node.id].maybe_update(last_index)
        self.dirty = True
        if self.maybe_commit():
            self.broadcast_append()

    def maybe_commit(self) -> bool:
        node = self.node
        log = node.log
        matches = sorted((pr.match for k, pr in self.progress.items() if self.counts(k)), reverse=True)
        if len(matches) < node.quorum:
            return False
        index = matches[node.quorum - 1]
        if index <= log.committed or log.term(index) != node.term:
            return False
        log.commit_to(index)
        if self.reads_before_commit:
            waiting, self.reads_before_commit = self.reads_before_commit, []
            for context, requester in waiting:
                self.read_index(context, requester)
        return True

    # -- responses -----------------------------------------------------------------------

    def on_append_response(self, m: Message) -> None:
        node = self.node
        pr = self._track(m)
        if pr is None:
            return
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint = node.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
            if pr.maybe_decrease(m.index, hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        if not (pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE)):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match + 1 >= node.log.first_index:
                pr.become_replicate()
        else:
            pr.free_acknowledged(m.index)
        if self.maybe_commit():
            self.broadcast_append()
        while self.send_append(m.frm, send_if_empty=False):
            pass
        if pr.sent_commit < node.log.committed:
            self.send_append(m.frm)
        if m.frm == self.transferee and pr.match == node.log.last_index:
            node.send(Message(MessageType.TIMEOUT_NOW, node.id, m.frm, node.term))

    def on_heartbeat_response(self, m: Message) -> None:
        pr = self._track(m)
        if pr is None:
            return
        pr.probe_sent = False
        if pr.state == ProgressState.REPLICATE and pr.is_paused():
            pr.free_first()
        if pr.match < self.node.log.last_index or pr.state == ProgressState.PROBE:
            self.send_append(m.frm)
        if m.context:
            self._acknowledge_read(m.context, m.frm)

    # -- ReadIndex -----------------------------------------------------------------------

    def read_index(self, context: bytes, requester: int) -> None:
        node = self.node
        log = node.log
        if log.term(log.committed) != node.term:
            self.reads_before_commit.append((context, requester))
            return
        if node.quorum == 1 and node.is_voter:
            self._answer_read(context, log.committed, requester)
            return
        if context in self.reads:
            return
        read = _PendingRead(context, log.committed, requester, node.id if node.is_voter else NONE)
        self.reads[context] = read
        self.read_queue.append(read)
        self.broadcast_heartbeat()

    def _acknowledge_read(self, context: bytes, frm: int) -> None:
        read = self.reads.get(context)
        if read is None or not self.counts(frm):
            return
        read.acks.add(frm)
        if len(read.acks) < self.node.quorum:
            return
        position = self.read_queue.index(read)
        released, self.read_queue = self.read_queue[: position + 1], self.read_queue[position + 1 :]
        for r in released:
            del self.reads[r.context]
            self._answer_read(r.context, r.index, r.requester)

    def _answer_read(self, context: bytes, index: int, requester: int) -> None:
        node = self.node
        if requester == node.id:
            node.read_states.append(ReadState(index, context))
        else:
            node.send(Message(MessageType.READ_INDEX_RESP, node.id, requester, node.term, index=index, context=context))

    # -- leadership transfer -------------------------------------------------------------

    def transfer(self, to: int) -> None:
        node = self.node
        if self.transferee == to:
            return
        self.transferee = to
        node.election_elapsed = 0
        if self.progress[to].match == node.log.last_index:
            node.send(Message(MessageType.TIMEOUT_NOW, node.id, to, node.term))
        else:
            self.send_append(to)
