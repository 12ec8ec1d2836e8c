"""A ``RocksPartitionLog``'s producer state in the ``producers`` column family, and its
aborted-transactions index in ``txnindex`` (``RocksAbortedIndex``, at the end).

Keys (integers big-endian; the rules are in replication/log.py):

    producers  pid u32 | b"e" | producer id u64  -> ProducerEntry.encode()       the live table
               pid u32 | b"s" | offset u64       -> ProducerStateTable.encode()  a snapshot at offset

The live table is exactly the rows: every change puts or deletes the rows of
the producers it changes in the caller's WriteBatch (the one that stores or
removes the batches), so opening reads the rows back and never scans the log.
Snapshot rows only bound the rebuild after a truncation; their offsets are
kept in memory, their values read when a rebuild needs one.

Each ``on_*`` method adds its writes to the WriteBatch and returns a function
that changes the cached state; the log calls it only after the write landed.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ketch.recordbatch import BatchHeader, parse_header
from replication.producer_state import ProducerEntry, ProducerStateTable, rolled_back, table_at
from replication.transactions import AbortedTxn

if TYPE_CHECKING:
    from replication.rocks_store import NodeStore

_U64 = struct.Struct(">Q")
Batches = Callable[[int], Iterator[tuple[int, bytes]]]
Commit = Callable[[], None]


def _key_offset(key: bytes, at: int, what: str) -> int:
    """The u64 offset that ends a stored key; ``ValueError`` when the key is damaged."""
    if len(key) != at + _U64.size:
        raise ValueError(f"stored {what} key {key.hex()} is not {at + _U64.size} bytes")
    return int(_U64.unpack_from(key, at)[0])


def _nothing() -> None:
    pass


class RocksProducerState:
    def __init__(self, store: NodeStore, prefix: bytes, hi: bytes, interval: int) -> None:
        self._store, self._prefix, self._hi, self.interval = store, prefix, hi, interval
        self.table = ProducerStateTable()
        self.snapshots: list[int] = []
        self.since_snapshot = 0
        it = store.cf["producers"].iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            key: bytes = it.key()
            if key[4:5] == b"e":
                entry = ProducerEntry.decode(it.value())
                self.table.entries[entry.producer_id] = entry
            elif key[4:5] == b"s":
                self.snapshots.append(_key_offset(key, 5, "producer snapshot"))
            it.next()
        del it

    # -- changes ------------------------------------------------------------

    def on_append(self, wb: Any, headers: list[BatchHeader], end: int) -> Commit:
        changed = self.table.updated(headers)
        for pid, entry in changed.items():
            self._put_entry(wb, pid, entry)
        since = self.since_snapshot + len(headers)
        snapshot = since >= self.interval
        if snapshot:
            table = self.table.copy()
            table.entries.update(changed)
            wb.put(self._snap_key(end), table.encode(), self._cf)

        def commit() -> None:
            self.table.entries.update(changed)
            self.since_snapshot = 0 if snapshot else since
            if snapshot:
                self.snapshots.append(end)

        return commit

    def on_truncate(self, wb: Any, removed: set[int], cut: int, start: int, batches: Batches) -> Commit:
        keep = bisect.bisect_right(self.snapshots, cut)
        if keep < len(self.snapshots):
            wb.delete_range(self._snap_key(cut + 1), self._prefix + b"t", self._cf)
        base_offset, base = self._base(keep, start)
        changes = rolled_back(self.table, base, self._headers(batches, base_offset, cut), removed)
        for pid, entry in changes.items():
            self._put_entry(wb, pid, entry)

        def commit() -> None:
            del self.snapshots[keep:]
            for pid, entry in changes.items():
                if entry is None:
                    self.table.entries.pop(pid, None)
                else:
                    self.table.entries[pid] = entry

        return commit

    def on_drop_front(self, wb: Any, start: int, new_start: int, batches: Batches) -> Commit:
        keep = bisect.bisect_right(self.snapshots, new_start)
        base_offset, base = self._base(keep, start)
        at_start = table_at(self.table, base, self._headers(batches, base_offset, new_start))
        wb.delete_range(self._snap_key(0), self._snap_key(new_start), self._cf)
        wb.put(self._snap_key(new_start), at_start.encode(), self._cf)

        def commit() -> None:
            self.snapshots = [new_start, *self.snapshots[keep:]]

        return commit

    def on_reset(self, wb: Any) -> Commit:
        wb.delete_range(self._prefix, self._hi, self._cf)

        def commit() -> None:
            self.table, self.snapshots, self.since_snapshot = ProducerStateTable(), [], 0

        return commit

    def on_expire(self, wb: Any, now_ms: int, expiration_ms: int) -> tuple[int, Commit]:
        table = self.table.copy()
        gone = table.remove_expired(now_ms, expiration_ms)
        for pid in gone:
            self._put_entry(wb, pid, None)

        def commit() -> None:
            for pid in gone:
                self.table.entries.pop(pid, None)

        return len(gone), commit if gone else _nothing

    # -- helpers ------------------------------------------------------------

    @property
    def _cf(self) -> Any:
        return self._store.handle["producers"]

    def _base(self, keep: int, start: int) -> tuple[int, ProducerStateTable]:
        """The latest snapshot among the first ``keep``, else the empty table at the log start."""
        if keep == 0:
            return start, ProducerStateTable()
        offset = self.snapshots[keep - 1]
        raw = self._store.cf["producers"].get(self._snap_key(offset))
        if raw is None:
            raise RuntimeError(f"producer state snapshot at {offset} is missing from the store")
        return offset, ProducerStateTable.decode(raw)

    @staticmethod
    def _headers(batches: Batches, lo: int, hi: int) -> Iterator[BatchHeader]:
        for base, batch in batches(lo):
            if base >= hi:
                break
            yield parse_header(batch)

    def _put_entry(self, wb: Any, pid: int, entry: ProducerEntry | None) -> None:
        key = self._prefix + b"e" + _U64.pack(pid)
        if entry is None:
            wb.delete(key, self._cf)
        else:
            wb.put(key, entry.encode(), self._cf)

    def _snap_key(self, offset: int) -> bytes:
        return self._prefix + b"s" + _U64.pack(offset)


class RocksAbortedIndex:
    """The aborted-transactions index in the ``txnindex`` column family:

        txnindex  pid u32 | marker offset u64 -> AbortedTxn.encode()

    Read whole on open (one row per aborted transaction still in the log); every change adds
    its writes to the caller's WriteBatch and returns a commit, like ``RocksProducerState``."""

    def __init__(self, store: NodeStore, prefix: bytes, hi: bytes) -> None:
        self._store, self._prefix, self._hi = store, prefix, hi
        self.entries: list[AbortedTxn] = []
        it = store.cf["txnindex"].iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix):
            self.entries.append(AbortedTxn.decode(_key_offset(it.key(), 4, "aborted-transaction"), it.value()))
            it.next()
        del it

    @property
    def _cf(self) -> Any:
        return self._store.handle["txnindex"]

    def _key(self, offset: int) -> bytes:
        return self._prefix + _U64.pack(offset)

    def on_append(self, wb: Any, aborted: list[AbortedTxn]) -> Commit:
        for txn in aborted:
            wb.put(self._key(txn.last_offset), txn.encode(), self._cf)

        def commit() -> None:
            self.entries.extend(aborted)

        return commit if aborted else _nothing

    def on_truncate(self, wb: Any, end: int) -> Commit:
        wb.delete_range(self._key(end), self._hi, self._cf)

        def commit() -> None:
            self.entries = [t for t in self.entries if t.last_offset < end]

        return commit

    def on_drop_front(self, wb: Any, new_start: int) -> Commit:
        wb.delete_range(self._prefix, self._key(new_start), self._cf)

        def commit() -> None:
            self.entries = [t for t in self.entries if t.last_offset >= new_start]

        return commit

    def on_reset(self, wb: Any) -> Commit:
        wb.delete_range(self._prefix, self._hi, self._cf)

        def commit() -> None:
            self.entries = []

        return commit
