"""Produce (v3-9) on the Kafka listener: RecordBatch v2 bytes passed unchanged to ``Produce``.

Rules:
- Every partition's records go in one ``Produce`` call with the request's acks (0, 1 or -1;
  anything else is INVALID_REQUIRED_ACKS per partition, the servicer's rule), timeout and
  transactional id, so idempotent and transactional batches are checked by the broker as on
  gRPC (sequence numbers, KIP-890 verification).
- Errors are per partition (``error_code``, and ``error_message`` from v8); a refusal by the
  authorizer is the rule's code on every partition. ``log_append_time`` is -1 (null: CreateTime),
  ``record_errors`` empty.
- acks=0 gets no answer at all (node/kafka/server.py drops it).
"""

from __future__ import annotations

from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import KetchError
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, by_topic, kafka_error, millis, nested
from node.topic_admin import error_fields


async def handle_produce(request: Any, ctx: KafkaContext) -> Any:
    partitions = [
        pb.PartitionRecords(topic=topic.name, partition=p.index, records=bytes(p.records or b""))
        for topic in request.topic_data
        for p in topic.partition_data
    ]
    call = pb.ProduceRequest(
        acks=request.acks,
        timeout_ms=millis(request.timeout),
        partitions=partitions,
        transactional_id=request.transactional_id or "",
    )
    try:
        answer = await ctx.call("Produce", call)
        results = list(answer.partitions)
    except KetchError as exc:  # refused as a whole (authorization): the code on every partition
        code, message = error_fields(exc)
        results = [
            pb.PartitionProduceResult(
                topic=p.topic,
                partition=p.partition,
                error_code=code,
                error_message=message,
                base_offset=-1,
            )
            for p in partitions
        ]
    return build(
        ctx.response_type,
        responses=tuple(
            build(
                nested(ctx.response_type, "TopicProduceResponse"),
                name=topic,
                partition_responses=tuple(partition_answer(ctx.response_type, r) for r in items),
            )
            for topic, items in by_topic(results, lambda r: r.topic)
        ),
    )


def partition_answer(response_type: type[Any], r: pb.PartitionProduceResult) -> Any:
    return build(
        nested(response_type, "PartitionProduceResponse"),
        index=r.partition,
        error_code=kafka_error(r.error_code),
        base_offset=r.base_offset if r.error_code == 0 else -1,
        log_append_time=None,
        log_start_offset=r.log_start_offset if r.error_code == 0 else -1,
        record_errors=(),
        error_message=r.error_message or None,
    )


APIS = [Api(0, "Produce", 3, 9, handle_produce)]
