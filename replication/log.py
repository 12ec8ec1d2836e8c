"""The partition log interface: an ordered sequence of RecordBatch v2 batches.

A ``PartitionLog`` stores whole batches exactly as given, keyed by base offset.
It never assigns offsets itself: the partition leader assigns base offset and
leader epoch in the batch header before calling ``append`` (and a follower
appends the leader's bytes unchanged), so one interface serves both.

Invariants every implementation keeps (tests/test_partition_log.py runs the
same suite against each):
- Batches are in offset order: each batch's base offset is above the previous
  batch's last offset (the leader appends contiguously; a follower copying a
  compacted leader gets gaps); ``append`` refuses a batch that starts below
  the log end with ``LogAppendError``.
- ``log_start_offset <= log_end_offset``; both only move by ``append``,
  ``truncate_to`` (end, backwards), ``delete_before``/retention (start,
  forwards) and ``reset_to`` (both, to any offset). Offsets below the start
  are gone; the start is a batch boundary, the end, or (after compaction
  removed the first batches) an offset in a gap.
- ``append`` is atomic: after a crash, a reopened log holds every batch whose
  ``append`` returned, and for one that did not return, all of it or none.
  With ``sync=True`` it also survives power loss (the write is fsynced).
- ``read(offset, max_bytes)`` returns whole batches starting with the batch
  that holds ``offset`` (inside a gap: the next batch); at least one batch
  whenever a batch ends above ``offset`` (KIP-74: a batch larger than
  ``max_bytes`` still makes progress), else b"".
- Retention and ``delete_before`` remove whole batches from the front only.
  They may remove every batch; then ``log_start_offset == log_end_offset`` and
  the end offset is kept (it is state, not derived from the last batch).
- ``reset_to(offset)`` drops every batch and starts an empty log at
  ``offset`` (start == end == offset), wherever that is: a follower whose
  leader's log starts beyond the follower's end (Kafka's
  ``truncateFullyAndStartAt``).

Leader-epoch cache (KIP-101, KIP-279; the rules are in
``replication/epoch_cache.py``). The log maintains it from the batches it
stores, so it always describes exactly the batches in the log:
- ``append`` reads each batch's partition leader epoch (header bytes 12..16).
  A batch whose epoch is greater than ``latest_epoch`` records ``(epoch, base
  offset)``; one whose epoch is lower is refused with ``LogAppendError`` (a
  stale leader's write is never stored after a newer epoch); equal adds
  nothing. Epoch -1 (no epoch) is accepted only while the cache is empty.
- ``assign_epoch(epoch, start_offset)``: a new leader records its epoch at its
  log end offset at election, before appending anything (KIP-279); appends of
  batches with that epoch then add nothing. It is synced.
- ``truncate_to`` forgets epochs starting at or after the new end;
  ``delete_before``/retention move the first kept epoch's start to the new log
  start (when every batch goes, the latest epoch stays, at the end); ``reset_to``
  clears the cache.
- The cache is written atomically with the batches it describes, so after a
  crash it never disagrees with the records.
- ``end_offset_for_epoch(epoch)`` is the OffsetsForLeaderEpoch answer.

High-watermark checkpoint: ``checkpoint_high_watermark(hw)`` stores ``hw``
clamped to ``[log_start_offset, log_end_offset]`` (an unsynced write: it is a
hint, recovered on open and clamped again). ``truncate_to`` below it lowers it
to the new end; ``delete_before``/retention past it raise it to the new start;
``reset_to`` sets it to the new offset. So ``start <= high_watermark <= end``
always holds.

Producer state (KIP-98; the rules are in ``replication/producer_state.py``,
DESIGN.md §10). Like the epoch cache, the log derives it from the batches it
stores, on leader and follower alike, so a new leader already has it:
- ``append`` reads producer id, epoch, base sequence and record count from
  each batch header and ``update``s the ``ProducerStateTable``; the changed
  entries are written with the batches, atomically (RocksDB: one row per
  producer in the same WriteBatch; memory: lost with unsynced appends on
  ``crash()``). ``append`` never refuses a batch for its sequence: the
  leader's ``Partition.append`` checks before it assigns offsets.
- Snapshots bound a rebuild: after every ``PRODUCER_SNAPSHOT_INTERVAL``
  appended batches, the whole table is stored with its offset (the log end it
  describes). There is always a snapshot at ``log_start_offset`` unless the
  table there is empty (a log that starts at 0, or after ``reset_to``).
- ``truncate_to(offset)`` rolls the state back: snapshots above the new end
  are deleted; each producer that had a batch in the removed range is rebuilt
  from the latest snapshot at or below the new end (else the empty table at
  the log start) plus the batch headers from there to the new end. A producer
  the table no longer holds stays out (it expired; truncation only removes).
- ``delete_before``/retention keep every entry (Kafka keeps them until
  expiry, KIP-360): they write the table as of the new start as its snapshot
  (the previous one plus the removed batches' headers) and delete the older
  snapshots. ``reset_to`` clears the table and every snapshot.
- ``expire_producers(now_ms, expiration_ms)`` removes producers whose last
  batch's max timestamp is ``expiration_ms`` or more before ``now_ms``
  (persisted: RocksDB deletes their rows, unsynced).
- A reopened RocksDB log reads the table back from its rows: no scan.

Aborted-transactions index (Kafka's ``.txnindex``; rules in
``replication/transactions.py``), derived from the stored batches like the
producer state, on leader and follower alike:
- ``append`` adds ``AbortedTxn(producer id, first offset, marker offset)`` for
  each abort marker that ends an open transaction, in the same atomic write
  (a control batch that is not a well-formed marker is ``LogAppendError``);
- ``truncate_to`` removes the entries whose marker is at or past the new end
  (and rebuilds the open transactions with the producer state);
  ``delete_before``/retention remove those whose marker is below the new
  start; ``reset_to`` removes all.
- ``aborted_transactions(fetch_offset, upper)`` answers a read_committed fetch.

Compaction (the rules are in ``replication/compaction.py``): the cleaner
reads the log, plans a pass and applies it with ``apply_cleaning(generation,
rewrites, checkpoint)``: in ONE synced write it replaces each rewritten batch
(same base offset and last offset) and deletes each removed one, adjusts the
size, and stores the ``CleanerCheckpoint`` when given. It applies only if
``generation`` is still the log's: every truncation, front deletion,
retention and reset moves it (a pass planned before one of those is
dropped); appends do not (they never touch the cleaned range, which ends
below the high watermark). The time index keeps its entries; a lookup that
lands on a removed, rewritten or emptied batch scans forward to the first
batch with records whose max timestamp reaches the target. ``truncate_to``
clamps the checkpoint to the new end (nothing there was ever cleaned);
``reset_to`` clears it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from replication.compaction import CleanerCheckpoint, Rewrite
from replication.epoch_cache import UNDEFINED_EPOCH, UNDEFINED_OFFSET
from replication.producer_state import ProducerStateTable
from replication.transactions import AbortedTxn

PRODUCER_SNAPSHOT_INTERVAL = 1000  # appended batches between two snapshots of the producer table

__all__ = [
    "PRODUCER_SNAPSHOT_INTERVAL",
    "UNDEFINED_EPOCH",
    "UNDEFINED_OFFSET",
    "LogAppendError",
    "LogOffsetError",
    "PartitionLog",
    "RetentionPolicy",
]


class LogAppendError(ValueError):
    """Batches that do not continue the log (a caller bug, never client input)."""


class LogOffsetError(ValueError):
    """An offset outside ``[log_start_offset, log_end_offset]``."""

    def __init__(self, offset: int, start: int, end: int) -> None:
        super().__init__(f"offset {offset} is outside the log [{start}, {end}]")
        self.offset = offset
        self.start = start
        self.end = end


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Kafka's ``retention.ms`` and ``retention.bytes``; -1 disables either."""

    retention_ms: int = -1
    retention_bytes: int = -1


class PartitionLog(Protocol):
    @property
    def log_start_offset(self) -> int: ...

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record will get."""
        ...

    @property
    def size_bytes(self) -> int:
        """Total bytes of the stored batches."""
        ...

    def append(self, batches: Sequence[bytes], *, sync: bool = False) -> None:
        """Store validated batches whose offsets continue the log, atomically."""
        ...

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``; raises ``LogOffsetError``."""
        ...

    def truncate_to(self, offset: int) -> None:
        """Remove every batch whose base offset is >= ``offset``'s batch.

        The end becomes the base offset of the batch that holds ``offset`` (or
        ``offset`` itself when it is a batch boundary, in a gap, or the current end).
        """
        ...

    def delete_before(self, offset: int) -> None:
        """Drop every batch that lies wholly below ``offset``; the start becomes
        the base offset of the first batch kept (or the end, if none is kept)."""
        ...

    def batch_for_timestamp(self, timestamp_ms: int) -> bytes | None:
        """The first batch whose max timestamp is >= ``timestamp_ms``, or None."""
        ...

    def apply_retention(self, policy: RetentionPolicy, now_ms: int) -> int:
        """Drop whole batches from the front; return the bytes removed.

        Time first: drop while the oldest batch's max timestamp is more than
        ``retention_ms`` before ``now_ms`` (stop at the first unexpired one).
        Then size, Kafka's rule: drop the oldest batch only while the size
        AFTER dropping it stays >= ``retention_bytes`` (the log never shrinks
        below ``retention_bytes`` by size retention)."""
        ...

    def reset_to(self, offset: int) -> None:
        """Drop every batch and the epoch cache; start an empty log at ``offset``."""
        ...

    # -- leader-epoch cache -------------------------------------------------

    @property
    def latest_epoch(self) -> int:
        """The latest cached leader epoch, or -1 when the cache is empty."""
        ...

    def epoch_entries(self) -> list[tuple[int, int]]:
        """The cache as ``(epoch, start_offset)`` pairs, oldest first."""
        ...

    def assign_epoch(self, epoch: int, start_offset: int) -> None:
        """A new leader's epoch, starting at ``start_offset`` == the log end offset.

        A no-op when ``epoch`` is the latest epoch; ``LogAppendError`` when it is
        lower or ``start_offset`` is not the log end offset. Synced.
        """
        ...

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        """(largest cached epoch <= ``epoch``, its end offset): the start offset
        of the next cached epoch, or the log end offset for the latest. (-1, -1)
        when ``epoch`` is below every cached epoch."""
        ...

    # -- high-watermark checkpoint -------------------------------------------

    @property
    def high_watermark(self) -> int:
        """The checkpointed high watermark, within ``[log_start_offset, log_end_offset]``."""
        ...

    def checkpoint_high_watermark(self, hw: int) -> None:
        """Store ``hw`` (clamped to the log's range); unsynced."""
        ...

    # -- producer state -------------------------------------------------------

    @property
    def producer_state(self) -> ProducerStateTable:
        """The producer table as of the log end (read it; never change it)."""
        ...

    def producer_snapshot_offsets(self) -> list[int]:
        """The offsets of the stored producer-table snapshots, ascending."""
        ...

    def expire_producers(self, now_ms: int, expiration_ms: int) -> int:
        """Remove producers idle for ``expiration_ms``; return how many."""
        ...

    # -- aborted-transactions index -----------------------------------------

    def aborted_index(self) -> list[AbortedTxn]:
        """Every entry, in marker-offset order."""
        ...

    def aborted_transactions(self, fetch_offset: int, upper: int) -> tuple[tuple[int, int], ...]:
        """(producer id, first offset) of aborted transactions overlapping ``[fetch_offset, upper)``."""
        ...

    # -- compaction -----------------------------------------------------------

    @property
    def generation(self) -> int:
        """Moves on every truncation, front deletion, retention and reset (not on appends)."""
        ...

    @property
    def cleaner_checkpoint(self) -> CleanerCheckpoint: ...

    def apply_cleaning(
        self, generation: int, rewrites: Sequence[Rewrite], checkpoint: CleanerCheckpoint | None
    ) -> bool:
        """Apply one chunk of a cleaning pass atomically (synced); False if ``generation`` is stale."""
        ...

    def close(self) -> None: ...
