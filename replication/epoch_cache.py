"""The leader-epoch cache (KIP-101, KIP-279): epoch -> start offset, pure.

Every stored batch carries its partition leader epoch in its header (bytes
12..16). The cache records, for each epoch still present in the log, the
offset where it starts: ``(epoch, start_offset)`` entries, strictly
increasing in both fields. Both logs (memory and RocksDB) keep one
``EpochCache`` and apply the same rules, so their answers agree:

- ``add(epoch, start)`` (an appended batch whose epoch is greater than the
  latest, or a new leader's ``assign_epoch`` at its log end offset) first
  removes every entry with epoch >= ``epoch`` or start >= ``start`` (Kafka's
  ``maybeTruncateNonMonotonicEntries``: an epoch assigned at the end and never
  written to is replaced by the next one that starts at the same offset).
- ``truncate_from_end(end)`` removes entries whose start is >= ``end`` (the
  log lost those batches; a divergent suffix is truncated by the follower).
- ``truncate_from_start(start)`` removes entries that start at or below
  ``start`` except the last of them, which is moved to ``start`` (Kafka's
  ``truncateFromStart``): the epoch of the first kept batch is still known.
  When every batch is removed the latest epoch survives at the new start, so
  a stale leader's lower epoch is still refused.
- ``end_offset_for(epoch, log_end)`` answers OffsetsForLeaderEpoch: the largest
  cached epoch <= ``epoch`` and the start offset of the next cached epoch (or
  ``log_end`` if it is the latest); ``(-1, -1)`` when ``epoch`` is below every
  cached epoch or the cache is empty.

Encoding (``encode``/``decode``): the entries back to back, each a big-endian
i32 epoch and u64 start offset (12 bytes); b"" is the empty cache.
"""

from __future__ import annotations

import bisect
import struct

UNDEFINED_EPOCH = -1
UNDEFINED_OFFSET = -1
_ENTRY = struct.Struct(">iQ")


class EpochCache:
    """Sorted ``(epoch, start_offset)`` entries; see the module docstring."""

    __slots__ = ("_epochs", "_starts")

    def __init__(self, entries: list[tuple[int, int]] | None = None) -> None:
        self._epochs: list[int] = []
        self._starts: list[int] = []
        for epoch, start in entries or ():
            self.add(epoch, start)

    @property
    def latest_epoch(self) -> int:
        return self._epochs[-1] if self._epochs else UNDEFINED_EPOCH

    def entries(self) -> list[tuple[int, int]]:
        return list(zip(self._epochs, self._starts, strict=True))

    def copy(self) -> EpochCache:
        out = EpochCache()
        out._epochs, out._starts = list(self._epochs), list(self._starts)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EpochCache) and self.entries() == other.entries()

    def __repr__(self) -> str:
        return f"EpochCache({self.entries()!r})"

    # -- changes (each returns True when the entries changed) ---------------

    def add(self, epoch: int, start: int) -> bool:
        """Record that ``epoch`` starts at ``start``; a no-op for the latest epoch."""
        if epoch < 0 or start < 0:
            raise ValueError(f"leader epoch entry ({epoch}, {start}) is negative")
        if epoch == self.latest_epoch:
            return False
        keep = 0
        while keep < len(self._epochs) and self._epochs[keep] < epoch and self._starts[keep] < start:
            keep += 1
        del self._epochs[keep:], self._starts[keep:]
        self._epochs.append(epoch)
        self._starts.append(start)
        return True

    def truncate_from_end(self, end: int) -> bool:
        """Forget epochs that start at or after ``end``."""
        keep = bisect.bisect_left(self._starts, end)
        if keep == len(self._starts):
            return False
        del self._epochs[keep:], self._starts[keep:]
        return True

    def truncate_from_start(self, start: int) -> bool:
        """The log now starts at ``start``: move the epoch that covers it there."""
        covering = bisect.bisect_right(self._starts, start) - 1
        if covering < 0 or (covering == 0 and self._starts[0] == start):
            return False
        del self._epochs[:covering], self._starts[:covering]
        self._starts[0] = start
        return True

    def clear(self) -> bool:
        changed = bool(self._epochs)
        self._epochs.clear()
        self._starts.clear()
        return changed

    # -- queries ------------------------------------------------------------

    def end_offset_for(self, epoch: int, log_end: int) -> tuple[int, int]:
        """(largest cached epoch <= ``epoch``, where it ends) or (-1, -1)."""
        i = bisect.bisect_right(self._epochs, epoch) - 1
        if i < 0:
            return UNDEFINED_EPOCH, UNDEFINED_OFFSET
        end = self._starts[i + 1] if i + 1 < len(self._starts) else log_end
        return self._epochs[i], end

    # -- encoding -----------------------------------------------------------

    def encode(self) -> bytes:
        return b"".join(_ENTRY.pack(e, s) for e, s in zip(self._epochs, self._starts, strict=True))

    @classmethod
    def decode(cls, data: bytes) -> EpochCache:
        if len(data) % _ENTRY.size:
            raise ValueError(f"leader epoch cache of {len(data)} bytes is not a whole number of entries")
        out = cls()
        for epoch, start in _ENTRY.iter_unpack(data):
            if out._epochs and (epoch <= out._epochs[-1] or start <= out._starts[-1]):
                raise ValueError(f"leader epoch cache entries are not increasing at ({epoch}, {start})")
            out._epochs.append(epoch)
            out._starts.append(start)
        return out
