"""Fetch (v4-12) on the Kafka listener: the broker's consumer ``Fetch``, long poll included.

Rules:
- One ``Fetch`` call for every partition of the request, with its max_wait / min_bytes (the
  servicer's long poll, woken by appends, markers and high-watermark moves), max_bytes,
  partition_max_bytes, isolation level (read_committed reads below the last stable offset and
  carries the aborted transactions) and, from v9, the partition's current leader epoch
  (FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH per partition).
- Consumers only: ``replica_id`` is ignored (Ketch's followers fetch over gRPC), so a Kafka
  request can never be a follower fetch.
- Fetch sessions (KIP-227): every answer has ``session_id`` 0, which KIP-227 allows (the broker
  may always decline a session) and which makes clients send full fetches every time;
  ``forgotten_topics_data`` is therefore empty in practice and ignored.
- Every partition answer carries high watermark, last stable offset and log start offset; the
  aborted transactions are null under read_uncommitted, as in Kafka. An authorization refusal is
  the rule's code on every partition (Kafka's TOPIC_AUTHORIZATION_FAILED per partition).
"""

from __future__ import annotations

from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import KetchError
from node.fetch_service import READ_COMMITTED
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, by_topic, kafka_error, millis, nested
from node.topic_admin import error_fields


def fetch_call(request: Any) -> pb.FetchRequest:
    """The consumer ``Fetch`` of a Kafka fetch request (see the module rules)."""
    call = pb.FetchRequest(
        max_wait_ms=max(millis(request.max_wait), 0),
        min_bytes=request.min_bytes,
        max_bytes=max(getattr(request, "max_bytes", 0), 0),
        isolation_level=getattr(request, "isolation_level", 0),
    )
    for topic in request.topics:
        for p in topic.partitions:
            item = call.partitions.add(
                topic=topic.topic,
                partition=p.partition,
                fetch_offset=p.fetch_offset,
                partition_max_bytes=p.partition_max_bytes,
            )
            epoch = getattr(p, "current_leader_epoch", -1)
            if epoch >= 0:
                item.current_leader_epoch = epoch
    return call


def partition_answer(response_type: type[Any], r: pb.FetchPartitionResult, read_committed: bool) -> Any:
    aborted_type = nested(response_type, "AbortedTransaction")
    aborted = tuple(
        aborted_type(producer_id=a.producer_id, first_offset=a.first_offset) for a in r.aborted_transactions
    )
    failed = r.error_code != 0
    return build(
        nested(response_type, "PartitionData"),
        partition_index=r.partition,
        error_code=kafka_error(r.error_code),
        high_watermark=r.high_watermark if not failed else -1,
        last_stable_offset=r.last_stable_offset if not failed else -1,
        log_start_offset=r.log_start_offset if not failed else -1,
        aborted_transactions=aborted if read_committed else None,
        records=bytes(r.records),
    )


async def handle_fetch(request: Any, ctx: KafkaContext) -> Any:
    call = fetch_call(request)
    try:
        results = list((await ctx.call("Fetch", call)).partitions)
    except KetchError as exc:  # refused as a whole (authorization): the code on every partition
        code, message = error_fields(exc)
        results = [
            pb.FetchPartitionResult(
                topic=p.topic, partition=p.partition, error_code=code, error_message=message, high_watermark=-1
            )
            for p in call.partitions
        ]
    committed = call.isolation_level == READ_COMMITTED
    return build(
        ctx.response_type,
        session_id=0,
        responses=tuple(
            build(
                nested(ctx.response_type, "FetchableTopicResponse"),
                topic=topic,
                partitions=tuple(partition_answer(ctx.response_type, r, committed) for r in items),
            )
            for topic, items in by_topic(results, lambda r: r.topic)
        ),
    )


APIS = [Api(1, "Fetch", 4, 12, handle_fetch)]
