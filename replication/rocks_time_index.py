"""The time index of one partition's log in RocksDB (column family ``tindex``).

Key: ``pid u32 | running max ts + 2**63 u64 | base offset u64`` -> b"".

Time index. An entry is written when an appended batch raises the running
max timestamp ``maxts``; its key is the new max, biased by 2**63 so signed
order is byte order (``ts + 2**63`` as u64), then the base offset. Entries
are sorted by max and by offset at once, because the running max only grows.
The first batch whose own max timestamp is >= ts is exactly the first batch
where the running max reaches >= ts, which is an indexed batch; so
``batch_for_timestamp(ts)`` is one seek, when nothing was removed from the
front. Removing batches from the front changes that: a kept batch may have a
max >= ts that never raised the running max, because a removed batch was
higher. So:
- ``delete_before``/retention raise ``floor`` to the removed batches' max and
  delete every entry with running max <= floor (exactly the entries of the
  removed batches: a kept indexed batch raised the max above all before it);
- a lookup with ts <= floor scans forward from the start for the first batch
  with max >= ts; the scan ends at the latest at the first indexed batch
  (its max is above floor); a lookup with ts > floor seeks the index, since
  every batch before that entry, removed or kept, has max < ts;
- ``truncate_to`` deletes the entries of removed batches (a suffix of the
  index) and sets ``maxts`` to the last kept entry's max (or ``floor``).
Timestamps outside i64 are clamped to it. A lookup never returns a batch
below the start.
After compaction an entry may name a removed, rewritten or emptied batch;
``RocksPartitionLog.batch_for_timestamp`` scans forward from the entry's base
offset (every batch before it has a smaller max, removed or kept).

The log owns the ``maxts`` and ``floor`` fields; this class only reads and
writes the index entries, in the caller's WriteBatch.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from replication.rocks_store import NodeStore

_TS_BIAS = 2**63
_U64 = struct.Struct(">Q")
_KEY = struct.Struct(">IQQ")


class RocksTimeIndex:
    def __init__(self, store: NodeStore, prefix: bytes, hi: bytes) -> None:
        self._store = store
        self._prefix = prefix
        self._hi = hi

    def put(self, wb: Any, running_max: int, base: int) -> None:
        """An appended batch at ``base`` raised the running max to ``running_max``."""
        wb.put(self._prefix + _U64.pack(running_max + _TS_BIAS) + _U64.pack(base), b"", self._store.handle["tindex"])

    def cut_from(self, wb: Any, cut: int, floor: int) -> int:
        """Truncation at ``cut``: delete the entries of batches at or past it (a suffix of the
        index, which is sorted by offset too); return the running max of what stays (or ``floor``)."""
        maxts, keep_key = floor, self._prefix
        it = self._store.cf["tindex"].iter()
        it.seek_for_prev(self._hi)
        while it.valid() and it.key().startswith(self._prefix):
            _, biased, base = _KEY.unpack(it.key())
            if base < cut:
                maxts, keep_key = biased - _TS_BIAS, it.key() + b"\x00"
                break
            it.prev()
        del it
        wb.delete_range(keep_key, self._hi, self._store.handle["tindex"])
        return maxts

    def drop_through(self, wb: Any, floor: int) -> None:
        """Front deletion raised the floor: delete every entry with running max <= ``floor``."""
        biased = floor + _TS_BIAS
        upper = self._prefix + _U64.pack(biased + 1) if biased + 1 < 2**64 else self._hi
        wb.delete_range(self._prefix, upper, self._store.handle["tindex"])

    def seek(self, ts: int) -> int | None:
        """Base offset of the first entry whose running max is >= ``ts``, or None."""
        it = self._store.cf["tindex"].iter()
        it.seek(self._prefix + _U64.pack(ts + _TS_BIAS))
        key: bytes | None = it.key() if it.valid() else None
        del it
        if key is None or not key.startswith(self._prefix):
            return None
        return int(_KEY.unpack(key)[2])
