"""ListOffsets (v1-7) and OffsetForLeaderEpoch (v2-4) on the Kafka listener.

Rules:
- Timestamps -1 (latest: the high watermark, or the last stable offset under read_committed,
  v2+), -2 (earliest: the log start offset) and a time in ms (the first offset whose batch
  timestamp is at or after it, with that timestamp; -1/-1 when none), answered per partition by
  the broker's ``ListOffsets`` with the partition's leader epoch (v4+). -3 (the largest
  timestamp, v7) is UNSUPPORTED_VERSION for that partition: Ketch does not index it.
- ``replica_id`` and ``current_leader_epoch`` are not passed on (Ketch's ``ListOffsets`` has no
  such fields; a consumer sends -1).
- An authorization refusal is the rule's code on every partition.
- OffsetForLeaderEpoch (KIP-320, a consumer checking its position after a leader change): each
  partition's (leader_epoch, current_leader_epoch) goes to the broker's ``OffsetForLeaderEpoch``
  (the leader's epoch cache: the largest epoch <= the one asked for and where it ends; a stale or
  unknown current epoch is FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH). Only the consumer form is
  served: a follower's request (``replica_id`` >= 0, v3+) is refused CLUSTER_AUTHORIZATION_FAILED
  on every partition (Ketch's followers learn a diverging epoch inside their fetch).
"""

from __future__ import annotations

from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, by_topic, kafka_error, nested
from node.topic_admin import error_fields

MAX_TIMESTAMP = -3


async def handle_list_offsets(request: Any, ctx: KafkaContext) -> Any:
    asked = [(t.name, p.partition_index, p.timestamp) for t in request.topics for p in t.partitions]
    results: dict[tuple[str, int], pb.ListOffsetsResult] = {}
    for topic, partition, timestamp in asked:
        if timestamp == MAX_TIMESTAMP:
            results[(topic, partition)] = pb.ListOffsetsResult(
                topic=topic,
                partition=partition,
                error_code=error_fields(KetchError(code=ErrorCode.UNSUPPORTED_VERSION))[0],
                offset=-1,
                timestamp=-1,
            )
    call = pb.ListOffsetsRequest(
        partitions=[
            pb.ListOffsetsPartition(topic=t, partition=p, timestamp=ts) for t, p, ts in asked if (t, p) not in results
        ],
        isolation_level=getattr(request, "isolation_level", 0),
    )
    try:
        if call.partitions:
            for r in (await ctx.call("ListOffsets", call)).partitions:
                results[(r.topic, r.partition)] = r
    except KetchError as exc:
        code, message = error_fields(exc)
        for p in call.partitions:
            results[(p.topic, p.partition)] = pb.ListOffsetsResult(
                topic=p.topic, partition=p.partition, error_code=code, error_message=message, offset=-1, timestamp=-1
            )
    ordered = [results[(t, p)] for t, p, _ in asked if (t, p) in results]
    partition_type = nested(ctx.response_type, "ListOffsetsPartitionResponse")
    return build(
        ctx.response_type,
        topics=tuple(
            build(
                nested(ctx.response_type, "ListOffsetsTopicResponse"),
                name=topic,
                partitions=tuple(
                    build(
                        partition_type,
                        partition_index=r.partition,
                        error_code=kafka_error(r.error_code),
                        timestamp=r.timestamp if r.error_code == 0 else -1,
                        offset=r.offset if r.error_code == 0 else -1,
                        leader_epoch=r.leader_epoch if r.error_code == 0 else -1,
                    )
                    for r in items
                ),
            )
            for topic, items in by_topic(ordered, lambda r: r.topic)
        ),
    )


async def handle_offset_for_leader_epoch(request: Any, ctx: KafkaContext) -> Any:
    asked = [
        pb.OffsetForLeaderEpochPartition(
            topic=t.topic,
            partition=p.partition,
            leader_epoch=p.leader_epoch,
            current_leader_epoch=getattr(p, "current_leader_epoch", -1),
        )
        for t in request.topics
        for p in t.partitions
    ]
    try:
        if getattr(request, "replica_id", -1) >= 0:
            raise KetchError(
                "OffsetForLeaderEpoch from a follower is not served on the Kafka listener (Ketch's followers"
                " learn a diverging epoch inside their fetch)",
                code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
            )
        results = list(
            (await ctx.call("OffsetForLeaderEpoch", pb.OffsetForLeaderEpochRequest(partitions=asked))).partitions
        )
    except KetchError as exc:
        code, message = error_fields(exc)
        results = [
            pb.LeaderEpochEndOffset(
                topic=p.topic,
                partition=p.partition,
                error_code=code,
                error_message=message,
                leader_epoch=-1,
                end_offset=-1,
            )
            for p in asked
        ]
    partition_type = nested(ctx.response_type, "EpochEndOffset")
    return build(
        ctx.response_type,
        topics=tuple(
            build(
                nested(ctx.response_type, "OffsetForLeaderTopicResult"),
                topic=topic,
                partitions=tuple(
                    build(
                        partition_type,
                        partition=r.partition,
                        error_code=kafka_error(r.error_code),
                        leader_epoch=r.leader_epoch if r.error_code == 0 else -1,
                        end_offset=r.end_offset if r.error_code == 0 else -1,
                    )
                    for r in items
                ),
            )
            for topic, items in by_topic(results, lambda r: r.topic)
        ),
    )


APIS = [
    Api(2, "ListOffsets", 1, 7, handle_list_offsets),
    Api(23, "OffsetForLeaderEpoch", 2, 4, handle_offset_for_leader_epoch),
]
