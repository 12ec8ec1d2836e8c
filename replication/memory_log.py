"""An in-memory ``PartitionLog`` for tests and the deterministic simulation.

Pure: no I/O, no clock, no randomness; every method is a function of the
calls made so far. It keeps the invariants listed in ``replication/log.py``
and answers every query exactly as ``RocksPartitionLog`` does
(tests/test_partition_log.py runs one suite against both and a Hypothesis
test drives both with the same operations).

Representation: four parallel lists (base offsets, next offsets, batch bytes,
each batch's max timestamp or ``None`` for an emptied batch) holding the
batches in ``[log_start_offset, log_end_offset)``, plus the start, the end
and the byte total. Reads and truncation bisect the base offsets;
``batch_for_timestamp`` scans forward (fine for tests, where logs are small; the RocksDB log has a real time index).

The leader-epoch cache is an ``EpochCache`` (replication/epoch_cache.py)
changed by the same calls, and the high-watermark checkpoint a plain int.
The producer state is a ``ProducerStateTable`` with its snapshots as a list
of ``(offset, table)`` (rules in replication/log.py); ``snapshot_interval``
is how many appended batches apart they are taken. The aborted-transactions
index is a list of ``AbortedTxn`` in marker-offset order. Compaction keeps a
``CleanerCheckpoint`` and a generation counter; ``apply_cleaning`` is durable
at once (a synced write).

Crash model (DESIGN.md §7, "a memory log that loses unsynced data on
crash"): ``append(sync=False)`` and ``checkpoint_high_watermark`` are durable
only once a later synced write happens, as with RocksDB's WAL, where one
fsync covers every earlier write. Truncation, ``delete_before``, retention,
``reset_to`` and ``assign_epoch`` are always synced (they are rare and must
not be undone by a crash). Every synced write snapshots the durable state
(end offset, epoch cache, high watermark, producer table and snapshots,
aborted-transactions index);
``crash()`` goes back to it, which can only drop a suffix of unsynced appends
(and the epochs and producer state they made) and checkpoints made since.
``expire_producers`` is durable at once (RocksDB writes it to the WAL).

``check_append`` and ``check_epochs`` hold the append validation both
implementations share.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from ketch.recordbatch import BatchError, BatchHeader, parse_header
from replication.compaction import CleanerCheckpoint, Rewrite
from replication.epoch_cache import EpochCache
from replication.log import PRODUCER_SNAPSHOT_INTERVAL, LogAppendError, LogOffsetError, RetentionPolicy
from replication.producer_state import ProducerStateTable, rolled_back, table_at
from replication.transactions import AbortedTxn, aborted_by, overlapping


def check_append(batches: Sequence[bytes], end: int) -> list[tuple[bytes, BatchHeader]]:
    """Headers of ``batches`` if they continue a log ending at ``end``.

    Each batch must be exactly as long as its header says and start at or
    after the offset after the previous one (a gap is what a compacted
    leader's log has); anything else is ``LogAppendError`` (the partition
    layer validates client input before it gets here).
    """
    out: list[tuple[bytes, BatchHeader]] = []
    expected = end
    for raw in batches:
        batch = bytes(raw)
        try:
            header = parse_header(batch)
        except BatchError as exc:
            raise LogAppendError(f"batch for offset {expected} is not a record batch: {exc}") from exc
        if header.size != len(batch):
            raise LogAppendError(
                f"batch at offset {header.base_offset} has {len(batch)} bytes but its header says {header.size}"
            )
        if header.base_offset < expected or header.last_offset_delta < 0:
            raise LogAppendError(
                f"batch with base offset {header.base_offset} (last offset delta "
                f"{header.last_offset_delta}) does not continue the log at offset {expected}"
            )
        out.append((batch, header))
        expected = header.next_offset
    return out


def check_epochs(checked: Sequence[tuple[bytes, BatchHeader]], cache: EpochCache) -> EpochCache | None:
    """The epoch cache after appending ``checked``, or None when unchanged.

    A batch whose leader epoch is lower than the latest epoch (cached, or of
    an earlier batch in ``checked``) is ``LogAppendError``; ``cache`` itself
    is never changed.
    """
    out: EpochCache | None = None
    for _, header in checked:
        latest = (out or cache).latest_epoch
        if header.leader_epoch < latest:
            raise LogAppendError(
                f"batch at offset {header.base_offset} has leader epoch {header.leader_epoch}, "
                f"below the log's latest epoch {latest}"
            )
        if header.leader_epoch > latest:
            out = out or cache.copy()
            out.add(header.leader_epoch, header.base_offset)
    return out


def check_assign(cache: EpochCache, epoch: int, start_offset: int, end: int) -> bool:
    """Whether ``assign_epoch(epoch, start_offset)`` changes the cache of a log
    ending at ``end``; ``LogAppendError`` if it may not happen at all."""
    if epoch < cache.latest_epoch or epoch < 0:
        raise LogAppendError(f"leader epoch {epoch} is below the log's latest epoch {cache.latest_epoch}")
    if start_offset != end:
        raise LogAppendError(f"leader epoch {epoch} must start at the log end offset {end}, not {start_offset}")
    return epoch > cache.latest_epoch


class MemoryPartitionLog:
    """A ``PartitionLog`` held in Python lists; see the module docstring."""

    def __init__(self, snapshot_interval: int = PRODUCER_SNAPSHOT_INTERVAL) -> None:
        self.snapshot_interval = snapshot_interval
        self._producers = ProducerStateTable()
        self._snapshots: list[tuple[int, ProducerStateTable]] = []  # (offset, table there), ascending
        self._since_snapshot = 0
        self._synced_producers = (ProducerStateTable(), list[tuple[int, ProducerStateTable]]())
        self._aborted: list[AbortedTxn] = []
        self._synced_aborted: list[AbortedTxn] = []
        self._bases: list[int] = []
        self._nexts: list[int] = []
        self._batches: list[bytes] = []
        self._max_ts: list[int | None] = []
        self._cleaner = CleanerCheckpoint()
        self._generation = 0
        self._start = 0
        self._end = 0
        self._size = 0
        self._epochs = EpochCache()
        self._hw = 0
        self._synced_end = 0
        self._synced_epochs = EpochCache()
        self._synced_hw = 0
        self._closed = False

    @property
    def log_start_offset(self) -> int:
        return self._start

    @property
    def log_end_offset(self) -> int:
        return self._end

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def synced_end_offset(self) -> int:
        """Where the log would end after ``crash()``."""
        return self._synced_end

    @property
    def latest_epoch(self) -> int:
        return self._epochs.latest_epoch

    def epoch_entries(self) -> list[tuple[int, int]]:
        return self._epochs.entries()

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        return self._epochs.end_offset_for(epoch, self._end)

    @property
    def high_watermark(self) -> int:
        return self._hw

    @property
    def producer_state(self) -> ProducerStateTable:
        return self._producers

    def producer_snapshot_offsets(self) -> list[int]:
        return [offset for offset, _ in self._snapshots]

    def aborted_index(self) -> list[AbortedTxn]:
        return list(self._aborted)

    def aborted_transactions(self, fetch_offset: int, upper: int) -> tuple[tuple[int, int], ...]:
        return overlapping(self._aborted, fetch_offset, upper)

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        self._check_open()
        gone = self._producers.remove_expired(now_ms, expiration_ms)
        for pid in gone:  # durable at once, like a RocksDB write that reached the WAL before the crash
            self._synced_producers[0].entries.pop(pid, None)
        return len(gone)

    def checkpoint_high_watermark(self, hw: int) -> None:
        self._check_open()
        self._hw = min(max(hw, self._start), self._end)

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        self._check_open()
        if check_assign(self._epochs, epoch, start_offset, self._end):
            self._epochs.add(epoch, start_offset)
            self._mark_synced()

    def reset_to(self, offset: int) -> None:
        self._check_open()
        if offset < 0:
            raise LogOffsetError(offset, 0, 2**63 - 1)
        self._bases, self._nexts, self._batches, self._max_ts = [], [], [], []
        self._cleaner = CleanerCheckpoint()
        self._generation += 1
        self._start = self._end = self._hw = offset
        self._size = 0
        self._epochs.clear()
        self._producers, self._snapshots, self._since_snapshot = ProducerStateTable(), [], 0
        self._aborted = []
        self._mark_synced()

    def append(self, batches: Sequence[bytes], *, sync: bool = False) -> None:
        self._check_open()
        checked = check_append(batches, self._end)
        epochs = check_epochs(checked, self._epochs)
        try:
            aborted = aborted_by(self._producers, checked)
        except BatchError as exc:
            raise LogAppendError(f"bad transaction marker: {exc}") from exc
        if epochs is not None:
            self._epochs = epochs
        self._aborted.extend(aborted)
        for batch, header in checked:
            self._bases.append(header.base_offset)
            self._nexts.append(header.next_offset)
            self._batches.append(batch)
            self._max_ts.append(header.max_timestamp if header.records_count else None)
            self._size += len(batch)
            self._end = header.next_offset
        self._producers.apply(header for _, header in checked)
        self._since_snapshot += len(checked)
        if checked and self._since_snapshot >= self.snapshot_interval:
            self._snapshots.append((self._end, self._producers.copy()))
            self._since_snapshot = 0
        if sync:
            self._mark_synced()

    def read(self, offset: int, max_bytes: int) -> bytes:
        self._check_open()
        self._check_range(offset)
        i = self._first_ending_after(offset)
        if i == len(self._bases):
            return b""
        out = [self._batches[i]]
        total = len(self._batches[i])
        for batch in self._batches[i + 1 :]:
            if total + len(batch) > max_bytes:
                break
            out.append(batch)
            total += len(batch)
        return b"".join(out)

    def truncate_to(self, offset: int) -> None:
        self._check_open()
        self._check_range(offset)
        if offset == self._end:
            # No batch goes, but an epoch started at the end without batches does
            # (Kafka's truncateTo): else a follower keeps offering that epoch forever.
            if self._epochs.truncate_from_end(self._end):
                self._mark_synced()
            return
        i = self._first_ending_after(offset)
        self._size -= sum(len(b) for b in self._batches[i:])
        self._end = min(self._bases[i], offset) if i < len(self._bases) else offset
        self._roll_back_producers(i)
        del self._bases[i:], self._nexts[i:], self._batches[i:], self._max_ts[i:]
        self._cleaner = self._cleaner.truncated(self._end)
        self._generation += 1
        self._epochs.truncate_from_end(self._end)
        self._aborted = [t for t in self._aborted if t.last_offset < self._end]
        self._hw = min(self._hw, self._end)
        self._mark_synced()

    def delete_before(self, offset: int) -> None:
        self._check_open()
        if offset > self._end:
            raise LogOffsetError(offset, self._start, self._end)
        n = 0
        while n < len(self._bases) and self._nexts[n] <= offset:
            n += 1
        self._drop_front(n)

    def apply_retention(self, policy: RetentionPolicy, now_ms: int) -> int:
        self._check_open()
        before = self._size
        n = 0
        if policy.retention_ms >= 0:
            while n < len(self._bases) and now_ms - self._batch_max_ts(n) > policy.retention_ms:
                n += 1
        if policy.retention_bytes >= 0:
            size = self._size - sum(len(b) for b in self._batches[:n])
            while n < len(self._bases) and size - len(self._batches[n]) >= policy.retention_bytes:
                size -= len(self._batches[n])
                n += 1
        self._drop_front(n)
        return before - self._size

    def batch_for_timestamp(self, timestamp_ms: int) -> bytes | None:
        self._check_open()
        for batch, max_ts in zip(self._batches, self._max_ts, strict=True):
            if max_ts is not None and max_ts >= timestamp_ms:
                return batch
        return None

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def cleaner_checkpoint(self) -> CleanerCheckpoint:
        return self._cleaner

    def apply_cleaning(
        self, generation: int, rewrites: Sequence[Rewrite], checkpoint: CleanerCheckpoint | None
    ) -> bool:
        self._check_open()
        if generation != self._generation:
            return False
        fate: dict[int, bytes | None] = {}
        for r in rewrites:
            covered = self._bases[
                bisect.bisect_left(self._bases, r.base_offset) : bisect.bisect_right(self._bases, r.through)
            ]
            if not covered or covered[0] != r.base_offset:
                raise LogAppendError(f"cleaning rewrites a batch the log does not hold: {r.base_offset}")
            fate.update((base, r.batch if base == r.base_offset else None) for base in covered)
        kept = []
        for base, nxt, batch, max_ts in zip(self._bases, self._nexts, self._batches, self._max_ts, strict=True):
            if base not in fate:
                kept.append((base, nxt, batch, max_ts))
                continue
            new = fate[base]
            self._size -= len(batch)
            if new is not None:
                header = parse_header(new)
                kept.append((base, nxt, new, header.max_timestamp if header.records_count else None))
                self._size += len(new)
        self._bases = [k[0] for k in kept]
        self._nexts = [k[1] for k in kept]
        self._batches = [k[2] for k in kept]
        self._max_ts = [k[3] for k in kept]
        if checkpoint is not None:
            self._cleaner = checkpoint
        self._mark_synced()
        return True

    def crash(self) -> None:
        """Lose what a power cut would: every unsynced write since the last synced one."""
        self._check_open()
        if self._synced_end < self._end:
            i = bisect.bisect_left(self._bases, self._synced_end)
            self._size -= sum(len(b) for b in self._batches[i:])
            del self._bases[i:], self._nexts[i:], self._batches[i:], self._max_ts[i:]
            self._end = self._synced_end
        self._epochs = self._synced_epochs.copy()
        table, snapshots = self._synced_producers
        self._producers, self._snapshots = table.copy(), list(snapshots)
        self._aborted = list(self._synced_aborted)
        self._hw = min(max(self._synced_hw, self._start), self._end)

    def close(self) -> None:
        self._closed = True

    def _first_ending_after(self, offset: int) -> int:
        """Index of the first batch whose last offset is >= ``offset`` (len: none)."""
        i = bisect.bisect_right(self._bases, offset) - 1
        if i < 0:
            return 0
        return i if self._nexts[i] > offset else i + 1

    def _batch_max_ts(self, i: int) -> int:
        max_ts = self._max_ts[i]
        return max_ts if max_ts is not None else parse_header(self._batches[i]).max_timestamp

    def _roll_back_producers(self, i: int) -> None:
        """Truncation from batch ``i`` (the new end is its base): rebuild the producers it removes."""
        affected = {parse_header(b).producer_id for b in self._batches[i:]} - {-1}
        keep = bisect.bisect_right([o for o, _ in self._snapshots], self._end)
        del self._snapshots[keep:]
        if not affected:
            return
        base_offset, base = self._snapshots[-1] if self._snapshots else (self._start, ProducerStateTable())
        j = bisect.bisect_left(self._bases, base_offset)
        headers = (parse_header(b) for b in self._batches[j:i])
        for pid, entry in rolled_back(self._producers, base, headers, affected).items():
            if entry is None:
                del self._producers.entries[pid]
            else:
                self._producers.entries[pid] = entry

    def _drop_front(self, n: int) -> None:
        if n == 0:
            return
        new_start = self._bases[n] if n < len(self._bases) else self._end
        base_offset, base = self._start, ProducerStateTable()
        for offset, table in self._snapshots:
            if offset <= new_start:
                base_offset, base = offset, table
        j = bisect.bisect_left(self._bases, base_offset)
        at_start = table_at(self._producers, base, (parse_header(b) for b in self._batches[j:n]))
        self._snapshots = [(new_start, at_start), *((o, t) for o, t in self._snapshots if o > new_start)]
        self._size -= sum(len(b) for b in self._batches[:n])
        del self._bases[:n], self._nexts[:n], self._batches[:n], self._max_ts[:n]
        self._start = self._bases[0] if self._bases else self._end
        self._generation += 1
        self._epochs.truncate_from_start(self._start)
        self._aborted = [t for t in self._aborted if t.last_offset >= self._start]
        self._hw = max(self._hw, self._start)
        self._mark_synced()

    def _mark_synced(self) -> None:
        self._synced_end = self._end
        self._synced_epochs = self._epochs.copy()
        self._synced_hw = self._hw
        self._synced_producers = (self._producers.copy(), list(self._snapshots))
        self._synced_aborted = list(self._aborted)

    def _check_range(self, offset: int) -> None:
        if not self._start <= offset <= self._end:
            raise LogOffsetError(offset, self._start, self._end)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("partition log is closed")
