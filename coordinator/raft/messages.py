"""Raft wire and storage values: messages, log entries, hard state, snapshots.

Everything here is an immutable, slotted dataclass so a value can be shared between
the core, the driver's outbox and the simulation without defensive copies. The gRPC
driver maps each type one to one onto protobuf messages (never pickle); the field
names follow etcd-io/raft's ``raftpb`` so that reading both side by side is easy.

Conventions:
- Node ids are positive integers; ``NONE`` (0) means "no node" (no vote, no known
  leader), which is also protobuf's default value.
- Log indexes start at 1; index 0 with term 0 is the empty log's sentinel, so the
  first append of any leader matches at ``(index=0, log_term=0)``.
- ``Message.term`` is the sender's term, except in ``PRE_VOTE`` (the term the sender
  would campaign at, its term + 1) and a granted ``PRE_VOTE_RESP`` (that same future
  term). A pre-vote never changes anyone's term or vote.
- Field meaning per type (fields not listed stay at their defaults):
  - ``APP``: ``index``/``log_term`` identify the entry just before ``entries``;
    ``commit`` is the leader's commit index.
  - ``APP_RESP``: accepted: ``index`` is the follower's last index known to match the
    leader. Rejected (``reject=True``): ``index`` echoes the rejected ``APP.index``;
    ``reject_hint``/``log_term`` name the follower's largest index at or below it
    whose term is <= the leader's ``log_term``, so the leader skips a whole
    divergent term per round trip instead of one entry.
  - ``VOTE``/``PRE_VOTE``: ``index``/``log_term`` are the candidate's last entry;
    ``context`` is ``TRANSFER_CONTEXT`` when a leadership transfer asks voters to
    ignore their leader lease.
  - ``VOTE_RESP``/``PRE_VOTE_RESP``: ``reject`` says whether the vote was granted.
  - ``HEARTBEAT``: ``commit`` is min(follower's match, leader commit) so a follower
    never commits past what it is known to hold; ``context`` is the newest pending
    ReadIndex request, echoed in ``HEARTBEAT_RESP``.
  - ``SNAP``: ``snapshot`` carries the whole snapshot (InstallSnapshot as one message).
  - ``READ_INDEX``: a follower forwards a client read; ``context`` identifies it.
    ``READ_INDEX_RESP``: ``index`` is the read index for ``context``.
  - ``TIMEOUT_NOW``: the leader tells a caught-up follower to campaign at once.
  - ``OBSERVE``: a replica that is not a voter (or whose directory is not the one
    the voter set names) asks the leader to replicate to it; term-less, only a
    leader acts on it. ``context`` is ``JOIN_CONTEXT`` when the replica asks to be
    made a voter (auto-join, membership.py).
- Every message carries ``directory``, the sender's directory id (KIP-853: a
  replica's storage identity, new after a disk is wiped), and ``to_directory``,
  the recipient's directory as the sender knows it ("" when unknown). A replica
  drops a message addressed to another directory of its id (membership.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NONE = 0
"""The "no node" id: no vote cast, no leader known."""

TRANSFER_CONTEXT = b"transfer"
"""``Message.context`` of a vote caused by leadership transfer (bypasses the lease)."""

JOIN_CONTEXT = b"join"
"""``Message.context`` of an OBSERVE from a replica that asks to become a voter."""


class MessageType(enum.IntEnum):
    APP = 1
    APP_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9
    READ_INDEX = 10
    READ_INDEX_RESP = 11
    TIMEOUT_NOW = 12
    OBSERVE = 13


class EntryKind(enum.IntEnum):
    NORMAL = 0
    NOOP = 1
    """Appended by every new leader (Raft §5.4.2); the state machine skips it."""
    CONF = 2
    """A new voter set (``Entry.voters``), in force from the moment it is appended."""


@dataclass(frozen=True, slots=True)
class Voter:
    """A voter of the quorum: node id, directory id ("" = not bound yet), address.

    The address is opaque to the core ("" = the driver's static address book).
    """

    id: int
    directory: str = ""
    address: str = ""


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL
    voters: tuple[Voter, ...] = ()
    """Only in CONF entries: the whole new voter set."""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be on disk before any message that depends on it leaves the node."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine at ``index`` (whose entry had ``term``), opaque ``data``."""

    index: int = 0
    term: int = 0
    voters: tuple[Voter, ...] = ()
    """The voter set in force at ``index`` (empty: the bootstrap voters of ``Config``)."""
    data: bytes = b""


EMPTY_SNAPSHOT = Snapshot()
EMPTY_HARD_STATE = HardState()


@dataclass(frozen=True, slots=True)
class Message:
    type: MessageType
    frm: int
    to: int
    term: int
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""
    directory: str = ""
    to_directory: str = ""


_VOTE_RESPONSES = {MessageType.VOTE_RESP: MessageType.VOTE, MessageType.PRE_VOTE_RESP: MessageType.PRE_VOTE}


def vote_response_type(t: MessageType) -> MessageType:
    """The response type for a ``VOTE`` or ``PRE_VOTE`` request."""
    return MessageType.VOTE_RESP if t == MessageType.VOTE else MessageType.PRE_VOTE_RESP


def describe_entry(e: Entry) -> str:
    """``term/index`` plus the payload, e.g. ``2/5 "put x"`` or ``2/4 noop``."""
    if e.kind == EntryKind.NOOP:
        return f"{e.term}/{e.index} noop"
    if e.kind == EntryKind.CONF:
        return f"{e.term}/{e.index} conf " + ",".join(describe_voter(v) for v in e.voters)
    text = e.data.decode("utf-8", "backslashreplace")
    return f'{e.term}/{e.index} "{text}"'


def describe_voter(v: Voter) -> str:
    """``3`` or ``3:dir`` (the directory id's first 8 characters)."""
    return f"{v.id}:{v.directory[:8]}" if v.directory else str(v.id)


def describe_message(m: Message) -> str:
    """A one-line, stable rendering for logs, transcripts and simulation failures."""
    parts = [f"{m.frm}->{m.to} {m.type.name} term={m.term}"]
    t = m.type
    if t in (MessageType.APP, MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"log={m.log_term}/{m.index}")
    if t == MessageType.APP:
        parts.append(f"commit={m.commit}")
        if m.entries:
            parts.append("entries=[" + ", ".join(describe_entry(e) for e in m.entries) + "]")
    elif t == MessageType.APP_RESP:
        parts.append(f"index={m.index}")
        if m.reject:
            parts.append(f"rejected hint={m.log_term}/{m.reject_hint}")
    elif t in _VOTE_RESPONSES:
        parts.append("rejected" if m.reject else "granted")
    elif t == MessageType.HEARTBEAT:
        parts.append(f"commit={m.commit}")
    elif t == MessageType.READ_INDEX_RESP:
        parts.append(f"index={m.index}")
    elif t == MessageType.SNAP and m.snapshot is not None:
        parts.append(f"snapshot={m.snapshot.term}/{m.snapshot.index}")
    if m.directory:
        parts.append(f"dir={m.directory[:8]}")
    if m.to_directory:
        parts.append(f"to_dir={m.to_directory[:8]}")
    if m.context:
        parts.append("ctx=" + m.context.decode("utf-8", "backslashreplace"))
    return " ".join(parts)
