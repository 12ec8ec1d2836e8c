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

Check quorum: every election timeout the leader counts the voters it heard from since
the previous count (itself included); without a quorum it steps down, so a leader
isolated by a partition stops believing it leads after at most two election timeouts.
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

Leadership transfer: the leader stops accepting proposals, brings the transferee up to
date, then sends it TIMEOUT_NOW; the transferee campaigns at once (no pre-vote) with
``TRANSFER_CONTEXT`` so voters in a lease still answer. The transfer is abandoned after
an election timeout.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.raft.messages import NONE, Message, MessageType
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
        self.acks = {me}


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
        self.peers = tuple(v for v in cfg.voters if v != cfg.id)
        self.progress = {v: Progress(last + 1, cfg.max_inflight_msgs) for v in cfg.voters}
        me = self.progress[cfg.id]
        me.match = last
        me.become_replicate()
        self.heartbeat_elapsed = 0
        self.dirty = False
        self.transferee = NONE
        self.read_queue: list[_PendingRead] = []
        self.reads: dict[bytes, _PendingRead] = {}
        self.reads_before_commit: list[tuple[bytes, int]] = []

    # -- ticks ---------------------------------------------------------------------------

    def tick(self) -> bool:
        """One tick; returns False if the leader must step down (check quorum failed)."""
        node = self.node
        cfg = node.config
        node.election_elapsed += 1
        if node.election_elapsed >= cfg.election_timeout_ticks:
            node.election_elapsed = 0
            if cfg.check_quorum and not self._quorum_active():
                return False
            self.transferee = NONE
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
        active = 1
        for peer in self.peers:
            pr = self.progress[peer]
            if pr.recent_active:
                active += 1
            pr.recent_active = False
        return active >= self.node.quorum

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
        matches = sorted((pr.match for pr in self.progress.values()), reverse=True)
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
        pr = self.progress[m.frm]
        pr.recent_active = True
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
        pr = self.progress[m.frm]
        pr.recent_active = True
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
        if node.quorum == 1:
            self._answer_read(context, log.committed, requester)
            return
        if context in self.reads:
            return
        read = _PendingRead(context, log.committed, requester, node.id)
        self.reads[context] = read
        self.read_queue.append(read)
        self.broadcast_heartbeat()

    def _acknowledge_read(self, context: bytes, frm: int) -> None:
        read = self.reads.get(context)
        if read is None:
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
