"""Ready: the core's output, and the contract a driver must keep when it handles one.

``RaftNode.ready()`` returns a ``Ready`` (or ``None`` when there is nothing to do);
the driver handles it completely, in this order, then calls ``advance(ready)``:

1. Persist ``snapshot``, ``entries`` and ``hard_state``, atomically, and synced when
   ``must_sync``: call ``Storage.persist(ready)``. The persist step is written once,
   in coordinator/raft/storage.py, which states what it writes (in short: a snapshot
   replaces the whole stored log, entries replace the stored suffix from their first
   index, then the hard state); the RocksDB storage and the in-memory one both run
   it. Then, if ``snapshot`` is set, restore the state machine from ``snapshot.data``.
2. Send ``messages`` (in any order; the network may drop, delay, duplicate or reorder
   them — the protocol tolerates all of that). Never before step 1 is durable: a vote
   or an append acknowledgement promises that the term, vote and entries survive a
   crash. This is the rule raftos broke.
3. Apply ``committed_entries`` to the state machine in order (``EntryKind.NOOP``
   entries change nothing but still advance the applied index).
4. Answer ``read_states``: the read identified by ``context`` may be served from the
   state machine once its applied index is >= ``index`` (possibly after later Readys).
5. Call ``advance(ready)``.

Rules:
- At most one Ready is outstanding: ``ready()`` raises until the previous one was
  advanced. Between ``ready()`` and ``advance()`` the driver may keep calling
  ``step``, ``tick`` and ``propose`` (e.g. while an fsync is in flight); their effects
  appear in the next Ready.
- A crash at any point loses nothing that matters: the node restarts from what step 1
  made durable (``PersistedState``), and everything else is re-derived or re-sent.
- ``soft_state`` (leader, role) is always the current one; a change of it alone
  makes ``ready()`` return a Ready. It is never persisted.
- ``must_sync`` is False only when the sole change is the commit index (which is
  re-learned from the leader after a crash), so that write may skip the fsync.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.raft.config import Role
from coordinator.raft.messages import EMPTY_HARD_STATE, EMPTY_SNAPSHOT, NONE, Entry, HardState, Message, Snapshot, Voter


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read: answer the request ``context`` once applied >= ``index``."""

    index: int
    context: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    soft_state: SoftState
    hard_state: HardState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    messages: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class PersistedState:
    """What a node restarts from: exactly what its driver made durable in step 1."""

    hard_state: HardState = EMPTY_HARD_STATE
    snapshot: Snapshot = EMPTY_SNAPSHOT
    entries: tuple[Entry, ...] = ()


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a node's state for observers (metrics, ``ketch cluster describe``)."""

    id: int
    role: Role
    term: int
    vote: int
    leader: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    last_term: int
    snapshot_index: int
    match: tuple[tuple[int, int], ...] = ()
    """``(follower id, match index)`` pairs; only a leader knows them."""
    voters: tuple[Voter, ...] = ()
    """The voter set in force on this node."""
    observers: tuple[int, ...] = ()
    """Replicas a leader replicates to that are not (matching) voters."""
    directory: str = ""
    is_voter: bool = True
