"""Storage: step 1 of the Ready contract (persist), written once; ``MemoryStorage`` keeps it in memory.

The Ready contract (coordinator/raft/ready.py) makes the driver persist a Ready's
snapshot, entries and hard state before it sends anything. What that means is
decided here, and only here, as a ``StorageWrite``: the writes of ONE atomic batch,
applied in field order. ``Storage.persist`` and ``Storage.compact`` produce them;
a concrete storage only knows how to apply one atomically:

- ``RaftStorage`` (coordinator/raft_storage.py) puts it into one RocksDB WriteBatch;
- ``MemoryStorage`` (below) applies it to lists, for the seeded simulation
  (tests/raft_sim.py), the transcript harness (coordinator/raft/rafttest.py) and
  the core's unit tests — the way etcd-io/raft ships its ``MemoryStorage``.

The persist step, for a Ready ``rd`` (synced when ``rd.must_sync``):
  a. ``rd.snapshot``: store it and delete the WHOLE stored log (the core replaced its
     log with the snapshot: entries on either side of its index are gone);
  b. ``rd.entries``: delete every stored entry with index >= ``rd.entries[0].index``
     (a conflicting suffix the leader overwrote), then store ``rd.entries``;
  c. ``rd.hard_state``: store it (term, vote, commit).
  A Ready with none of the three writes nothing. One atomic write means a crash
  leaves either all of a Ready or none of it.

Compaction (after ``RaftNode.compact``) stores the snapshot and deletes every entry
at or below its index, in one synced write, so the stored log always starts right
after the stored snapshot. Stored entries are therefore contiguous from
``snapshot.index + 1``, which ``MemoryStorage`` relies on to delete by position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.raft.messages import EMPTY_HARD_STATE, EMPTY_SNAPSHOT, Entry, HardState, Snapshot
from coordinator.raft.ready import PersistedState, Ready


@dataclass(frozen=True, slots=True)
class StorageWrite:
    """One atomic write to Raft storage; its parts are applied in this order."""

    snapshot: Snapshot | None = None
    delete_before: int = 0
    """Delete every stored entry with an index below this (compaction)."""
    truncate_from: int | None = None
    """Delete every stored entry with an index at or above this (a replaced log or suffix)."""
    entries: tuple[Entry, ...] = ()
    hard_state: HardState | None = None
    sync: bool = True


def persist_write(ready: Ready) -> StorageWrite | None:
    """Step 1 of the contract for ``ready`` (see the module docstring); None if nothing to write."""
    if ready.snapshot is None and not ready.entries and ready.hard_state is None:
        return None
    truncate_from = None
    if ready.snapshot is not None:
        truncate_from = 0
    elif ready.entries:
        truncate_from = ready.entries[0].index
    return StorageWrite(
        snapshot=ready.snapshot,
        truncate_from=truncate_from,
        entries=ready.entries,
        hard_state=ready.hard_state,
        sync=ready.must_sync,
    )


def compact_write(snapshot: Snapshot) -> StorageWrite:
    """Store ``snapshot`` (from ``RaftNode.compact``) and drop the entries it covers, synced."""
    return StorageWrite(snapshot=snapshot, delete_before=snapshot.index + 1)


class Storage:
    """The persist step over any store that can apply a ``StorageWrite`` atomically."""

    syncs: int = 0
    """Synced writes so far (for metrics and tests)."""

    def persist(self, ready: Ready) -> bool:
        """Write ``ready``'s snapshot, entries and hard state atomically; returns True if it wrote."""
        write = persist_write(ready)
        if write is None:
            return False
        self.write(write)
        if write.sync:
            self.syncs += 1
        return True

    def compact(self, snapshot: Snapshot) -> None:
        """Store ``snapshot`` (from ``RaftNode.compact``) and drop the entries it covers."""
        self.write(compact_write(snapshot))
        self.syncs += 1

    def write(self, write: StorageWrite) -> None:
        """Apply ``write`` atomically; durable before returning when ``write.sync``."""
        raise NotImplementedError

    def load(self) -> PersistedState:
        """Everything made durable so far: what ``RaftNode(config, state)`` restarts from."""
        raise NotImplementedError


@dataclass
class MemoryStorage(Storage):
    """A node's durable Raft state in memory: what survives a simulated crash.

    Every write counts as durable at once; a driver that models fsync latency (the
    simulation) calls ``persist`` when its simulated fsync completes.
    """

    hard_state: HardState = EMPTY_HARD_STATE
    snapshot: Snapshot = EMPTY_SNAPSHOT
    entries: list[Entry] = field(default_factory=list)

    def write(self, write: StorageWrite) -> None:
        if write.snapshot is not None:
            self.snapshot = write.snapshot
        if self.entries:
            first = self.entries[0].index  # stored entries are contiguous: index -> position
            if write.truncate_from is not None:
                del self.entries[max(write.truncate_from - first, 0) :]
            del self.entries[: max(write.delete_before - first, 0)]
        self.entries.extend(write.entries)
        if write.hard_state is not None:
            self.hard_state = write.hard_state

    def load(self) -> PersistedState:
        return PersistedState(self.hard_state, self.snapshot, tuple(self.entries))

    @property
    def last_index(self) -> int:
        return self.entries[-1].index if self.entries else self.snapshot.index
