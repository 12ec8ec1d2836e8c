"""Keys in a compacted topic: every produced record must have one.

The rule (Kafka's ``LogValidator``, "Compacted topic cannot accept message
without key"): the cleaner of a topic whose ``cleanup.policy`` has
``compact`` keeps the latest record of each key, so a record without a key
(a null key; an empty key is a key) has no place in it. A produce request to
such a topic with one keyless record is refused whole with INVALID_RECORD,
naming the topic-partition, the batch (when the request has several) and the
offset delta of the first keyless record; nothing of it is stored. Records
whose batch cannot be decoded (a CRC that matches over bytes that do not
decompress or parse) are CORRUPT_MESSAGE.

This is the only place the broker decodes the records of a produce request,
and only for a compacted topic: the header checks (ketch/recordbatch.py) and
the CRC come first, in ``Partition.append``, which calls ``check_keys`` with
the batches it split. Control batches never get here from a client (they
are refused first); the markers the leader writes carry a key anyway.
Decoding and decompressing use aiokafka's compiled record module, as the
client does (ketch/records.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.record.default_records import DefaultRecordBatch

from ketch.errors import ErrorCode, KetchError


def first_keyless(batch: bytes | memoryview) -> int | None:
    """The offset delta of the first record without a key in one whole batch, or None.

    Raises whatever the codec raises on records it cannot decode."""
    decoded = DefaultRecordBatch(batch)
    base = decoded.base_offset
    for record in decoded:
        if record.key is None:
            return int(record.offset - base)
    return None


def check_keys(where: str, batches: Sequence[bytes | memoryview]) -> None:
    """INVALID_RECORD unless every record of every batch has a key (``where``: "topic-partition")."""
    for i, batch in enumerate(batches):
        try:
            delta = first_keyless(batch)
        except Exception as exc:  # the codecs raise their own types (cramjam, zlib, aiokafka)
            raise KetchError(
                f"{where}: the records of batch {i} cannot be decoded ({exc})", code=ErrorCode.CORRUPT_MESSAGE
            ) from None
        if delta is not None:
            in_batch = f" of batch {i}" if len(batches) > 1 else ""
            raise KetchError(
                f"{where} is compacted (cleanup.policy has compact): every record needs a key, and the "
                f"record at offset delta {delta}{in_batch} has none; nothing of this request was stored",
                code=ErrorCode.INVALID_RECORD,
            )
