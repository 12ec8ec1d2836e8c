"""A partition's producer state (KIP-98, KIP-360): Kafka's ProducerStateManager, pure.

A batch whose header carries producer id >= 0 is idempotent: it also carries
the producer epoch and the base sequence (RecordBatch v2 bytes 43..57, inside
the CRC). Its sequences are ``[first_seq, last_seq]`` with ``last_seq =
first_seq + last_offset_delta``, wrapping at 2**31 - 1 to 0 as Kafka's do.

The table holds, per producer id, a ``ProducerEntry``: the epoch, the metadata
of the producer's last ``BATCHES_TO_RETAIN`` (5) batches of that epoch (first
and last sequence, first and last offset, max timestamp) and the last-seen
time (the max timestamp of its latest batch, so the table is a function of
the batches alone, on every replica and in every rebuild).

Rules for a produce (``check``, the leader, before offsets are assigned), in
Kafka's order (``UnifiedLog.analyzeAndValidateProducerState``):
0. An idempotent batch with a negative epoch or base sequence is
   INVALID_RECORD (Kafka's ``LogValidator``).
1. An exact retry of one of the last 5 batches (same epoch, same first and
   last sequence) is ``Duplicate`` with the ORIGINAL first and last offset;
   nothing is stored again.
2. An epoch lower than the producer's is INVALID_PRODUCER_EPOCH.
3. An unknown producer (no entry: new, expired or removed) is accepted with
   any sequence (KIP-360: the broker cannot tell a gap from lost state).
4. An epoch higher than the producer's (a bump, KIP-360) must start at
   sequence 0, else OUT_OF_ORDER_SEQUENCE_NUMBER.
5. Otherwise the first sequence must follow the last one (last + 1, or 0
   after 2**31 - 1), else OUT_OF_ORDER_SEQUENCE_NUMBER.
A refusal is ``Refuse(code, message)`` naming topic-partition, producer id,
epoch, and the expected and received sequence.

``update`` is applied for every STORED idempotent batch, by leader and
follower alike and by a rebuild, without any check (the log is the truth,
Kafka's replication origin): a new epoch replaces the entry's batches, the
same epoch appends and keeps the last 5. ``check`` followed by ``update`` of
an accepted batch therefore never stores a sequence of one epoch twice.

Transactions (KIP-98 with KIP-890's epoch bump, issue 13):
- An entry also holds ``txn_first_offset``: the first offset of the producer's open
  transaction on this partition, -1 when none is open.
- ``update`` of a transactional data batch sets it to the batch's first offset when none
  is open (an open one keeps its first offset, as Kafka's ``ProducerAppendInfo``).
- ``update`` of a control batch (a marker, epoch E) ends the open transaction, if any. When E
  is a new epoch (a TV2 marker always is: it carries the bumped epoch) it sets the epoch to E
  with no retained batches, so the next data batch of E starts at sequence 0 and data of a
  lower epoch is INVALID_PRODUCER_EPOCH. When E is the entry's epoch (a TV1 marker: Kafka
  clients below EndTxn v5 keep their epoch) it keeps the retained batches, so the producer's
  next transaction continues its sequence numbers (Kafka's ``appendEndTxnMarker`` clears them
  only when the epoch changes). Either way this is a function of the stored batches alone.
- ``check`` refuses a non-transactional batch of a producer with an open transaction
  (INVALID_TXN_STATE, Kafka's rule); ``starts_transaction`` says whether a transactional
  batch would open one (the leader then needs the coordinator's verification, KIP-890).
- A producer with an open transaction never expires: expiring it would make its data
  visible; the coordinator's timeout abort ends it.
The marker verdict and the last stable offset are in ``replication/transactions.py``.

Expiry (``expired``): a producer whose last-seen time is at least
``producer.id.expiration.ms`` (``PRODUCER_ID_EXPIRATION_MS``, Kafka's default
of one day) before ``now_ms`` is removed; it is then unknown (rule 3).

Encoding (never pickle): an entry is ``>BqhqqI`` (version 2, producer id, epoch,
last-seen time, txn first offset, batch count) then per batch ``>iiqqq`` (first
and last sequence, first and last offset, max timestamp); version 1 entries
(``>BqhqI``, no txn first offset) still decode, with no open transaction. A table
(a snapshot) is ``>BI`` (version 2, or 1 when written before transactions; entry
count) then per entry its length (``>I``) and bytes. Bad bytes raise ``ValueError``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ketch.errors import ErrorCode
from ketch.recordbatch import BatchHeader

BATCHES_TO_RETAIN = 5
PRODUCER_ID_EXPIRATION_MS = 86_400_000
NO_PRODUCER_ID = -1
MAX_SEQUENCE = 2**31 - 1
VERSION = 2
NO_TXN = -1
_ENTRY_V1 = struct.Struct(">BqhqI")
_ENTRY = struct.Struct(">BqhqqI")
_BATCH = struct.Struct(">iiqqq")
_TABLE = struct.Struct(">BI")
_LEN = struct.Struct(">I")


def add_sequence(seq: int, delta: int) -> int:
    """``seq + delta`` wrapping past 2**31 - 1 to 0 (Kafka's ``DefaultRecordBatch.incrementSequence``)."""
    return (seq + delta) % (MAX_SEQUENCE + 1)


def next_sequence(last_seq: int) -> int:
    return add_sequence(last_seq, 1)


@dataclass(frozen=True, slots=True)
class BatchMetadata:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    max_timestamp: int


@dataclass(frozen=True, slots=True)
class ProducerEntry:
    producer_id: int
    epoch: int
    batches: tuple[BatchMetadata, ...]  # oldest first, at most BATCHES_TO_RETAIN, all of ``epoch``
    last_timestamp: int
    txn_first_offset: int = NO_TXN  # first offset of the open transaction here, -1: none

    @property
    def in_transaction(self) -> bool:
        return self.txn_first_offset >= 0

    @property
    def last_seq(self) -> int:
        return self.batches[-1].last_seq if self.batches else -1

    def find_duplicate(self, epoch: int, first_seq: int, last_seq: int) -> BatchMetadata | None:
        if epoch != self.epoch:
            return None
        for meta in self.batches:
            if meta.first_seq == first_seq and meta.last_seq == last_seq:
                return meta
        return None

    def encode(self) -> bytes:
        head = _ENTRY.pack(
            VERSION, self.producer_id, self.epoch, self.last_timestamp, self.txn_first_offset, len(self.batches)
        )
        return head + b"".join(
            _BATCH.pack(b.first_seq, b.last_seq, b.first_offset, b.last_offset, b.max_timestamp) for b in self.batches
        )

    @classmethod
    def decode(cls, data: bytes) -> ProducerEntry:
        if len(data) < _ENTRY_V1.size:
            raise ValueError(f"producer entry of {len(data)} bytes is shorter than its {_ENTRY_V1.size}-byte header")
        version = data[0]
        if version == 1:
            head = _ENTRY_V1
            _, pid, epoch, last_ts, count = head.unpack_from(data)
            txn_first = NO_TXN
        elif version == VERSION and len(data) >= _ENTRY.size:
            head = _ENTRY
            _, pid, epoch, last_ts, txn_first, count = head.unpack_from(data)
        else:
            raise ValueError(f"producer entry version {version} of {len(data)} bytes is not supported (1 or {VERSION})")
        if len(data) != head.size + count * _BATCH.size or count > BATCHES_TO_RETAIN or txn_first < NO_TXN:
            raise ValueError(f"producer entry of {len(data)} bytes does not hold {count} batches")
        batches = tuple(BatchMetadata(*f) for f in _BATCH.iter_unpack(data[head.size :]))
        return cls(pid, epoch, batches, last_ts, txn_first)


@dataclass(frozen=True, slots=True)
class IdempotentBatch:
    """What the producer state reads from one batch header."""

    producer_id: int
    epoch: int
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int
    max_timestamp: int
    transactional: bool = False
    control: bool = False  # a transaction marker (first_seq -1)

    @classmethod
    def of(cls, header: BatchHeader) -> IdempotentBatch | None:
        """The batch's producer fields, or None when it is not idempotent (producer id < 0)."""
        if header.producer_id < 0:
            return None
        last_seq = add_sequence(header.base_sequence, header.last_offset_delta)
        return cls(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
            last_seq,
            header.base_offset,
            header.last_offset,
            header.max_timestamp,
            header.is_transactional,
            header.is_control,
        )


@dataclass(frozen=True, slots=True)
class Accept:
    pass


@dataclass(frozen=True, slots=True)
class Duplicate:
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class Refuse:
    code: ErrorCode
    message: str


Verdict = Accept | Duplicate | Refuse
ACCEPT = Accept()


def check(entry: ProducerEntry | None, batch: IdempotentBatch, where: str) -> Verdict:
    """The leader's verdict on an idempotent batch (rules 1-5 of the module docstring)."""
    who = f"{where}: producer {batch.producer_id} epoch {batch.epoch}"
    if batch.control:
        return Refuse(ErrorCode.INVALID_RECORD, f"{who}: a producer may not write control batches (markers)")
    if batch.epoch < 0 or batch.first_seq < 0:
        return Refuse(
            ErrorCode.INVALID_RECORD,
            f"{who}: an idempotent batch needs epoch >= 0 and base sequence >= 0 (got sequence {batch.first_seq})",
        )
    if entry is None:
        return ACCEPT
    dup = entry.find_duplicate(batch.epoch, batch.first_seq, batch.last_seq)
    if dup is not None:
        return Duplicate(dup.first_offset, dup.last_offset)
    if entry.in_transaction and not batch.transactional and batch.epoch >= entry.epoch:
        return Refuse(
            ErrorCode.INVALID_TXN_STATE,
            f"{who}: a non-transactional batch while the producer's transaction (from offset "
            f"{entry.txn_first_offset}) is open here",
        )
    if batch.epoch < entry.epoch:
        return Refuse(
            ErrorCode.INVALID_PRODUCER_EPOCH,
            f"{who} is older than the producer's current epoch {entry.epoch}; a newer producer session "
            "took over (re-initialize the producer)",
        )
    expected = 0 if batch.epoch > entry.epoch else next_sequence(entry.last_seq)
    if batch.first_seq != expected:
        after = "a new epoch starts at" if batch.epoch > entry.epoch else f"after sequence {entry.last_seq} comes"
        return Refuse(
            ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
            f"{who}: expected sequence {expected} ({after} {expected}), received {batch.first_seq}; "
            "an earlier batch is missing (the producer bumps its epoch and starts again at 0)",
        )
    return ACCEPT


def starts_transaction(entry: ProducerEntry | None, batch: IdempotentBatch) -> bool:
    """Whether storing transactional ``batch`` would open a transaction here (KIP-890: only after
    the coordinator verified it): no open transaction of the batch's epoch."""
    return batch.transactional and (entry is None or not entry.in_transaction or entry.epoch != batch.epoch)


def update(entry: ProducerEntry | None, batch: IdempotentBatch) -> ProducerEntry:
    """The entry after ``batch`` was stored (no checks: the log is the truth)."""
    if batch.control:  # a marker ends any open transaction; a new epoch drops the retained batches
        kept_batches = entry.batches if entry is not None and entry.epoch == batch.epoch else ()
        return ProducerEntry(batch.producer_id, batch.epoch, kept_batches, batch.max_timestamp, NO_TXN)
    meta = BatchMetadata(batch.first_seq, batch.last_seq, batch.first_offset, batch.last_offset, batch.max_timestamp)
    txn = entry.txn_first_offset if entry is not None else NO_TXN
    if batch.transactional and txn < 0:
        txn = batch.first_offset
    if entry is None or entry.epoch != batch.epoch:
        return ProducerEntry(batch.producer_id, batch.epoch, (meta,), batch.max_timestamp, txn)
    kept = (*entry.batches, meta)[-BATCHES_TO_RETAIN:]
    return ProducerEntry(batch.producer_id, batch.epoch, kept, batch.max_timestamp, txn)


def expired(entry: ProducerEntry, now_ms: int, expiration_ms: int) -> bool:
    return not entry.in_transaction and now_ms - entry.last_timestamp >= expiration_ms


class ProducerStateTable:
    """Producer id -> ``ProducerEntry`` for one partition; see the module docstring.

    Entries are immutable, so ``copy`` is cheap and a snapshot shares them."""

    __slots__ = ("entries",)

    def __init__(self, entries: Mapping[int, ProducerEntry] | None = None) -> None:
        self.entries: dict[int, ProducerEntry] = dict(entries or {})

    def get(self, producer_id: int) -> ProducerEntry | None:
        return self.entries.get(producer_id)

    def copy(self) -> ProducerStateTable:
        return ProducerStateTable(self.entries)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ProducerStateTable) and self.entries == other.entries

    def __len__(self) -> int:
        return len(self.entries)

    def __repr__(self) -> str:
        return f"ProducerStateTable({len(self.entries)} producers)"

    def check(self, batch: IdempotentBatch, where: str) -> Verdict:
        return check(self.entries.get(batch.producer_id), batch, where)

    def updated(self, headers: Iterable[BatchHeader], only: set[int] | None = None) -> dict[int, ProducerEntry]:
        """The entries that ``update`` for every idempotent batch of ``headers`` (of producers in
        ``only``, if given) changes, without changing the table."""
        changed: dict[int, ProducerEntry] = {}
        for header in headers:
            batch = IdempotentBatch.of(header)
            if batch is None or (only is not None and batch.producer_id not in only):
                continue
            pid = batch.producer_id
            changed[pid] = update(changed.get(pid) or self.entries.get(pid), batch)
        return changed

    def apply(self, headers: Iterable[BatchHeader], only: set[int] | None = None) -> set[int]:
        """``updated``, applied; returns the producer ids whose entries changed."""
        changed = self.updated(headers, only)
        self.entries.update(changed)
        return set(changed)

    def remove_expired(self, now_ms: int, expiration_ms: int) -> list[int]:
        gone = [pid for pid, e in self.entries.items() if expired(e, now_ms, expiration_ms)]
        for pid in gone:
            del self.entries[pid]
        return gone

    def encode(self) -> bytes:
        parts = [_TABLE.pack(VERSION, len(self.entries))]
        for pid in sorted(self.entries):
            raw = self.entries[pid].encode()
            parts.append(_LEN.pack(len(raw)) + raw)
        return b"".join(parts)

    @classmethod
    def decode(cls, data: bytes) -> ProducerStateTable:
        if len(data) < _TABLE.size:
            raise ValueError(f"producer state snapshot of {len(data)} bytes has no header")
        version, count = _TABLE.unpack_from(data)
        if version not in (1, VERSION):
            raise ValueError(f"producer state snapshot version {version} is not supported (1 or {VERSION})")
        out, at = cls(), _TABLE.size
        for _ in range(count):
            if at + _LEN.size > len(data):
                raise ValueError("producer state snapshot is truncated")
            (n,) = _LEN.unpack_from(data, at)
            entry = ProducerEntry.decode(data[at + _LEN.size : at + _LEN.size + n])
            out.entries[entry.producer_id] = entry
            at += _LEN.size + n
        if at != len(data):
            raise ValueError(f"producer state snapshot has {len(data) - at} bytes after its {count} entries")
        return out


# -- what a log does with it (both PartitionLogs call these; rules in replication/log.py) -------


def rolled_back(
    live: ProducerStateTable, base: ProducerStateTable, headers: Iterable[BatchHeader], affected: set[int]
) -> dict[int, ProducerEntry | None]:
    """The entries of ``affected`` producers after a truncation: ``base`` (the snapshot at or below
    the new end) plus the kept ``headers`` from there; None for a producer left without batches.
    A producer the live table no longer holds stays out (it expired)."""
    wanted = {pid for pid in affected if pid in live.entries}
    table = ProducerStateTable({pid: e for pid, e in base.entries.items() if pid in wanted})
    table.apply(headers, only=wanted)
    return {pid: table.entries.get(pid) for pid in wanted}


def table_at(live: ProducerStateTable, base: ProducerStateTable, headers: Iterable[BatchHeader]) -> ProducerStateTable:
    """The table at a new log start: ``base`` plus the removed ``headers`` up to it, without the
    producers the live table no longer holds (expired)."""
    table = base.copy()
    table.apply(headers)
    table.entries = {pid: e for pid, e in table.entries.items() if pid in live.entries}
    return table
