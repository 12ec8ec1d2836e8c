"""What the leader checks in a produce request before anything else (Kafka's ``LogValidator``).

``validate_batches`` runs these rules in this order on one partition's request bytes; the first
that fails refuses the whole request with a ``KetchError`` carrying its code, and nothing of it
is stored:
1. the bytes split into whole, valid RecordBatch v2 batches (``ketch.recordbatch.split_batches``:
   header, CRC, count against last offset delta, codec);
2. no batch is larger than the topic's ``max.message.bytes`` (MESSAGE_TOO_LARGE, both sizes named),
   checked before any decompression;
3. each batch's records match its header (``ketch.recordbatch.check_records``): exactly
   ``records_count`` records with offset deltas 0..n-1, decompressing to at most
   ``max_decompressed_bytes`` (CORRUPT_MESSAGE / INVALID_RECORD naming the partition and batch);
4. no control batch (INVALID_RECORD: only the leader writes transaction markers);
5. ``require_keys`` (a compacted topic): every record has a key (replication/record_keys.py).
Producer-state rules (idempotence, transactions) come after, in ``Partition.append``.
"""

from __future__ import annotations

from ketch import recordbatch
from ketch.errors import ErrorCode, KetchError
from replication.record_keys import check_keys


def validate_batches(
    where: str,
    records: bytes,
    *,
    max_message_bytes: int,
    max_decompressed_bytes: int,
    require_keys: bool,
) -> list[tuple[recordbatch.BatchHeader, memoryview]]:
    """The request's batches, each checked by the rules above (``where``: "topic-partition")."""
    try:
        batches = recordbatch.split_batches(records)
    except recordbatch.BatchError as exc:
        raise KetchError(str(exc), code=exc.code) from None
    for header, _ in batches:
        if header.size > max_message_bytes:
            topic = where.rpartition("-")[0]
            raise KetchError(
                f"record batch of {header.size} bytes exceeds max.message.bytes={max_message_bytes} of topic {topic!r}",
                code=ErrorCode.MESSAGE_TOO_LARGE,
            )
    for i, (header, view) in enumerate(batches):
        try:
            recordbatch.check_records(header, view, max_decompressed_bytes)
        except recordbatch.BatchError as exc:
            in_batch = f" (batch {i})" if len(batches) > 1 else ""
            raise KetchError(f"{where}{in_batch}: {exc}; nothing was stored", code=exc.code) from None
    if any(header.is_control for header, _ in batches):
        raise KetchError(
            f"{where}: a produce request may not carry control batches (transaction markers)",
            code=ErrorCode.INVALID_RECORD,
        )
    if require_keys:
        check_keys(where, [view for _, view in batches])
    return batches
