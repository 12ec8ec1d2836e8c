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
  ``truncate_to`` (end, backwards) and ``delete_before``/retention (start,
  forwards). Offsets below the start are gone; the start is always a batch
  boundary or the end.
- ``append`` is atomic: after a crash, a reopened log holds every batch whose
  ``append`` returned, and for one that did not return, all of it or none.
  With ``sync=True`` it also survives power loss (the write is fsynced).
- ``read(offset, max_bytes)`` returns whole batches starting with the batch
  that holds ``offset``; at least one batch whenever ``offset`` is below the
  end (KIP-74: a batch larger than ``max_bytes`` still makes progress), else b"".
- Retention and ``delete_before`` remove whole batches from the front only.
  They may remove every batch; then ``log_start_offset == log_end_offset`` and
  the end offset is kept (it is state, not derived from the last batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


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
        """Drop whole batches from the front that are older than ``retention_ms``
        (by max timestamp) or beyond ``retention_bytes``; return bytes removed."""
        ...

    def close(self) -> None: ...
