"""The consumer's questions about offsets and topics (no state of its own): ListOffsets and Metadata.

A mixin of ``Consumer``: it uses the consumer's connection, its fetcher's
backoff and isolation level, and ``request_timeout``. Under read_committed
ListOffsets LATEST answers the last stable offset (every transaction below
it is decided), so ``end_offsets`` and lag are measured against it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from ketch.aio.connection import Connection
from ketch.aio.fetcher import Fetcher
from ketch.aio.offsets import EARLIEST, LATEST, list_offsets
from ketch.api.v1 import ketch_pb2
from ketch.records import OffsetAndTimestamp, TopicPartition

__all__ = ["OffsetQueries"]


class OffsetQueries:
    _conn: Connection
    _fetcher: Fetcher
    request_timeout: float

    async def offsets_for_times(
        self, timestamps: dict[TopicPartition, int]
    ) -> dict[TopicPartition, OffsetAndTimestamp | None]:
        """First offset with a timestamp >= each given one; None when there is none."""
        for ts in timestamps.values():
            if ts < 0:
                raise ValueError(f"timestamps must be >= 0 ms since the epoch, got {ts}")
        found = await self._list(timestamps)
        return {tp: None if listed.offset < 0 else listed for tp, listed in found.items()}

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        found = await self._list(dict.fromkeys(partitions, EARLIEST))
        return {tp: listed.offset for tp, listed in found.items()}

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The high watermark of each partition: the offset the next record gets
        (read_committed: the last stable offset, below which every transaction is decided)."""
        found = await self._list(dict.fromkeys(partitions, LATEST))
        return {tp: listed.offset for tp, listed in found.items()}

    async def _list(self, specs: Mapping[TopicPartition, int]) -> dict[TopicPartition, OffsetAndTimestamp]:
        """ListOffsets (offsets.py), retried every ``retry_backoff_ms`` until ``request_timeout_ms``."""
        deadline = time.monotonic() + self.request_timeout
        return await list_offsets(
            self._conn,
            specs,
            deadline=deadline,
            backoff=self._fetcher.backoff,
            isolation_level=self._fetcher.isolation_level,
        )

    async def partitions_for_topic(self, topic: str) -> set[int] | None:
        self._conn.track([topic])
        info = (await self._conn.refresh()).topics.get(topic)
        return set(info.partitions) if info is not None and info.error_code == 0 else None

    async def topics(self) -> set[str]:
        """Every topic in the cluster."""
        response = await self._conn.call_any("Metadata", ketch_pb2.MetadataRequest())
        assert isinstance(response, ketch_pb2.MetadataResponse)
        return {t.name for t in response.topics if t.error_code == 0}
