"""Test helpers: build and decode RecordBatch v2 bytes with aiokafka's codec.

``make_batch(base, count)`` gives a valid batch (CRC included) holding
``count`` records whose values are ``b"<tag>:<i>"``; every record carries
``timestamp_ms``, so the batch's max timestamp is exactly that value. With
``producer_id`` >= 0 the batch is idempotent: it carries that id,
``producer_epoch`` and ``base_sequence`` in its header (inside the CRC).
``values(data)`` decodes back-to-back batches into (offset, value) pairs.
"""

from __future__ import annotations

from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from ketch.recordbatch import assign


def make_batch(
    base_offset: int,
    count: int = 1,
    *,
    timestamp_ms: int = 0,
    leader_epoch: int = 0,
    tag: str = "v",
    pad: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
    keyed: bool = False,
) -> bytes:
    """A batch of ``count`` records at ``base_offset`` (values padded by ``pad`` bytes); with
    ``keyed`` every record's key is ``b"<tag>:<i>"``, else records have no key."""
    builder = DefaultRecordBatchBuilder(2, 0, int(transactional), producer_id, producer_epoch, base_sequence, 1 << 20)
    for i in range(count):
        value = f"{tag}:{i}".encode() + b"." * pad
        key = f"{tag}:{i}".encode() if keyed else None
        builder.append(i, timestamp=timestamp_ms, key=key, value=value, headers=[])
    return assign(bytes(builder.build()), base_offset, leader_epoch)


def values(data: bytes) -> list[tuple[int, bytes | None]]:
    """(offset, value) of every record in back-to-back batches."""
    out: list[tuple[int, bytes | None]] = []
    records = MemoryRecords(data)
    while (batch := records.next_batch()) is not None:
        out.extend((record.offset, record.value) for record in batch)
    return out


def keyed_batch(
    base_offset: int,
    records: list[tuple[bytes, bytes | None]],
    *,
    timestamp_ms: int = 0,
    compression: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    transactional: bool = False,
) -> bytes:
    """A batch of ``(key, value)`` records (value None: a tombstone) at ``base_offset``."""
    builder = DefaultRecordBatchBuilder(
        2, compression, int(transactional), producer_id, producer_epoch, base_sequence, 1 << 20
    )
    for i, (key, value) in enumerate(records):
        builder.append(i, timestamp=timestamp_ms + i, key=key, value=value, headers=[])
    return assign(bytes(builder.build()), base_offset, 0)


def keyed_records(data: bytes) -> dict[int, tuple[bytes | None, bytes | None]]:
    """offset -> (key, value) of every data record in back-to-back batches (markers skipped)."""
    out: dict[int, tuple[bytes | None, bytes | None]] = {}
    records = MemoryRecords(data)
    while (batch := records.next_batch()) is not None:
        if batch.is_control_batch:
            continue
        for record in batch:
            out[record.offset] = (record.key, record.value)
    return out
