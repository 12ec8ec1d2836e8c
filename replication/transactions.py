"""A partition's side of transactions, pure: the marker rule, the last stable offset, and the
aborted-transactions index (Kafka's ``.txnindex``). The protocol is KIP-98 with KIP-890's epoch
bump per transaction (issue 13) for Ketch's clients (transaction version 2, TV2), and Kafka's
transaction version 1 (TV1) for Kafka clients that send EndTxn below v5 (issue 18): the marker
says which (``transaction_version``; coordinator/transactions/coordinator.py decides).

Marker rule (``marker_verdict``, the leader, before it writes a marker of epoch E for a
producer): the producer's open transaction here has the entry's epoch (a transactional batch
sets it), so
- TV2 (E is the bumped epoch): an entry with epoch < E (open transaction or not), or no entry:
  WRITE the marker. Storing it (``producer_state.update``) ends the open transaction, if any,
  and sets the epoch to E with no retained batches, so data of the old epoch arriving late is
  INVALID_PRODUCER_EPOCH. An entry with epoch >= E: a duplicate or stale marker; nothing is
  written (the caller answers NONE). So a delayed marker of (pid, e) never ends transaction
  (pid, e+1).
- TV1 (E is the transaction's own epoch, Kafka's "marker epoch >= producer epoch"): no entry, an
  entry with epoch < E, or an OPEN transaction of epoch E: WRITE the marker. When the epoch does
  not change, storing it ends the open transaction and KEEPS the retained batches, so the
  producer's next transaction continues its sequence numbers (Kafka's ``appendEndTxnMarker``:
  a TV1 client does not reset them). Epoch E with nothing open, or epoch > E: nothing is
  written (a duplicate or stale marker).

What TV1 gives up (KAFKA-17754, the anomaly KIP-890 part 2 closes): transactions N and N+1 of a
TV1 producer share an epoch, so a delayed or duplicated marker of N that reaches a partition
after N+1 opened there ends N+1 (commits or aborts data the producer has not finished). Kafka
accepts this for these clients; Ketch does too. KIP-890 part 1 still applies (the leader's
verify_only check on a transaction's first batch of a partition, node/txn_service.py), so late
DATA of N cannot open a transaction the coordinator does not know.

Last stable offset: ``min(high watermark, first offset of the oldest open transaction)``, and
never below the log start (a transaction whose start was removed by retention cannot hold
readers below what exists).

Aborted-transactions index: one ``AbortedTxn(producer_id, first_offset, last_offset)`` per
stored ABORT marker that ended an open transaction, ``last_offset`` being the marker's offset;
kept in marker-offset order by leader and follower alike (it is derived from the stored
batches by ``aborted_by``, like the producer state). A truncation removes entries whose marker
is at or past the new end; the log start moving removes entries whose marker is below it.
A read_committed fetch of ``[fetch_offset, upper)`` gets the entries with
``last_offset >= fetch_offset`` and ``first_offset < upper`` (``overlapping``).

Encoding of an entry (RocksDB value; the key holds the marker offset): ``>qq`` (producer id,
first offset). Bad bytes raise ``ValueError``.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ketch.recordbatch import BatchHeader, marker_is_commit
from replication.producer_state import NO_TXN, ProducerEntry, ProducerStateTable

_ENTRY = struct.Struct(">qq")


@dataclass(frozen=True, slots=True, order=True)
class AbortedTxn:
    last_offset: int  # the abort marker's offset (first field: entries sort by it)
    producer_id: int
    first_offset: int

    def encode(self) -> bytes:
        return _ENTRY.pack(self.producer_id, self.first_offset)

    @classmethod
    def decode(cls, last_offset: int, data: bytes) -> AbortedTxn:
        if len(data) != _ENTRY.size:
            raise ValueError(f"aborted-transaction entry of {len(data)} bytes is not {_ENTRY.size}")
        pid, first = _ENTRY.unpack(data)
        if not 0 <= first <= last_offset:
            raise ValueError(f"aborted transaction first offset {first} is not within [0, {last_offset}]")
        return cls(last_offset, pid, first)


@dataclass(frozen=True, slots=True)
class WriteMarker:
    ends_first_offset: int  # first offset of the transaction it ends, -1: ends nothing


@dataclass(frozen=True, slots=True)
class SkipMarker:
    reason: str


MarkerVerdict = WriteMarker | SkipMarker

TV1 = 1  # Kafka's transaction version 1: the marker carries the transaction's own epoch
TV2 = 2  # KIP-890 part 2: the marker carries the bumped epoch
TRANSACTION_VERSIONS = (TV1, TV2)


def marker_verdict(
    entry: ProducerEntry | None, producer_id: int, epoch: int, transaction_version: int = TV2
) -> MarkerVerdict:
    """Whether the leader writes a marker of ``epoch`` for ``producer_id`` (the module docstring)."""
    if transaction_version not in TRANSACTION_VERSIONS:
        raise ValueError(f"transaction version {transaction_version} is not one of {TRANSACTION_VERSIONS}")
    if entry is None:
        return WriteMarker(NO_TXN)
    if entry.epoch < epoch or (transaction_version == TV1 and entry.epoch == epoch and entry.in_transaction):
        return WriteMarker(entry.txn_first_offset)
    state = f"open since offset {entry.txn_first_offset}" if entry.in_transaction else "no open transaction"
    return SkipMarker(
        f"producer {producer_id} is at epoch {entry.epoch} ({state}); a TV{transaction_version} marker of epoch"
        f" {epoch} is a duplicate or stale one and is not written"
    )


def first_unstable_offset(table: ProducerStateTable) -> int | None:
    """The first offset of the oldest open transaction, or None."""
    firsts = [e.txn_first_offset for e in table.entries.values() if e.in_transaction]
    return min(firsts) if firsts else None


def last_stable_offset(table: ProducerStateTable, high_watermark: int, log_start_offset: int) -> int:
    first = first_unstable_offset(table)
    if first is None:
        return high_watermark
    return min(high_watermark, max(first, log_start_offset))


def open_transactions(table: ProducerStateTable) -> int:
    return sum(1 for e in table.entries.values() if e.in_transaction)


def aborted_by(table: ProducerStateTable, batches: Iterable[tuple[bytes, BatchHeader]]) -> list[AbortedTxn]:
    """The index entries that storing ``batches`` after ``table`` (the producer state before them)
    adds: one per abort marker that ends an open transaction. ``BatchError`` for a control batch
    that is not a well-formed marker."""
    open_first: dict[int, int] = {}
    out: list[AbortedTxn] = []
    for batch, header in batches:
        pid = header.producer_id
        if pid < 0:
            continue
        if pid not in open_first:
            entry = table.get(pid)
            open_first[pid] = entry.txn_first_offset if entry is not None else NO_TXN
        if header.is_control:
            if open_first[pid] >= 0 and not marker_is_commit(batch):
                out.append(AbortedTxn(header.base_offset, pid, open_first[pid]))
            open_first[pid] = NO_TXN
        elif header.is_transactional and open_first[pid] < 0:
            open_first[pid] = header.base_offset
    return out


def check_markers(batches: Iterable[tuple[bytes, BatchHeader]]) -> None:
    """``BatchError`` unless every control batch is a well-formed marker."""
    for batch, header in batches:
        if header.is_control:
            marker_is_commit(batch)


def overlapping(index: Sequence[AbortedTxn], fetch_offset: int, upper: int) -> tuple[tuple[int, int], ...]:
    """(producer id, first offset) of the entries of ``index`` (in marker-offset order) overlapping
    ``[fetch_offset, upper)``."""
    at = bisect.bisect_left(index, fetch_offset, key=lambda t: t.last_offset)
    return tuple((t.producer_id, t.first_offset) for t in index[at:] if t.first_offset < upper)


__all__ = [
    "TRANSACTION_VERSIONS",
    "TV1",
    "TV2",
    "AbortedTxn",
    "MarkerVerdict",
    "SkipMarker",
    "WriteMarker",
    "aborted_by",
    "check_markers",
    "first_unstable_offset",
    "last_stable_offset",
    "marker_verdict",
    "open_transactions",
    "overlapping",
]
