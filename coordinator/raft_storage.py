"""RaftStorage: the controller quorum's durable Raft state, in the node's one RocksDB.

The core keeps its whole uncompacted log in memory and never reads storage
(coordinator/raft/log.py); this module is the write-only mirror of it plus the
``PersistedState`` a node restarts from. It lives in two column families of the
node's ``NodeStore`` (replication/rocks_store.py), encoded with raft.proto:

    raft      index u64 BE     -> RaftEntry
    raftmeta  b"hard"          -> RaftHardState (term, vote, commit)
              b"snap"          -> RaftSnapshot (index, term, voters, data)
              b"dir"           -> this replica's directory id (ASCII hex)

Rules:
- ``persist(ready)`` (step 1 of the Ready contract) and ``compact(snapshot)`` are
  ``Storage``'s (coordinator/raft/storage.py), which states what they write; this
  class only puts each ``StorageWrite`` into ONE WriteBatch, synced when
  ``write.sync``. A synced write also makes every earlier unsynced one durable
  (one WAL).
- ``load()`` reads it all back. Stored entries are contiguous and start after the
  snapshot index by construction; ``load`` checks that and raises
  ``CorruptRaftStorage`` instead of letting a damaged log pass as a shorter one,
  and also when a stored value does not decode (the codec's ``ValueError``).
- ``directory_id()`` is created (random, synced) the first time a store without
  one is opened and never changes after: a wiped store is a new replica
  (KIP-853; coordinator/raft/membership.py). ``wipe`` deletes it too.
- Indexes are below 2**64 - 1, so the 9-byte key ``b"\\xff" * 9`` bounds every
  range deletion from above.
- Threads: ``persist`` and ``compact`` may run in a worker thread
  (``asyncio.to_thread``), one at a time: the driver's single loop task issues them
  in order. ``load`` runs before the driver starts. The store belongs to the
  node; ``RaftStorage`` never closes it.
"""

from __future__ import annotations

import struct
import uuid

from coordinator.raft import EMPTY_HARD_STATE, EMPTY_SNAPSHOT, Entry, HardState, PersistedState, Snapshot
from coordinator.raft.storage import Storage, StorageWrite
from coordinator.raft_codec import (
    entry_from_bytes,
    entry_to_bytes,
    hard_state_from_bytes,
    hard_state_to_bytes,
    snapshot_from_bytes,
    snapshot_to_bytes,
)
from replication.rocks_store import NodeStore

LOG_CF = "raft"
META_CF = "raftmeta"
HARD_KEY = b"hard"
SNAP_KEY = b"snap"
DIR_KEY = b"dir"
_U64 = struct.Struct(">Q")
_END = b"\xff" * 9


class CorruptRaftStorage(Exception):
    """The stored Raft state breaks an invariant this module keeps; refuse to start on it."""


def index_key(index: int) -> bytes:
    return _U64.pack(index)


class RaftStorage(Storage):
    """The Raft log, hard state and snapshot of one node; see the module docstring."""

    def __init__(self, store: NodeStore) -> None:
        self.store = store

    # -- restart ---------------------------------------------------------------------

    def directory_id(self) -> str:
        """This replica's directory id, created on first use (module rules)."""
        meta = self.store.cf[META_CF]
        raw: bytes | None = meta.get(DIR_KEY)
        if raw is not None:
            return raw.decode("ascii")
        directory = uuid.uuid4().hex
        wb = self.store.write_batch()
        wb.put(DIR_KEY, directory.encode("ascii"), self.store.handle[META_CF])
        self.store.write(wb, sync=True)
        return directory

    def load(self) -> PersistedState:
        """Everything ``persist`` and ``compact`` made durable, for ``RaftNode(config, state)``."""
        store = self.store
        meta = store.cf[META_CF]
        raw_hard: bytes | None = meta.get(HARD_KEY)
        raw_snap: bytes | None = meta.get(SNAP_KEY)
        try:
            hard = hard_state_from_bytes(raw_hard) if raw_hard is not None else EMPTY_HARD_STATE
            snap = snapshot_from_bytes(raw_snap) if raw_snap is not None else EMPTY_SNAPSHOT
            entries = self._read_entries()
        except ValueError as exc:
            raise CorruptRaftStorage(f"stored Raft state does not decode: {exc}") from exc
        expected = snap.index + 1
        for e in entries:
            if e.index != expected:
                raise CorruptRaftStorage(f"stored Raft log has index {e.index} where {expected} was expected")
            expected += 1
        last = entries[-1].index if entries else snap.index
        if hard.commit > last:
            raise CorruptRaftStorage(f"stored commit {hard.commit} is beyond the stored log's end {last}")
        return PersistedState(hard_state=hard, snapshot=snap, entries=entries)

    def _read_entries(self) -> tuple[Entry, ...]:
        out: list[Entry] = []
        it = self.store.cf[LOG_CF].iter()
        try:
            it.seek_to_first()
            while it.valid():
                key: bytes = it.key()
                entry = entry_from_bytes(it.value())
                if len(key) != 8 or _U64.unpack(key)[0] != entry.index:
                    raise CorruptRaftStorage(f"Raft log key {key.hex()} does not match entry {entry.index}")
                out.append(entry)
                it.next()
        finally:
            del it  # a live iterator keeps the database open (see rocks_store.py)
        return tuple(out)

    # -- the Ready contract, step 1, and compaction ----------------------------------

    def write(self, write: StorageWrite) -> None:
        store = self.store
        log, meta = store.handle[LOG_CF], store.handle[META_CF]
        wb = store.write_batch()
        if write.snapshot is not None:
            wb.put(SNAP_KEY, snapshot_to_bytes(write.snapshot), meta)
        if write.delete_before:
            wb.delete_range(index_key(0), index_key(write.delete_before), log)
        if write.truncate_from is not None:
            wb.delete_range(index_key(write.truncate_from), _END, log)
        for e in write.entries:
            wb.put(index_key(e.index), entry_to_bytes(e), log)
        if write.hard_state is not None:
            wb.put(HARD_KEY, hard_state_to_bytes(write.hard_state), meta)
        store.write(wb, sync=write.sync)

    # -- inspection ------------------------------------------------------------------

    def hard_state(self) -> HardState:
        raw: bytes | None = self.store.cf[META_CF].get(HARD_KEY)
        return hard_state_from_bytes(raw) if raw is not None else EMPTY_HARD_STATE

    def snapshot(self) -> Snapshot:
        raw: bytes | None = self.store.cf[META_CF].get(SNAP_KEY)
        return snapshot_from_bytes(raw) if raw is not None else EMPTY_SNAPSHOT

    def wipe(self) -> None:
        """Delete every stored Raft value (tests; an operator rebuilding a node's quorum state)."""
        store = self.store
        wb = store.write_batch()
        wb.delete_range(index_key(0), _END, store.handle[LOG_CF])
        wb.delete(HARD_KEY, store.handle[META_CF])
        wb.delete(SNAP_KEY, store.handle[META_CF])
        wb.delete(DIR_KEY, store.handle[META_CF])
        store.write(wb, sync=True)
