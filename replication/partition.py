"""One partition replica: the leader's produce and fetch rules over a PartitionLog.

Until follower replication lands (issue "Replication"), every partition has a
single replica, this node, which is its leader with leader epoch 0 and an ISR
of itself; the high watermark therefore equals the log end offset. The rules
below already hold for a replicated leader:

Produce (``append``):
- The request's bytes must split into whole, valid RecordBatch v2 batches
  (ketch.recordbatch.split_batches): otherwise CORRUPT_MESSAGE /
  INVALID_RECORD / UNSUPPORTED_VERSION and nothing is stored.
- Any batch larger than the topic's ``max.message.bytes`` refuses the whole
  request with MESSAGE_TOO_LARGE, naming both sizes; nothing is stored.
- acks=all needs at least ``min.insync.replicas`` replicas in the ISR, else
  NOT_ENOUGH_REPLICAS before anything is appended.
- The leader assigns base offsets (continuing the log end offset) and its
  leader epoch in each header, in place, and appends all batches in one
  atomic log write. Records are never decoded.

Fetch (``read``):
- A fetch offset outside ``[log_start_offset, log_end_offset]`` is
  OFFSET_OUT_OF_RANGE, naming the valid range.
- Only batches that lie wholly below the high watermark are returned; the
  first batch may start before the fetch offset (the client skips records).

Everything here is synchronous and free of I/O other than the injected log,
so the node driver decides where (event loop or thread) each call runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka.record.default_records import DefaultRecordBatch

from ketch import recordbatch
from ketch.errors import ErrorCode, KetchError, OffsetOutOfRangeError
from replication.log import PartitionLog


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    batches: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    records: bytes
    high_watermark: int
    log_start_offset: int


class Partition:
    def __init__(self, topic: str, index: int, log: PartitionLog, leader_epoch: int = 0) -> None:
        self.topic = topic
        self.index = index
        self.log = log
        self.leader_epoch = leader_epoch
        self.isr_size = 1
        self.is_leader = True  # set from the metadata image by the replica manager (node/broker.py)

    @property
    def high_watermark(self) -> int:
        return self.log.log_end_offset

    def append(
        self, records: bytes, *, max_message_bytes: int, acks: int, min_insync_replicas: int, sync: bool
    ) -> AppendResult:
        if acks == -1 and self.isr_size < min_insync_replicas:
            raise KetchError(
                f"{self.topic}-{self.index} has {self.isr_size} in-sync replica(s); "
                f"min.insync.replicas is {min_insync_replicas}",
                code=ErrorCode.NOT_ENOUGH_REPLICAS,
            )
        try:
            batches = recordbatch.split_batches(records)
        except recordbatch.BatchError as exc:
            raise KetchError(str(exc), code=exc.code) from None
        for header, _ in batches:
            if header.size > max_message_bytes:
                raise KetchError(
                    f"record batch of {header.size} bytes exceeds max.message.bytes={max_message_bytes} "
                    f"of topic {self.topic!r}",
                    code=ErrorCode.MESSAGE_TOO_LARGE,
                )
        base = next_offset = self.log.log_end_offset
        stored = []
        for header, view in batches:
            stored.append(recordbatch.assign(view, next_offset, self.leader_epoch))
            next_offset += header.records_count
        self.log.append(stored, sync=sync)
        return AppendResult(base, next_offset - 1, len(stored), len(records))

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        log = self.log
        start, end = log.log_start_offset, log.log_end_offset
        if not start <= offset <= end:
            raise OffsetOutOfRangeError(
                f"fetch offset {offset} is outside {self.topic}-{self.index}'s log [{start}, {end}]"
            )
        hw = self.high_watermark
        data = log.read(offset, max_bytes) if offset < hw else b""
        if data and hw < end:
            data = _below(data, hw)
        return ReadResult(data, hw, start)

    def offset_for_timestamp(self, timestamp_ms: int) -> tuple[int, int] | None:
        """(offset, timestamp) of the first record with timestamp >= ``timestamp_ms``.

        Not the hot path: the one batch the log's time index points at is
        decoded to find the exact record.
        """
        batch = self.log.batch_for_timestamp(timestamp_ms)
        if batch is None:
            return None
        decoded = DefaultRecordBatch(batch)
        for record in decoded:
            if record.offset >= self.high_watermark:
                return None
            if record.timestamp >= timestamp_ms:
                return record.offset, record.timestamp
        return None


def _below(data: bytes, limit: int) -> bytes:
    """The prefix of whole batches whose last offset is below ``limit``."""
    keep = 0
    for header in recordbatch.iter_headers(data):
        if header.last_offset >= limit:
            break
        keep += header.size
    return data[:keep]
