"""What a follower, observer or voter does with a message from a leader or a candidate.

Functions of a ``RaftNode`` (core.py routes messages here after its term checks).

Votes: a node grants at most one VOTE per term (core.py states the term rules and
why the vote is persisted first). It does not check the candidate's directory
against its own voter set, which may be stale (membership.py).

Followers: an APP is accepted only if the log matches at ``(index, log_term)``; an
accepted APP never truncates entries that agree, so duplicates and reordering are
harmless; a rejection carries a hint for fast backtracking. A SNAP older than the commit
index is acknowledged without effect; one whose last entry is already in the log only
advances the commit index; otherwise it replaces the log. Any APP, HEARTBEAT or SNAP of
the current term resets the election timer and names the leader. Followers forward
``read_index`` to the leader; ``propose`` on a non-leader raises ``NotLeader``.

A follower applies every CONF entry as soon as it is appended and brings back the
set before a truncated one (``RaftNode._refresh_voters``); TIMEOUT_NOW makes only a
voter campaign. A displaced replica that wants to join (auto-join) repeats its
OBSERVE with ``JOIN_CONTEXT`` on every heartbeat until it is a voter again: the
leader keeps heartbeating an observer, so it never times out to ask again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordinator.raft.messages import NONE, Message, MessageType, vote_response_type
from coordinator.raft.ready import ReadState

if TYPE_CHECKING:
    from coordinator.raft.core import RaftNode

_FROM_LEADER = (MessageType.APP, MessageType.HEARTBEAT, MessageType.SNAP)


def handle_vote(node: RaftNode, m: Message) -> None:
    pre = m.type == MessageType.PRE_VOTE
    can_vote = node.vote == m.frm or (node.vote == NONE and node.leader == NONE) or (pre and m.term > node.term)
    resp = vote_response_type(m.type)
    if can_vote and node.log.is_up_to_date(m.index, m.log_term):
        node.send(Message(resp, node.id, m.frm, m.term))
        if not pre:
            node.election_elapsed = 0
            node.vote = m.frm
    else:
        node.send(Message(resp, node.id, m.frm, node.term, reject=True))


def step_follower(node: RaftNode, m: Message) -> None:
    t = m.type
    if t in _FROM_LEADER:
        node.election_elapsed = 0
        node.leader = m.frm
        if t == MessageType.APP:
            handle_append(node, m)
        elif t == MessageType.HEARTBEAT:
            node.log.commit_to(m.commit)
            node.send(Message(MessageType.HEARTBEAT_RESP, node.id, m.frm, node.term, context=m.context))
            if node._wants_join():
                node._observe(m.frm)  # again until it is a voter: one lost JOIN must not strand it
        else:
            handle_snapshot(node, m)
    elif t == MessageType.TIMEOUT_NOW and node.is_voter:
        node._campaign(pre=False, transfer=True)
    elif t == MessageType.READ_INDEX_RESP:
        node.read_states.append(ReadState(m.index, m.context))


def handle_append(node: RaftNode, m: Message) -> None:
    log = node.log
    if m.index < log.committed:
        node.send(Message(MessageType.APP_RESP, node.id, m.frm, node.term, index=log.committed))
        return
    last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
    node._refresh_voters(m.entries)
    if last_new is not None:
        node.send(Message(MessageType.APP_RESP, node.id, m.frm, node.term, index=last_new))
        return
    hint, hint_term = log.find_conflict_by_term(min(m.index, log.last_index), m.log_term)
    node.send(
        Message(
            MessageType.APP_RESP,
            node.id,
            m.frm,
            node.term,
            index=m.index,
            reject=True,
            reject_hint=hint,
            log_term=hint_term,
        )
    )


def handle_snapshot(node: RaftNode, m: Message) -> None:
    snap = m.snapshot
    log = node.log
    if snap is None or snap.index <= log.committed:
        node.send(Message(MessageType.APP_RESP, node.id, m.frm, node.term, index=log.committed))
        return
    if log.match_term(snap.index, snap.term):
        log.commit_to(snap.index)
    else:
        log.restore(snap)
        node._refresh_voters(recompute=True)
    node.send(Message(MessageType.APP_RESP, node.id, m.frm, node.term, index=log.committed))
