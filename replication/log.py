"""The partition log interface: an ordered sequence of RecordBatch v2 batches.

A ``PartitionLog`` stores whole batches exactly as given, keyed by base offset.
It never assigns offsets itself: the partition leader assigns base offset and
leader epoch in the batch header before calling ``append`` (and a follower
appends the leader's bytes unchanged), so one interface serves both.

Invariants every implementation keeps (tests/test_partition_log.py runs the
same suite against each):
- Batches are contiguous: each batch's base offset equals the previous batch's
  last offset + 1; ``append`` refuses anything else with ``LogAppendError``.
- ``log_start_offset <= log_end_offset``; both only move by ``append``,
  ``truncate_to`` (end, backwards), ``delete_before``/retention (start,
  forwards) and ``reset_to`` (both, to any offset). Offsets below the start
  are gone; the start is always a batch boundary or the end.
- ``append`` is atomic: after a crash, a reopened log holds every batch whose
  ``append`` returned, and for one that did not return, all of it or none.
  With ``sync=True`` it also survives power loss (the write is fsynced).
- ``read(offset, max_bytes)`` returns whole batches starting with the batch
  that holds ``offset``; at least one batch whenever ``offset`` is below the
  end (KIP-74: a batch larger than ``max_bytes`` still makes progress), else b"".
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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from replication.epoch_cache import UNDEFINED_EPOCH, UNDEFINED_OFFSET

__all__ = [
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
        ``offset`` itself when it is a batch boundary or the current end).
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

    def close(self) -> None: ...
