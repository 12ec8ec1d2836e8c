"""Client-side record types and the RecordBatch v2 codec.

Batches are built and read with aiokafka's compiled record module (Cython),
which builds ~2M and reads ~4.6M records/s; a pure-Python varint loop does a
tenth of that. This module only adds Ketch's types and the rules below.

Building (producer):
- One ``DefaultRecordBatchBuilder`` per open partition batch. ``append``
  returns ``None`` when the record does not fit in ``batch_size``; the first
  record always fits, so a record larger than ``batch_size`` travels alone.
- Offsets inside a batch are deltas 0..n-1; the broker assigns the base
  offset, so the offset of record ``i`` is the response's base offset + ``i``.
- Compression is chosen by name (``None``/"none", "gzip", "snappy", "lz4",
  "zstd" = codes 0-4); the builder compresses in ``build()``.

Reading (consumer):
- A fetch response's ``records`` holds whole batches back to back. Each batch
  is sliced exactly (``DefaultRecordBatch`` refuses trailing bytes) and its
  CRC-32C is checked *before* any record is decoded; a mismatch raises
  ``CorruptMessageError``. The check is the ``crc32c`` package's (SSE 4.2,
  ~28 GB/s on a 1 MiB batch here), as the broker's is, not aiokafka's
  ``validate_crc`` (~2 GB/s; 12% of the consumer's samples at 1 KiB records).
- The first batch may start before the offset asked for (the broker returns
  whole batches): records below ``min_offset`` are skipped.
- Control batches (transaction markers) carry no user records and are skipped.
- read_committed: records of aborted transactions are dropped (``decode_batches``'s ``aborted``).
- A trailing partial batch (never sent by Ketch, allowed by Kafka) is ignored.
- A compressed batch is decompressed under a cap (``max_decompressed_batch_bytes`` of the
  consumer, 64 MiB by default) without holding more: ``CorruptMessageError`` beyond it.
- Bytes from the network are untrusted: a batch whose length is shorter than its own header, or
  whose records do not decode after a matching CRC (bad varints, a codec that refuses the
  compressed bytes, invalid UTF-8 in a header key), raises ``CorruptMessageError`` naming the
  offset, never the codec's own error. The length check comes first because aiokafka's compiled
  ``DefaultRecordBatch`` reads its 61-byte header without a bounds check (a shorter buffer
  crashed the process with a segmentation fault).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from crc32c import crc32c

from ketch import decompression
from ketch.decompression import MAX_DECOMPRESSED_BATCH_BYTES
from ketch.errors import CorruptMessageError
from ketch.recordbatch import uncompressed_copy
from ketch.topic_partition import TopicPartition

__all__ = [
    "COMPRESSION_CODES",
    "AbortedTransaction",
    "ConsumerRecord",
    "DecodedBatches",
    "OffsetAndTimestamp",
    "RecordMetadata",
    "TopicPartition",
    "batch_base_offset",
    "batch_record_count",
    "build_batch",
    "compression_code",
    "decode_batch",
    "decode_batches",
    "estimate_record_size",
    "fetched_batches",
    "new_builder",
    "new_tuple",
]

Headers = list[tuple[str, bytes | None]]

COMPRESSION_CODES: dict[str | None, int] = {
    None: 0,
    "none": 0,
    "gzip": 1,
    "snappy": 2,
    "lz4": 3,
    "zstd": 4,
}

_LENGTH_PREFIX = 12  # base_offset (8) + batch_length (4)
_HEADER_SIZE = 61
_BATCH_LENGTH = struct.Struct(">i")
_LAST_OFFSET_DELTA = struct.Struct(">i")
_BASE_OFFSET = struct.Struct(">q")
_ATTRIBUTES = struct.Struct(">h")  # at byte 21
_PRODUCER_ID = struct.Struct(">q")  # at byte 43
_CRC = struct.Struct(">I")  # at byte 17, over the bytes from _CRC_FROM (the attributes) to the end
_CRC_FROM = 21
_TRANSACTIONAL, _CONTROL = 0x10, 0x20


class OffsetAndTimestamp(NamedTuple):
    offset: int
    timestamp: int


class ConsumerRecord(NamedTuple):
    """One record handed out by ``poll()``. A named tuple, as in kafka-python: the consumer builds
    one per record, and ``tuple.__new__`` makes it in ~150 ns where a frozen dataclass's
    ``__init__`` took ~770 ns (its fields go through ``object.__setattr__``); ``_replace`` gives a
    changed copy."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


class RecordMetadata(NamedTuple):
    """Where an acknowledged record landed; ``offset`` is -1 with acks=0. A named tuple, as in
    kafka-python (built per record at completion: see ``ConsumerRecord``)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


# The per-record hot paths (decode_batch, ProducerBatch.complete) build these with
# ``tuple.__new__(cls, fields)``, skipping the named tuple's Python-level ``__new__`` (~250 ns);
# tests/test_client_records.py checks the fields land in their places.
new_tuple = tuple.__new__


def compression_code(name: str | None) -> int:
    try:
        return COMPRESSION_CODES[name.lower() if isinstance(name, str) else name]
    except KeyError:
        raise ValueError(
            f"unknown compression_type {name!r}; use one of None, 'gzip', 'snappy', 'lz4', 'zstd'"
        ) from None


DEFAULT_BATCH_SIZE = 256 * 1024
"""The producer's ``batch_size``: bytes per partition batch. Kafka's 16 KiB suits its sub-ms
round trips; an acks=all round trip here takes ~20 ms, and an idempotent producer sends one
batch per partition per request with at most 5 in flight, so a partition's throughput is about
5 batches per round trip. Measured in one run (3 nodes, RF 3, one partition, 100 B records,
``ketch perf produce``): 16 KiB gave 60k rec/s plain and 38k idempotent; 256 KiB 96k and 91k."""


def new_builder(compression: int, batch_size: int, transactional: bool = False) -> DefaultRecordBatchBuilder:
    """An empty batch builder: magic 2, no producer id yet; ``transactional`` sets attribute bit 4 (0x10)."""
    return DefaultRecordBatchBuilder(2, compression, int(transactional), -1, -1, -1, batch_size)


def estimate_record_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """Upper bound of the bytes a batch holding only this record takes."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def build_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    compression: str | None = None,
    timestamp: int | None = None,
    headers: Headers | None = None,
) -> bytes:
    """One batch holding ``(key, value)`` pairs; for tests and tools."""
    builder = new_builder(compression_code(compression), 1 << 30)
    for i, (key, value) in enumerate(records):
        builder.append(i, timestamp=timestamp, key=key, value=value, headers=headers or [])
    return bytes(builder.build())


class DecodedBatches(NamedTuple):
    records: list[ConsumerRecord]
    next_offset: int  # the offset after the last whole batch read (or ``min_offset``)


class AbortedTransaction(NamedTuple):
    producer_id: int
    first_offset: int


ABORT_MARKER, COMMIT_MARKER = 0, 1  # EndTransactionMarker key: int16 version, int16 type
_MARKER_KEY = struct.Struct(">hh")


def control_type(batch: DefaultRecordBatch) -> int | None:
    """The marker type (ABORT_MARKER / COMMIT_MARKER) of a control batch, None if unreadable."""
    try:
        for r in batch:
            key = r.key
            if key is not None and len(key) >= _MARKER_KEY.size:
                return int(_MARKER_KEY.unpack_from(key)[1])
            return None
    except Exception:  # the codec's own errors (aiokafka, struct): an unreadable marker
        return None
    return None


def _corrupt(topic: str, partition: int, base_offset: int, why: str) -> CorruptMessageError:
    return CorruptMessageError(
        f"record batch at offset {base_offset} of {topic}-{partition} {why}; "
        "the bytes were damaged in flight or at rest"
    )


def _decompressed(topic: str, partition: int, whole: memoryview, limit: int) -> DefaultRecordBatch:
    (base_offset,) = _BASE_OFFSET.unpack_from(whole, 0)
    (attributes,) = _ATTRIBUTES.unpack_from(whole, 21)
    try:
        body = decompression.decompress(attributes & 0x07, whole[_HEADER_SIZE:], limit)
    except decompression.DecompressedTooLarge as exc:
        raise CorruptMessageError(
            f"record batch at offset {base_offset} of {topic}-{partition}: {exc}, the consumer's cap "
            "(max_decompressed_batch_bytes)"
        ) from None
    except decompression.CorruptBody as exc:
        raise _corrupt(topic, partition, base_offset, f"has records that do not decode ({exc})") from None
    return DefaultRecordBatch(uncompressed_copy(whole, body))


def decode_batches(
    topic: str,
    partition: int,
    data: bytes | memoryview,
    min_offset: int = 0,
    aborted: Sequence[tuple[int, int]] | None = None,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BATCH_BYTES,
) -> DecodedBatches:
    """Records at or above ``min_offset`` from back-to-back batches (``fetched_batches``, then
    ``decode_batch`` of each)."""
    batches, next_offset = fetched_batches(topic, partition, data, min_offset, aborted)
    out: list[ConsumerRecord] = []
    for batch in batches:
        out.extend(decode_batch(topic, partition, batch, min_offset, max_decompressed_bytes))
    return DecodedBatches(out, next_offset)


def fetched_batches(
    topic: str,
    partition: int,
    data: bytes | memoryview,
    min_offset: int = 0,
    aborted: Sequence[tuple[int, int]] | None = None,
) -> tuple[list[memoryview], int]:
    """The whole batches of ``data`` that may hold records to hand out (CRC checked), and the
    offset the next fetch starts at; no record is decoded yet (``decode_batch`` does that).

    ``next_offset`` is where the next fetch should start: past the last
    complete batch, even when every record in it was skipped (control
    batches, records below ``min_offset``, aborted transactions), so a fetch
    loop always advances.

    ``aborted`` (read_committed: the fetch response's aborted transactions,
    ``(producer id, first offset)``) drops aborted records by Kafka's rule
    (``CompletedFetch``): walking the batches in offset order, a transaction
    becomes *current* for its producer once a batch reaches its first offset
    (the batch's last offset >= first offset); while it is current, that
    producer's transactional batches are dropped; the producer's abort
    marker (a control batch) ends it. ``None``: read_uncommitted, nothing dropped.
    """
    view = memoryview(data)
    out: list[memoryview] = []
    next_offset = min_offset
    at = 0
    end = len(view)
    upcoming = sorted(aborted or (), key=lambda t: t[1], reverse=True)  # pop() gives the lowest first offset
    aborting: set[int] = set()
    while end - at >= _HEADER_SIZE:
        (length,) = _BATCH_LENGTH.unpack_from(view, at + 8)
        size = length + _LENGTH_PREFIX
        (base_offset,) = _BASE_OFFSET.unpack_from(view, at)
        if size < _HEADER_SIZE:
            raise _corrupt(topic, partition, base_offset, f"claims length {length}, shorter than its own header")
        if at + size > end:
            break  # partial trailing batch
        (last_delta,) = _LAST_OFFSET_DELTA.unpack_from(view, at + 23)
        batch_end_offset = base_offset + last_delta + 1
        skip = False
        (attributes,) = _ATTRIBUTES.unpack_from(view, at + 21)
        if upcoming or aborting:
            while upcoming and upcoming[-1][1] < batch_end_offset:
                aborting.add(upcoming.pop()[0])
            (producer_id,) = _PRODUCER_ID.unpack_from(view, at + 43)
            if producer_id in aborting:
                if attributes & _CONTROL:
                    if control_type(DefaultRecordBatch(view[at : at + size])) == ABORT_MARKER:
                        aborting.discard(producer_id)  # its marker: later batches are a new transaction
                else:
                    skip = bool(attributes & _TRANSACTIONAL)
        if batch_end_offset > min_offset:
            if not skip:
                whole = view[at : at + size]
                if crc32c(whole[_CRC_FROM:]) != _CRC.unpack_from(whole, 17)[0]:
                    raise _corrupt(topic, partition, base_offset, "failed its CRC-32C check")
                if not attributes & _CONTROL:
                    out.append(whole)
            next_offset = max(next_offset, batch_end_offset)
        at += size
    return out, next_offset


def batch_base_offset(whole: memoryview) -> int:
    """The base offset in a whole batch's header."""
    return int(_BASE_OFFSET.unpack_from(whole, 0)[0])


def batch_record_count(whole: memoryview) -> int:
    """How many offsets a whole batch spans, by its header (its last offset delta + 1)."""
    return int(_LAST_OFFSET_DELTA.unpack_from(whole, 23)[0]) + 1


def decode_batch(
    topic: str,
    partition: int,
    whole: memoryview,
    min_offset: int = 0,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BATCH_BYTES,
) -> list[ConsumerRecord]:
    """The records at or above ``min_offset`` of one batch that ``fetched_batches`` returned."""
    batch = DefaultRecordBatch(whole)
    if batch.compression_type:
        batch = _decompressed(topic, partition, whole, max_decompressed_bytes)
    out: list[ConsumerRecord] = []
    append = out.append
    try:
        for r in batch:
            offset = r.offset
            if offset >= min_offset:
                append(new_tuple(ConsumerRecord, (topic, partition, offset, r.timestamp, r.key, r.value, r.headers)))
    except Exception as exc:  # the codecs raise their own types (aiokafka, cramjam, zlib, struct)
        why = f"has records that do not decode ({type(exc).__name__}: {exc})"
        raise _corrupt(topic, partition, batch_base_offset(whole), why) from None
    return out
