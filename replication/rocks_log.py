"""``RocksPartitionLog``: one partition's log in the node's RocksDB.

Stored (key layout in ``replication/rocks_store.py``; integers big-endian):

    log     pid | base offset u64            -> the batch bytes, exactly as appended
    state   pid | b"start"  u64              log start offset
            pid | b"end"    u64              log end offset (state: kept when every batch is gone)
            pid | b"size"   u64              total bytes of the stored batches
            pid | b"maxts"  i64              running max timestamp over every batch below the
                                             end, including those removed from the front
            pid | b"floor"  i64              max timestamp of the batches removed from the front
            pid | b"epochs" bytes            leader-epoch cache, ``EpochCache.encode()``:
                                             (i32 epoch, u64 start offset) per entry
            pid | b"hw"     u64              high-watermark checkpoint
            pid | b"cleaner" bytes           ``CleanerCheckpoint.encode()`` (compaction)
    tindex  pid | running max ts u64 | base u64 -> b""   (replication/rocks_time_index.py)

    producers (the producer state: rows and snapshots, see ``replication/rocks_producers.py``)
    txnindex  (the aborted-transactions index, see ``replication/rocks_producers.py``)

A missing field reads as 0 (offsets, size) or ``NO_TIMESTAMP`` = -2**63
(timestamps), b"" (epochs: the empty cache), so a partition that was never
written is an empty log at 0. Opening clamps ``hw`` to ``[start, end]``. A field
(or producer row, or aborted-transaction row) whose bytes are damaged makes opening
raise ``ValueError`` naming it.

Rules:
- Every change writes the batches and the state that describes them (start,
  end, size, time-index entries, and the epoch cache and high watermark when
  they change) in ONE WriteBatch, so a crash never leaves state and records
  disagreeing. Opening reads the state fields back; it never
  scans the log. The cached state changes only after the write returns.
- ``append(sync=True)`` fsyncs the WAL before returning; ``sync=False`` is
  still written to the WAL (survives kill -9, not a power cut). Truncation,
  ``delete_before`` and retention are rare and always synced: a truncated
  divergent suffix must not come back after a crash. ``assign_epoch`` and
  ``reset_to`` are synced too; ``checkpoint_high_watermark`` is not (a hint),
  and writes only when the value changes.
- ``reset_to`` deletes the partition's ``log`` and ``tindex`` ranges and
  resets every state field (``maxts``/``floor`` to ``NO_TIMESTAMP``: a new log).
- Ranges are removed with ``delete_range``; removing batches reads them once
  first (their sizes, and from the front their max timestamps for ``floor``).

Time index: ``replication/rocks_time_index.py`` (its rules, and the ``floor`` field's).

Compaction (rules in replication/compaction.py): ``apply_cleaning`` puts each
rewritten batch over its key and range-deletes each run of removed ones (a
point delete per batch would leave tombstones every later read steps over
until RocksDB compacts them: measured, a new coordinator's load of a cleaned
``__consumer_offsets`` took 0.44 s instead of 0.02 s), with the new size
and the cleaner checkpoint, in one synced WriteBatch. The time index is left
as it is: an entry may name a removed, rewritten or emptied batch, so a
lookup that seeks the index scans forward from the entry's base offset to the
first batch with records whose max timestamp reaches the target (every batch
before the entry has a smaller max, removed or kept). Reads and truncation
find "the batch holding an offset" as the first batch whose last offset is at
or above it, which after compaction may start above it.

Threads: changes to one log are serialized by a per-log lock (the node
appends with fsync in a worker thread while retention runs on its event
loop). Reads take no lock: each iterates a RocksDB snapshot, bounded by the
cached end, which moves only after the write it describes has landed.
"""

from __future__ import annotations

import functools
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ketch.recordbatch import BatchError, parse_header
from replication.compaction import CleanerCheckpoint, Rewrite
from replication.epoch_cache import EpochCache
from replication.log import PRODUCER_SNAPSHOT_INTERVAL, LogAppendError, LogOffsetError, RetentionPolicy
from replication.memory_log import check_append, check_assign, check_epochs
from replication.producer_state import ProducerStateTable
from replication.rocks_producers import RocksAbortedIndex, RocksProducerState
from replication.rocks_time_index import RocksTimeIndex
from replication.transactions import AbortedTxn, aborted_by, overlapping

if TYPE_CHECKING:
    from replication.rocks_store import NodeStore

NO_TIMESTAMP = -(2**63)
MAX_TIMESTAMP = 2**63 - 1
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_I64 = struct.Struct(">q")
_LOG_KEY = struct.Struct(">IQ")
_OFFSET_FIELDS = (b"start", b"end", b"size")
_TS_FIELDS = (b"maxts", b"floor")
_EPOCHS = b"epochs"
_HW = b"hw"
_CLEANER = b"cleaner"
_F = TypeVar("_F", bound=Callable[..., Any])


def _stored_int(state: Any, prefix: bytes, pid: int, name: bytes, fmt: struct.Struct, missing: int) -> int:
    """One integer state field; ``missing`` when absent, ``ValueError`` when its bytes are damaged."""
    raw: bytes | None = state.get(prefix + name)
    if raw is None:
        return missing
    if len(raw) != fmt.size:
        raise ValueError(f"partition {pid}: stored state field {name.decode()!r} has {len(raw)} bytes, not {fmt.size}")
    return int(fmt.unpack(raw)[0])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: RocksPartitionLog, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


class RocksPartitionLog:
    """A ``PartitionLog`` over a ``NodeStore``; get one with ``NodeStore.partition_log``."""

    def __init__(self, store: NodeStore, pid: int, snapshot_interval: int = PRODUCER_SNAPSHOT_INTERVAL) -> None:
        self._store = store
        self.pid = pid
        self._prefix = _U32.pack(pid)
        self._hi = _U32.pack(pid + 1)
        self._producers = RocksProducerState(store, self._prefix, self._hi, snapshot_interval)
        self._aborted = RocksAbortedIndex(store, self._prefix, self._hi)
        self._tindex = RocksTimeIndex(store, self._prefix, self._hi)
        self._closed = False
        self._lock = threading.Lock()
        state = store.cf["state"]
        field = functools.partial(_stored_int, state, self._prefix, pid)
        self._start, self._end, self._size = (field(f, _U64, 0) for f in _OFFSET_FIELDS)
        self._maxts, self._floor = (field(f, _I64, NO_TIMESTAMP) for f in _TS_FIELDS)
        self._epochs = EpochCache.decode(state.get(self._prefix + _EPOCHS) or b"")
        self._hw = min(max(field(_HW, _U64, 0), self._start), self._end)
        # Lock-free readers need the cache and the end as one pair; every change
        # replaces the (never mutated) cache and republishes the pair.
        self._view = (self._epochs, self._end)
        self._cleaner = CleanerCheckpoint.decode(state.get(self._prefix + _CLEANER) or b"")
        self._generation = 0

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
    def latest_epoch(self) -> int:
        return self._view[0].latest_epoch

    def epoch_entries(self) -> list[tuple[int, int]]:
        return self._view[0].entries()

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        epochs, end = self._view
        return epochs.end_offset_for(epoch, end)

    @property
    def high_watermark(self) -> int:
        return self._hw

    @property
    def producer_state(self) -> ProducerStateTable:
        return self._producers.table

    def producer_snapshot_offsets(self) -> list[int]:
        return list(self._producers.snapshots)

    def aborted_index(self) -> list[AbortedTxn]:
        return list(self._aborted.entries)

    def aborted_transactions(self, fetch_offset: int, upper: int) -> tuple[tuple[int, int], ...]:
        return overlapping(self._aborted.entries, fetch_offset, upper)

    @_locked
    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        self._check_open()
        wb = self._store.write_batch()
        gone, commit = self._producers.on_expire(wb, now_ms, expiration_ms)
        if gone:
            self._store.write(wb, sync=False)
            commit()
        return gone

    # -- writes -----------------------------------------------------------

    @_locked
    def append(self, batches: Sequence[bytes], *, sync: bool = False) -> None:
        self._check_open()
        checked = check_append(batches, self._end)
        if not checked:
            return
        epochs = check_epochs(checked, self._epochs)
        try:
            aborted = aborted_by(self._producers.table, checked)
        except BatchError as exc:
            raise LogAppendError(f"bad transaction marker: {exc}") from exc
        wb, h = self._store.write_batch(), self._store.handle
        maxts, size = self._maxts, self._size
        for batch, header in checked:
            wb.put(self._log_key(header.base_offset), batch, h["log"])
            size += len(batch)
            if header.max_timestamp > maxts:
                maxts = header.max_timestamp
                self._tindex.put(wb, maxts, header.base_offset)
        end = checked[-1][1].next_offset
        self._put_state(wb, end=end, size=size, maxts=maxts)
        if epochs is not None:
            self._put_epochs(wb, epochs)
        producers = self._producers.on_append(wb, [header for _, header in checked], end)
        index = self._aborted.on_append(wb, aborted)
        self._store.write(wb, sync=sync)
        producers()
        index()
        self._end, self._size, self._maxts = end, size, maxts
        self._publish(epochs)

    @_locked
    def truncate_to(self, offset: int) -> None:
        self._check_open()
        self._check_range(offset)
        if offset == self._end:
            # No batch goes, but an epoch started at the end without batches does (see memory_log).
            epochs = self._epochs.copy()
            if epochs.truncate_from_end(self._end):
                wb = self._store.write_batch()
                self._put_epochs(wb, epochs)
                self._store.write(wb, sync=True)
                self._publish(epochs)
            return
        cut = -1
        removed = 0
        producer_ids: set[int] = set()
        for base, batch in self._batches(offset):
            if cut < 0:
                cut = min(base, offset)  # above ``offset``: it lies in a gap left by compaction
            removed += len(batch)
            producer_ids.add(parse_header(batch).producer_id)
        if cut < 0:
            cut = offset  # in a gap after the last batch
        wb, h = self._store.write_batch(), self._store.handle
        producers = self._producers.on_truncate(wb, producer_ids - {-1}, cut, self._start, self._batches)
        index = self._aborted.on_truncate(wb, cut)
        wb.delete_range(self._log_key(cut), self._hi, h["log"])
        maxts = self._tindex.cut_from(wb, cut, self._floor)
        size = self._size - removed
        hw = min(self._hw, cut)
        self._put_state(wb, end=cut, size=size, maxts=maxts, hw=hw)
        epochs = self._epochs.copy()
        if epochs.truncate_from_end(cut):
            self._put_epochs(wb, epochs)
        cleaner = self._cleaner.truncated(cut)
        if cleaner != self._cleaner:
            wb.put(self._prefix + _CLEANER, cleaner.encode(), h["state"])
        self._store.write(wb, sync=True)
        producers()
        index()
        self._end, self._size, self._maxts, self._hw, self._cleaner = cut, size, maxts, hw, cleaner
        self._generation += 1
        self._publish(epochs)

    @_locked
    def delete_before(self, offset: int) -> None:
        self._check_open()
        if offset > self._end:
            raise LogOffsetError(offset, self._start, self._end)
        new_start, removed, removed_max = self._end, 0, NO_TIMESTAMP
        for base, batch in self._batches(self._start):
            header = parse_header(batch)
            if header.next_offset > offset:
                new_start = base
                break
            removed += len(batch)
            removed_max = max(removed_max, header.max_timestamp)
        self._drop_front(new_start, removed, removed_max)

    @_locked
    def apply_retention(self, policy: RetentionPolicy, now_ms: int) -> int:
        self._check_open()
        by_time = policy.retention_ms >= 0
        new_start, removed, removed_max = self._end, 0, NO_TIMESTAMP
        for base, batch in self._batches(self._start):
            header = parse_header(batch)
            if not (by_time and now_ms - header.max_timestamp > policy.retention_ms):
                by_time = False
                after = self._size - removed - len(batch)
                if not (policy.retention_bytes >= 0 and after >= policy.retention_bytes):
                    new_start = base
                    break
            removed += len(batch)
            removed_max = max(removed_max, header.max_timestamp)
        self._drop_front(new_start, removed, removed_max)
        return removed

    def _drop_front(self, new_start: int, removed: int, removed_max: int) -> None:
        if new_start == self._start:
            return
        floor = max(self._floor, removed_max)
        wb, h = self._store.write_batch(), self._store.handle
        wb.delete_range(self._log_key(self._start), self._log_key(new_start), h["log"])
        self._tindex.drop_through(wb, floor)
        size = self._size - removed
        hw = max(self._hw, new_start)
        self._put_state(wb, start=new_start, size=size, floor=floor, hw=hw)
        epochs = self._epochs.copy()
        if epochs.truncate_from_start(new_start):
            self._put_epochs(wb, epochs)
        producers = self._producers.on_drop_front(wb, self._start, new_start, self._batches)
        index = self._aborted.on_drop_front(wb, new_start)
        self._store.write(wb, sync=True)
        producers()
        index()
        self._start, self._size, self._floor, self._hw = new_start, size, floor, hw
        self._generation += 1
        self._publish(epochs)

    @_locked
    def reset_to(self, offset: int) -> None:
        self._check_open()
        if not 0 <= offset < 2**63:
            raise LogOffsetError(offset, 0, 2**63 - 1)
        wb, h = self._store.write_batch(), self._store.handle
        for cf in ("log", "tindex"):
            wb.delete_range(self._prefix, self._hi, h[cf])
        wb.delete(self._prefix + _CLEANER, h["state"])
        self._put_state(wb, start=offset, end=offset, size=0, hw=offset, maxts=NO_TIMESTAMP, floor=NO_TIMESTAMP)
        epochs = EpochCache()
        self._put_epochs(wb, epochs)
        producers = self._producers.on_reset(wb)
        index = self._aborted.on_reset(wb)
        self._store.write(wb, sync=True)
        producers()
        index()
        self._start = self._end = self._hw = offset
        self._size, self._maxts, self._floor = 0, NO_TIMESTAMP, NO_TIMESTAMP
        self._cleaner = CleanerCheckpoint()
        self._generation += 1
        self._publish(epochs)

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def cleaner_checkpoint(self) -> CleanerCheckpoint:
        return self._cleaner

    @_locked
    def apply_cleaning(
        self, generation: int, rewrites: Sequence[Rewrite], checkpoint: CleanerCheckpoint | None
    ) -> bool:
        self._check_open()
        if generation != self._generation:
            return False
        wb, h = self._store.write_batch(), self._store.handle
        size = self._size
        for rewrite in rewrites:
            key = self._log_key(rewrite.base_offset)
            if rewrite.batch is None:  # one range delete per run: reads never step over its batches
                wb.delete_range(key, self._log_key(rewrite.through + 1), h["log"])
            else:
                wb.put(key, rewrite.batch, h["log"])
            size -= rewrite.bytes_removed
        self._put_state(wb, size=size)
        if checkpoint is not None:
            wb.put(self._prefix + _CLEANER, checkpoint.encode(), h["state"])
        self._store.write(wb, sync=True)
        self._size = size
        if checkpoint is not None:
            self._cleaner = checkpoint
        return True

    @_locked
    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        self._check_open()
        if not check_assign(self._epochs, epoch, start_offset, self._end):
            return
        epochs = self._epochs.copy()
        epochs.add(epoch, start_offset)
        wb = self._store.write_batch()
        self._put_epochs(wb, epochs)
        self._store.write(wb, sync=True)
        self._publish(epochs)

    @_locked
    def checkpoint_high_watermark(self, hw: int) -> None:
        self._check_open()
        hw = min(max(hw, self._start), self._end)
        if hw != self._hw:
            wb = self._store.write_batch()
            self._put_state(wb, hw=hw)
            self._store.write(wb, sync=False)
            self._hw = hw

    def _publish(self, epochs: EpochCache | None) -> None:
        """After a write landed: the new cache (None: unchanged) and end for readers."""
        if epochs is not None:
            self._epochs = epochs
        self._view = (self._epochs, self._end)

    # -- reads ------------------------------------------------------------

    def read(self, offset: int, max_bytes: int) -> bytes:
        self._check_open()
        self._check_range(offset)
        out: list[bytes] = []
        total = 0
        for _, batch in self._batches(offset):
            if out and total + len(batch) > max_bytes:
                break
            out.append(batch)
            total += len(batch)
        return b"".join(out)

    def batch_for_timestamp(self, timestamp_ms: int) -> bytes | None:
        self._check_open()
        if timestamp_ms > MAX_TIMESTAMP or self._start == self._end:
            return None
        ts = max(timestamp_ms, NO_TIMESTAMP)
        offset = self._start
        if ts > self._floor:
            indexed = self._tindex.seek(ts)
            if indexed is None:
                return None
            offset = max(indexed, self._start)
        for _, batch in self._batches(offset):
            header = parse_header(batch)
            if header.records_count and header.max_timestamp >= ts:
                return batch
        return None

    def _batches(self, offset: int) -> Iterator[tuple[int, bytes]]:
        """(base offset, bytes) of each batch from the first whose last offset is >= ``offset``
        (the one holding it, or after a gap the next) up to the end; nothing when ``offset == end``."""
        if offset >= self._end:
            return
        it = self._store.cf["log"].iter()
        it.seek_for_prev(self._log_key(offset))
        if not (it.valid() and it.key().startswith(self._prefix) and parse_header(it.value()).next_offset > offset):
            it.seek(self._log_key(offset) + b"\x00")  # nothing holds it: the first batch after it
        while it.valid():
            pid, base = _LOG_KEY.unpack(it.key())
            if pid != self.pid or base >= self._end:
                break
            yield base, it.value()
            it.next()

    # -- helpers ----------------------------------------------------------

    @_locked
    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._store.forget(self)

    def _put_epochs(self, wb: Any, epochs: EpochCache) -> None:
        wb.put(self._prefix + _EPOCHS, epochs.encode(), self._store.handle["state"])

    def _put_state(self, wb: Any, **fields: int) -> None:
        for name, value in fields.items():
            packer = _I64 if name.encode() in _TS_FIELDS else _U64
            wb.put(self._prefix + name.encode(), packer.pack(value), self._store.handle["state"])

    def _log_key(self, offset: int) -> bytes:
        return _LOG_KEY.pack(self.pid, offset)

    def _check_range(self, offset: int) -> None:
        if not self._start <= offset <= self._end:
            raise LogOffsetError(offset, self._start, self._end)

    def _check_open(self) -> None:
        if self._closed or self._store.closed:
            raise RuntimeError(f"partition log {self.pid} is closed")
