"""The idempotent producer's sequence bookkeeping: Kafka's ``TransactionManager``, idempotent half.

Pure: no clock, no I/O. The producer's accumulator asks ``drain(batch)``
for the head batch of each partition; the sender reports every outcome
(``acked``, ``failed``, ``sequence_error``). The batch objects carry the
stamp (``producer_id``, ``producer_epoch``, ``base_sequence``) this class
gives them; the driver writes it into the RecordBatch header.

Rules (KIP-98, KIP-360; Kafka's names where it has them):
- Sequences are per partition, start at 0 and wrap from 2^31-1 to 0; a batch
  covers ``[base_sequence, base_sequence + record_count - 1]``. A batch gets
  its sequence once, when it is first drained; a retry keeps it.
- *In flight* are a partition's batches that were drained and are not
  complete (acknowledged or failed), in sequence order. At most
  ``max_in_flight`` (5) per partition.
- A new batch is drained only while the partition's sequences belong to the
  current producer id and epoch; a partition left behind by an epoch bump
  (*stale*) drains nothing new until its in-flight batches are complete,
  then starts again at 0 under the current epoch.
- Until the partition has acknowledged a batch of the current producer id and
  epoch within the last ``confirm_ttl_ms``, only one batch is in flight there. A broker that holds no state for
  the producer accepts any sequence (KIP-360), so a second batch overtaking
  the first (a lost request, concurrent handlers) would be stored out of order,
  and a rewrite after the first one's OUT_OF_ORDER_SEQUENCE_NUMBER would
  store it twice. Once the broker knows the producer it refuses every gap.
  A broker forgets a producer only after ``producer.id.expiration.ms`` without
  a write from it; ``confirm_ttl_ms`` (60 s) must stay below that by more than
  a request's timeout.
- A retried batch is drained only when it is the partition's first in-flight
  batch (``inflightBatchesBySequence``): later batches that failed with
  OUT_OF_ORDER_SEQUENCE_NUMBER because an earlier one failed go again in
  sequence order, behind it.
- OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID for the first
  in-flight batch (the oldest unacknowledged): the epoch is bumped locally
  (unless this partition's bump already happened) and the partition's
  in-flight batches are *rewritten*: sequences from 0 under the current epoch,
  when the first of them is drained again. The broker stored none of them:
  it refused the oldest, and, knowing the producer (see above), it accepts a
  batch only right after the previous sequence. A response about a stamp that was rewritten since is
  retried; a success for it stands (its records are stored).
- A batch that was drained and then fails for good (any error, a timeout)
  leaves its partition's sequences unknown: the epoch is bumped (once per
  partition), so the partition restarts at 0 once nothing is in flight.
- The epoch is the producer's, shared by all partitions. Past 32767 the
  producer needs a new producer id (``needs_producer_id``); nothing drains
  until ``set_producer`` gives one.

Invariant (tests/test_client_idempotence.py): under any order of outcomes,
for every (producer id, epoch, partition) the sequences the broker could
store are consecutive from 0, and no (producer id, epoch, sequence) ever
names two different batches.
"""

from __future__ import annotations

import struct
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Protocol

import crc32c

NO_PRODUCER_ID = -1
NO_EPOCH = -1
NO_SEQUENCE = -1
MAX_SEQUENCE = 2**31 - 1
MAX_EPOCH = 32767
MAX_IN_FLIGHT = 5
CONFIRM_TTL_MS = 60_000


_PRODUCER_STATE = struct.Struct(">qhi")  # producer_id, producer_epoch, base_sequence at byte 43
_CRC = struct.Struct(">I")  # at byte 17, over bytes 21..end


def restamp(batch: bytes, producer_id: int, epoch: int, base_sequence: int) -> bytes:
    """``batch`` (one RecordBatch v2) with a new producer id, epoch and base sequence, and its CRC-32C redone."""
    out = bytearray(batch)
    _PRODUCER_STATE.pack_into(out, 43, producer_id, epoch, base_sequence)
    _CRC.pack_into(out, 17, crc32c.crc32c(memoryview(out)[21:]))
    return bytes(out)


def increment_sequence(sequence: int, count: int) -> int:
    """``sequence + count``, wrapping past 2^31-1 to 0 (Kafka's DefaultRecordBatch.incrementSequence)."""
    return (sequence + count) % (MAX_SEQUENCE + 1)


class SequencedBatch(Protocol):
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def tp(self) -> Hashable: ...

    @property
    def record_count(self) -> int: ...


@dataclass
class _Partition:
    producer_id: int = NO_PRODUCER_ID
    epoch: int = NO_EPOCH
    next_sequence: int = 0
    in_flight: list[SequencedBatch] = field(default_factory=list)
    rewrite: bool = False  # restart the in-flight batches at 0 when the first is drained again
    confirmed_at: int | None = None  # when a batch of this producer id and epoch was last acknowledged here


class IdempotentProducerState:
    def __init__(self, max_in_flight: int = MAX_IN_FLIGHT, confirm_ttl_ms: int = CONFIRM_TTL_MS) -> None:
        if not 1 <= max_in_flight <= MAX_IN_FLIGHT:
            raise ValueError(f"max_in_flight must be 1..{MAX_IN_FLIGHT}, not {max_in_flight}")
        self.max_in_flight = max_in_flight
        self.confirm_ttl_ms = confirm_ttl_ms
        self.producer_id = NO_PRODUCER_ID
        self.epoch = NO_EPOCH
        self.epoch_bumps = 0
        self._partitions: dict[Hashable, _Partition] = {}

    # -- the producer id ------------------------------------------------------

    @property
    def needs_producer_id(self) -> bool:
        return self.producer_id < 0

    def set_producer(self, producer_id: int, epoch: int) -> None:
        """An id and epoch from InitProducerId; every partition restarts at 0 once quiet."""
        if producer_id < 0 or not 0 <= epoch <= MAX_EPOCH:
            raise ValueError(f"producer id {producer_id} epoch {epoch} is not a valid producer")
        self.producer_id, self.epoch = producer_id, epoch

    def _bump(self, p: _Partition) -> None:
        if (p.producer_id, p.epoch) != (self.producer_id, self.epoch):
            return  # this partition's bump already happened
        self.epoch_bumps += 1
        if self.epoch >= MAX_EPOCH:
            self.producer_id, self.epoch = NO_PRODUCER_ID, NO_EPOCH
        else:
            self.epoch += 1

    def _partition(self, tp: Hashable) -> _Partition:
        p = self._partitions.get(tp)
        if p is None:
            p = self._partitions[tp] = _Partition()
        return p

    # -- the accumulator --------------------------------------------------------

    def drain(self, batch: SequencedBatch, now_ms: int) -> bool:
        """May ``batch`` (the head of its partition) be sent now? If so it is stamped and in flight."""
        if self.producer_id < 0:
            return False
        p = self._partition(batch.tp)
        current = (self.producer_id, self.epoch)
        if batch.base_sequence == NO_SEQUENCE:
            if (p.producer_id, p.epoch) != current:
                if p.in_flight:
                    return False
                p.producer_id, p.epoch = current
                p.next_sequence, p.rewrite, p.confirmed_at = 0, False, None
            confirmed = p.confirmed_at is not None and now_ms - p.confirmed_at < self.confirm_ttl_ms
            if len(p.in_flight) >= (self.max_in_flight if confirmed else 1):
                return False
            self._stamp(batch, p.next_sequence)
            p.next_sequence = increment_sequence(p.next_sequence, batch.record_count)
            p.in_flight.append(batch)
            return True
        if not p.in_flight or p.in_flight[0] is not batch:
            return False
        if p.rewrite:
            sequence = 0
            for b in p.in_flight:
                self._stamp(b, sequence)
                sequence = increment_sequence(sequence, b.record_count)
            p.producer_id, p.epoch = current
            p.next_sequence, p.rewrite, p.confirmed_at = sequence, False, None
        return True

    def _stamp(self, batch: SequencedBatch, sequence: int) -> None:
        batch.producer_id, batch.producer_epoch, batch.base_sequence = self.producer_id, self.epoch, sequence

    # -- the sender's outcomes --------------------------------------------------

    def acked(self, batch: SequencedBatch, now_ms: int) -> None:
        """The broker stored the batch (or had stored it: a duplicate)."""
        p = self._partitions.get(batch.tp)
        if (
            self._remove(batch)
            and p is not None
            and (batch.producer_id, batch.producer_epoch) == (p.producer_id, p.epoch)
        ):
            p.confirmed_at = now_ms

    def failed(self, batch: SequencedBatch) -> None:
        """The batch completes with an error. If it was ever sent, its partition's sequences are unknown."""
        p = self._partitions.get(batch.tp)
        if p is not None and self._remove(batch):
            self._bump(p)

    def sequence_error(self, batch: SequencedBatch) -> None:
        """OUT_OF_ORDER_SEQUENCE_NUMBER / UNKNOWN_PRODUCER_ID for ``batch``'s current stamp; it will be retried."""
        p = self._partitions.get(batch.tp)
        if p is not None and p.in_flight and p.in_flight[0] is batch:
            self._bump(p)
            p.rewrite = True

    def _remove(self, batch: SequencedBatch) -> bool:
        p = self._partitions.get(batch.tp)
        if p is None:
            return False
        for i, b in enumerate(p.in_flight):
            if b is batch:
                del p.in_flight[i]
                return True
        return False

    # -- reading ------------------------------------------------------------------

    def in_flight(self, tp: Hashable) -> list[SequencedBatch]:
        p = self._partitions.get(tp)
        return list(p.in_flight) if p is not None else []


def idempotence_enabled(enable: bool | None, acks: int, retries: int, max_in_flight: int) -> bool:
    """Kafka's rule (KIP-679): on unless turned off, or left unset beside settings it cannot work with."""
    conflicts = []
    if acks != -1:
        conflicts.append(f"acks={acks} (it needs acks='all')")
    if retries <= 0:
        conflicts.append(f"retries={retries} (it needs retries > 0)")
    if max_in_flight > MAX_IN_FLIGHT:
        conflicts.append(f"max_in_flight_requests_per_connection={max_in_flight} (it needs at most {MAX_IN_FLIGHT})")
    if enable and conflicts:
        raise ValueError("enable_idempotence=True conflicts with " + ", ".join(conflicts))
    return not conflicts if enable is None else enable
