"""Log compaction (Kafka's ``LogCleaner``), pure: what one cleaning pass keeps.

A compacted topic keeps the latest record of every key. The cleaner on each
node cleans its own replicas independently (as Kafka's does): offsets never
change, so leader and followers agree on every offset that still exists,
whatever each has cleaned. The node driver (node/log_cleaner.py) reads the
log, calls these functions and hands the result to
``PartitionLog.apply_cleaning``; nothing here does I/O or reads a clock.

Rules of a pass:
1. The cleanable range is ``[log start, cleanable end)`` with
   ``cleanable_end = min(high watermark, last stable offset, base offset of
   the log's last batch, first batch younger than min.compaction.lag.ms)``.
   Never past the high watermark (a record not yet committed may be
   truncated, and the record it replaced must then still be there), never
   past the LSO (an open transaction may still abort), never the last batch
   (so a fetch at any offset below the log end finds a batch to return).
2. The offset map: each key's last offset in the range, from data records of
   batches that are not aborted (an aborted record must never hide an older
   committed one).
3. A data record at offset ``o`` with key ``k`` is kept iff ``o ==
   map[k]``, except a tombstone (null value), which at its latest offset is
   kept only until its horizon has passed (rule 6).
4. Aborted transactional batches (their producer has an aborted-index entry
   with ``first_offset <= base <= marker offset``) are removed whole; control
   batches (markers) are always kept (left out for now: Kafka removes a
   marker once its transaction's data is gone).
5. A batch that loses some records is rewritten with its base offset, last
   offset delta, attributes, producer id, epoch, base sequence and leader
   epoch unchanged, and the kept records with their original offsets and
   timestamps; its CRC is recomputed. A batch that loses every record is
   removed, unless it is the last batch in the range of a producer id the
   log's producer table still holds: that one stays as an empty batch (header
   only, no records, uncompressed), Kafka's rule, so a truncation rebuild of
   the producer state still finds the producer's last sequence and epoch.
   So a compacted log has gaps: a read inside a removed range returns the
   next batch, and a reader moves on by each batch's last offset delta.
6. Tombstone horizons (KIP-534's rule, kept beside the log instead of in
   batch headers): each pass that extends the cleaned range records
   ``(range end, time of the pass)``. A tombstone at offset ``o`` may be
   removed once the first recorded pass with ``end > o`` ran at least
   ``delete.retention.ms`` ago: a reader that started from the beginning
   before the tombstone was first cleaned has that long to see it. Passes
   closer than 1/100 of ``delete.retention.ms`` to the previous recorded one
   are not recorded (their tombstones wait for the next recorded pass, a
   little longer than required, never shorter), which bounds the list.
7. Dirty ratio: bytes in ``[cleaned offset, cleanable end)`` over bytes in
   ``[log start, cleanable end)``; a pass runs when it reaches
   ``min.cleanable.dirty.ratio`` (and there is something dirty).

A pass (``CleaningPass``) is applied in chunks (``CHUNK_BATCHES`` rewrites per
atomic log write; a run of neighbouring removed batches is one rewrite), in
offset order. Any prefix of the chunks is a valid log: a removed record's key
has a kept later record (rules 2-3), and a tombstone
goes only after every older record of its key, which lies in the same or
an earlier chunk. The cleaner checkpoint (cleaned offset and horizons) is
written with the last chunk.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import crc32c
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from ketch.recordbatch import (
    ATTR_CONTROL,
    COMPRESSION_MASK,
    HEADER_SIZE,
    LENGTH_PREFIX,
    BatchHeader,
    assign,
    parse_header,
)
from replication.transactions import AbortedTxn

CHUNK_BATCHES = 1000  # rewrites per atomic log write (the node's log_cleaner_chunk_rewrites)
HORIZON_SPACING = 100  # record a pass at most every delete.retention.ms / 100

_CHECKPOINT = struct.Struct(">QI")
_HORIZON = struct.Struct(">Qq")
_ATTRIBUTES_AT, _LAST_DELTA_AT, _CRC_AT = 21, 23, 17
_U16, _I32, _U32 = struct.Struct(">H"), struct.Struct(">i"), struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class CleanerCheckpoint:
    """What the cleaner has done to one log: the end of the range last cleaned, and the tombstone
    horizons (``(range end, pass time ms)`` ascending in both)."""

    cleaned_offset: int = 0
    horizons: tuple[tuple[int, int], ...] = ()

    def encode(self) -> bytes:
        out = [_CHECKPOINT.pack(self.cleaned_offset, len(self.horizons))]
        out.extend(_HORIZON.pack(end, at) for end, at in self.horizons)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> CleanerCheckpoint:
        if not data:
            return cls()
        if len(data) < _CHECKPOINT.size:
            raise ValueError(f"cleaner checkpoint of {len(data)} bytes is too short")
        cleaned, n = _CHECKPOINT.unpack_from(data)
        if len(data) != _CHECKPOINT.size + n * _HORIZON.size:
            raise ValueError(f"cleaner checkpoint of {len(data)} bytes does not hold {n} horizons")
        horizons = tuple(_HORIZON.unpack_from(data, _CHECKPOINT.size + i * _HORIZON.size) for i in range(n))
        return cls(cleaned, horizons)

    def truncated(self, end: int) -> CleanerCheckpoint:
        """After the log was truncated to ``end``: nothing at or past it was ever cleaned."""
        horizons: list[tuple[int, int]] = []
        for h_end, at in self.horizons:
            if h_end >= end:
                horizons.append((end, at))
                break
            horizons.append((h_end, at))
        return CleanerCheckpoint(min(self.cleaned_offset, end), tuple(horizons))

    def tombstone_removable(self, offset: int, now_ms: int, delete_retention_ms: int) -> bool:
        """Rule 6: the first recorded pass past ``offset`` ran ``delete_retention_ms`` ago."""
        i = bisect.bisect_right([end for end, _ in self.horizons], offset)
        return i < len(self.horizons) and self.horizons[i][1] + delete_retention_ms <= now_ms

    def after_pass(self, end: int, now_ms: int, delete_retention_ms: int) -> CleanerCheckpoint:
        """The checkpoint once a pass over ``[start, end)`` at ``now_ms`` has landed."""
        horizons = list(self.horizons)
        last_end = horizons[-1][0] if horizons else 0
        spacing = max(delete_retention_ms // HORIZON_SPACING, 1)
        if end > last_end and (not horizons or now_ms - horizons[-1][1] >= spacing):
            horizons.append((end, now_ms))
        # Keep one expired entry (the newest): it alone decides every offset below its end.
        expired = [i for i, (_, at) in enumerate(horizons) if at + delete_retention_ms <= now_ms]
        if len(expired) > 1:
            del horizons[: expired[-1]]
        return CleanerCheckpoint(max(self.cleaned_offset, end), tuple(horizons))


@dataclass(frozen=True, slots=True)
class CleanerConfig:
    """A topic's compaction settings (Kafka's names)."""

    delete_retention_ms: int = 86_400_000  # delete.retention.ms
    min_cleanable_dirty_ratio: float = 0.5  # min.cleanable.dirty.ratio
    min_compaction_lag_ms: int = 0  # min.compaction.lag.ms


def cleanable_end(
    log_start: int, high_watermark: int, last_stable_offset: int, last_batch_base: int, lag_bound: int
) -> int:
    """Rule 1. ``lag_bound``: base offset of the first batch younger than min.compaction.lag.ms
    (or the log end)."""
    return max(log_start, min(high_watermark, last_stable_offset, last_batch_base, lag_bound))


def dirty_ratio(clean_bytes: int, dirty_bytes: int) -> float:
    total = clean_bytes + dirty_bytes
    return dirty_bytes / total if total else 0.0


@dataclass(slots=True)
class AbortedRanges:
    """Which transactional batches are aborted: per producer, ``(first, marker)`` ranges."""

    ranges: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[AbortedTxn]) -> AbortedRanges:
        out = cls()
        for txn in entries:
            out.ranges.setdefault(txn.producer_id, []).append((txn.first_offset, txn.last_offset))
        for spans in out.ranges.values():
            spans.sort()
        return out

    def aborted(self, header: BatchHeader) -> bool:
        if not header.is_transactional or header.is_control:
            return False
        spans = self.ranges.get(header.producer_id)
        if not spans:
            return False
        i = bisect.bisect_right(spans, (header.base_offset, 2**63)) - 1
        return i >= 0 and spans[i][0] <= header.base_offset <= spans[i][1]


@dataclass(slots=True)
class OffsetMap:
    """Rule 2: each key's last offset in the range, and each producer's last batch there."""

    latest: dict[bytes, int] = field(default_factory=dict)
    last_batch: dict[int, int] = field(default_factory=dict)  # producer id -> base offset

    def add(self, batch: bytes, header: BatchHeader, aborted: AbortedRanges) -> None:
        if header.producer_id >= 0:
            self.last_batch[header.producer_id] = header.base_offset
        if header.is_control or aborted.aborted(header):
            return
        latest = self.latest
        for record in DefaultRecordBatch(batch):
            key = record.key
            if key is not None:
                latest[bytes(key)] = record.offset


@dataclass(frozen=True, slots=True)
class Rewrite:
    """One batch's fate: ``batch`` None = removed, else its new bytes (same base offset). A removal
    may cover a run of neighbouring batches, ``base_offset`` to ``last_base`` (no batch between
    them stays), so the log can drop the run with one range delete instead of a tombstone per batch
    that every later read would step over."""

    base_offset: int
    batch: bytes | None
    old_size: int
    records_removed: int
    last_base: int = -1  # a removal: base offset of the run's last batch (-1: just this one)

    @property
    def bytes_removed(self) -> int:
        return self.old_size - (len(self.batch) if self.batch is not None else 0)

    @property
    def through(self) -> int:
        """Base offset of the last batch this rewrite covers."""
        return max(self.last_base, self.base_offset)

    def joined(self, later: Rewrite) -> Rewrite:
        """This removal run extended by the next batch's removal."""
        return Rewrite(
            self.base_offset,
            None,
            self.old_size + later.old_size,
            self.records_removed + later.records_removed,
            later.through,
        )


def clean_batch(
    batch: bytes,
    header: BatchHeader,
    offsets: OffsetMap,
    aborted: AbortedRanges,
    checkpoint: CleanerCheckpoint,
    config: CleanerConfig,
    now_ms: int,
    live_producers: frozenset[int] | set[int],
) -> Rewrite | None:
    """Rules 3-5 for one batch of the cleanable range; None when it stays as it is."""
    if header.is_control:
        return None
    keep_empty = header.producer_id in live_producers and offsets.last_batch.get(header.producer_id) == (
        header.base_offset
    )
    if aborted.aborted(header):
        return _emptied(batch, header, header.records_count, keep_empty)
    kept = []
    removed = 0
    for record in DefaultRecordBatch(batch):
        key, value = record.key, record.value
        latest = key is not None and offsets.latest.get(bytes(key)) == record.offset
        if latest and value is None:
            latest = not checkpoint.tombstone_removable(record.offset, now_ms, config.delete_retention_ms)
        if latest or key is None:  # keyless: refused on produce, so never written here; kept if found
            kept.append(record)
        else:
            removed += 1
    if not removed:
        return None
    if not kept:
        return _emptied(batch, header, removed, keep_empty)
    builder = DefaultRecordBatchBuilder(
        2,
        header.attributes & COMPRESSION_MASK,
        int(header.is_transactional),
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        1 << 31,
    )
    for record in kept:
        builder.append(
            record.offset - header.base_offset,
            timestamp=record.timestamp,
            key=record.key,
            value=record.value,
            headers=list(record.headers),
        )
    new = _restamp(bytearray(builder.build()), header)
    return Rewrite(header.base_offset, new, len(batch), removed)


def _emptied(batch: bytes, header: BatchHeader, removed: int, keep_empty: bool) -> Rewrite:
    if not keep_empty:
        return Rewrite(header.base_offset, None, len(batch), removed)
    empty = bytearray(batch[:HEADER_SIZE])
    _I32.pack_into(empty, 8, HEADER_SIZE - LENGTH_PREFIX)  # batch_length
    _U16.pack_into(empty, _ATTRIBUTES_AT, header.attributes & ~COMPRESSION_MASK & 0xFFFF)
    _I32.pack_into(empty, HEADER_SIZE - 4, 0)  # records_count
    _U32.pack_into(empty, _CRC_AT, crc32c.crc32c(bytes(empty[_ATTRIBUTES_AT:])))
    return Rewrite(header.base_offset, bytes(empty), len(batch), removed)


def _restamp(built: bytearray, header: BatchHeader) -> bytes:
    """The original base offset, leader epoch, attributes and last offset delta on a rebuilt batch."""
    _U16.pack_into(built, _ATTRIBUTES_AT, header.attributes & 0xFFFF & ~ATTR_CONTROL)
    _I32.pack_into(built, _LAST_DELTA_AT, header.last_offset_delta)
    _U32.pack_into(built, _CRC_AT, crc32c.crc32c(bytes(built[_ATTRIBUTES_AT:])))
    return assign(memoryview(built), header.base_offset, header.leader_epoch)  # both outside the CRC


class CleaningPass:
    """One pass over ``[start, end)`` (rules 2-6). ``source()`` yields the range's whole batches in
    offset order and is called twice: once for the offset map, once for the rewrites, so a pass
    never holds the log in memory (only its keys). ``chunks()`` yields the rewrites in offset
    order, ``CHUNK_BATCHES`` at a time; ``checkpoint`` is what to store with the last chunk."""

    def __init__(
        self,
        source: Callable[[], Iterable[bytes]],
        end: int,
        aborted: Iterable[AbortedTxn],
        checkpoint: CleanerCheckpoint,
        config: CleanerConfig,
        now_ms: int,
        live_producers: frozenset[int] | set[int],
        chunk_rewrites: int = CHUNK_BATCHES,
    ) -> None:
        self.source = source
        self.chunk_rewrites = chunk_rewrites
        self.end = end
        self.aborted = AbortedRanges.of(aborted)
        self.before = checkpoint
        self.config = config
        self.now_ms = now_ms
        self.live_producers = live_producers
        self.checkpoint = checkpoint.after_pass(end, now_ms, config.delete_retention_ms)
        self.records_removed = 0
        self.bytes_removed = 0

    def chunks(self) -> Iterator[list[Rewrite]]:
        offsets = OffsetMap()
        for batch in self.source():
            offsets.add(batch, parse_header(batch), self.aborted)
        chunk: list[Rewrite] = []
        run: Rewrite | None = None  # neighbouring removals, joined into one
        for batch in self.source():
            header = parse_header(batch)
            rewrite = clean_batch(
                batch, header, offsets, self.aborted, self.before, self.config, self.now_ms, self.live_producers
            )
            if rewrite is not None:
                self.records_removed += rewrite.records_removed
                self.bytes_removed += rewrite.bytes_removed
            if rewrite is not None and rewrite.batch is None:
                run = rewrite if run is None else run.joined(rewrite)
                continue
            if run is not None:
                chunk.append(run)
                run = None
            if rewrite is not None:
                chunk.append(rewrite)
            if len(chunk) >= self.chunk_rewrites:
                yield chunk
                chunk = []
        if run is not None:
            chunk.append(run)
        if chunk:
            yield chunk
