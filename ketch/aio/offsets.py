"""ListOffsets: the client's one request loop for offsets at partition leaders.

Used by the Admin (``list_offsets``, the log end offsets of
``describe_consumer_groups``) and by the consumer's fetcher (position
resets, ``beginning_offsets``, ``end_offsets``, ``offsets_for_times``).

Rules:
- A spec is ``EARLIEST`` (-2: the log start offset), ``LATEST`` (-1: the
  high watermark, the log end offset a consumer can reach) or a timestamp in
  ms (the first offset whose record is at or after it; offset -1 when none
  is). The answer per partition is an ``OffsetAndTimestamp``.
- Partitions are grouped by leader, one ListOffsets per leader, from the
  cached metadata; the cache is refreshed first when it does not know a
  topic or a partition asked for.
- A topic the metadata says does not exist, or a partition number beyond the
  topic's partitions, is missing: ``UnknownTopicOrPartitionError`` with
  ``strict``, else the partition is left out of the answer.
- Retriable errors (no leader, a topic error in the metadata, a retriable
  answer code, a transport failure) refresh the metadata and retry after a
  backoff (``backoff`` doubling up to ``max_backoff``) until ``deadline``;
  then the last of them is raised. Any other answer code is raised
  (``strict``) or leaves the partition out.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from ketch.aio.connection import Cluster, Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import (
    ErrorCode,
    KetchConnectionError,
    KetchError,
    UnknownTopicOrPartitionError,
    error_for,
)
from ketch.records import OffsetAndTimestamp, TopicPartition

__all__ = [
    "EARLIEST",
    "ISOLATION_LEVELS",
    "LATEST",
    "OFFSET_SPECS",
    "READ_COMMITTED",
    "READ_UNCOMMITTED",
    "list_offsets",
]

LATEST, EARLIEST = -1, -2
READ_UNCOMMITTED, READ_COMMITTED = 0, 1  # isolation_level of Fetch and ListOffsets
ISOLATION_LEVELS = {"read_uncommitted": READ_UNCOMMITTED, "read_committed": READ_COMMITTED}
OFFSET_SPECS = {"earliest": EARLIEST, "latest": LATEST}


async def list_offsets(
    conn: Connection,
    specs: Mapping[TopicPartition, int],
    *,
    deadline: float,
    backoff: float,
    max_backoff: float | None = None,
    strict: bool = True,
    isolation_level: int = READ_UNCOMMITTED,
) -> dict[TopicPartition, OffsetAndTimestamp]:
    """ListOffsets of each partition at its leader, as the module docstring says."""
    out: dict[TopicPartition, OffsetAndTimestamp] = {}
    todo = {TopicPartition(*tp): spec for tp, spec in specs.items()}
    if not todo:
        return out
    max_backoff = backoff if max_backoff is None else max_backoff
    conn.track({tp.topic for tp in todo})
    cluster = conn.cluster
    if any(_unknown(cluster, tp) for tp in todo):
        cluster = await conn.refresh()
    while True:
        retry: KetchError | None = None
        by_node: dict[int, list[TopicPartition]] = {}
        for tp in list(todo):
            topic = cluster.topics.get(tp.topic)
            missing = ""
            if topic is None or topic.error_code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION:
                missing = f"topic {tp.topic!r} does not exist"
            elif topic.error_code != ErrorCode.NONE:
                retry = error_for(topic.error_code, topic.error_message or f"topic {tp.topic!r}")
                continue
            elif tp.partition not in topic.partitions:
                missing = f"topic {tp.topic!r} has {topic.num_partitions} partitions; there is no {tp.partition}"
            if missing:
                if strict:
                    raise UnknownTopicOrPartitionError(missing)
                del todo[tp]
                continue
            leader = cluster.leader(tp.topic, tp.partition)
            if leader < 0:
                retry = KetchError(
                    f"{tp.topic}-{tp.partition} has no leader right now", code=ErrorCode.LEADER_NOT_AVAILABLE
                )
                continue
            by_node.setdefault(leader, []).append(tp)
        for node, tps in by_node.items():
            request = ketch_pb2.ListOffsetsRequest(
                isolation_level=isolation_level,
                partitions=[
                    ketch_pb2.ListOffsetsPartition(topic=tp.topic, partition=tp.partition, timestamp=todo[tp])
                    for tp in tps
                ],
            )
            try:
                response = await conn.call_node(node, "ListOffsets", request)
            except KetchError as e:
                retry = e
                continue
            for r in response.partitions:
                tp = TopicPartition(r.topic, r.partition)
                if tp not in todo:
                    continue
                if r.error_code == ErrorCode.NONE:
                    out[tp] = OffsetAndTimestamp(r.offset, r.timestamp)
                    del todo[tp]
                    continue
                err = error_for(r.error_code, r.error_message or f"{tp.topic}-{tp.partition}")
                if err.retriable:
                    retry = err
                elif strict:
                    raise err
                else:
                    del todo[tp]
        if not todo:
            return out
        if time.monotonic() + backoff > deadline:
            raise retry or KetchConnectionError("ListOffsets got no answer")
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, max_backoff)
        try:
            cluster = await conn.refresh()
        except KetchConnectionError as e:
            retry = e


def _unknown(cluster: Cluster, tp: TopicPartition) -> bool:
    topic = cluster.topics.get(tp.topic)
    return topic is None or topic.error_code != ErrorCode.NONE or tp.partition not in topic.partitions
