"""Metadata (v1-12) on the Kafka listener: the broker's ``Metadata`` answer in Kafka's shape.

Rules:
- Topics: null asks for every topic, an empty list for none (v1+, Kafka's rule; Ketch's empty
  list means all, so the handler then keeps no topic); a topic named only by id (v10+) gets
  UNKNOWN_TOPIC_ID. ``allow_auto_topic_creation`` (v4+; always on before) is passed on, and
  node/access.py turns it off for a caller without CREATE.
- Brokers are the unfenced brokers' KAFKA endpoints (``KetchService(listener="KAFKA")``); a
  broker without a Kafka listener is left out. ``controller_id`` is the active controller if it
  is among those brokers (combined mode), else the lowest broker id: Kafka clients send admin
  requests to it, so it must be a broker (``client_controller_id``; KRaft does the same).
- Topic ids are the image's (a uuid), else the zero uuid; ``__consumer_offsets`` and
  ``__transaction_state`` are internal. Authorized operations are not computed: they are
  answered as Kafka's "not requested" value (-2147483648).
- While the broker is still catching up on the metadata log the servicer aborts; the server then
  closes the connection and the client asks again (the answer has no top-level error code).
"""

from __future__ import annotations

import uuid
from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from node.group_coordinator import OFFSETS_TOPIC
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, kafka_error, nested
from node.txn_coordinator import TRANSACTION_STATE_TOPIC

INTERNAL = frozenset({OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC})
NOT_REQUESTED = -2147483648
UNKNOWN_TOPIC_ID = 100
ZERO_UUID = uuid.UUID(int=0)


def topic_uuid(topic_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(topic_id)
    except ValueError:
        return ZERO_UUID


def partition_answer(response_type: type[Any], p: pb.PartitionMetadata) -> Any:
    return build(
        nested(response_type, "MetadataResponsePartition"),
        error_code=kafka_error(p.error_code),
        partition_index=p.partition,
        leader_id=p.leader_id,
        leader_epoch=p.leader_epoch,
        replica_nodes=tuple(p.replicas),
        isr_nodes=tuple(p.isr),
        offline_replicas=(),
    )


def topic_answer(response_type: type[Any], t: pb.TopicMetadata) -> Any:
    return build(
        nested(response_type, "MetadataResponseTopic"),
        error_code=kafka_error(t.error_code),
        name=t.name,
        topic_id=topic_uuid(t.topic_id),
        is_internal=t.name in INTERNAL,
        partitions=tuple(partition_answer(response_type, p) for p in sorted(t.partitions, key=lambda p: p.partition)),
        topic_authorized_operations=NOT_REQUESTED,
    )


def client_controller_id(controller_id: int, broker_ids: list[int]) -> int:
    """What Metadata names as the controller: the active controller when it is one of the brokers
    answered, else the lowest of them, -1 without any. Kafka clients send their admin requests
    there, so it must be a broker they can reach (KRaft answers a broker too: dedicated controllers
    are not reachable by clients and the broker forwards)."""
    if controller_id in broker_ids:
        return controller_id
    return min(broker_ids, default=-1)


async def handle_metadata(request: Any, ctx: KafkaContext) -> Any:
    wanted = request.topics
    names = [t.name for t in wanted or () if t.name is not None]
    by_id_only = [t for t in wanted or () if t.name is None]
    auto_create = bool(getattr(request, "allow_auto_topic_creation", True))
    answer = await ctx.call("Metadata", pb.MetadataRequest(topics=names, allow_auto_topic_creation=auto_create))
    broker_type = nested(ctx.response_type, "MetadataResponseBroker")
    brokers = tuple(
        build(broker_type, node_id=b.node_id, host=b.host, port=b.port, rack=b.rack or None) for b in answer.brokers
    )
    topics = [] if wanted is not None and not names else [topic_answer(ctx.response_type, t) for t in answer.topics]
    for t in by_id_only:
        topics.append(
            build(
                nested(ctx.response_type, "MetadataResponseTopic"),
                error_code=kafka_error(UNKNOWN_TOPIC_ID),
                name=None,
                topic_id=t.topic_id,
                topic_authorized_operations=NOT_REQUESTED,
            )
        )
    return build(
        ctx.response_type,
        brokers=brokers,
        cluster_id=answer.cluster_id,
        controller_id=client_controller_id(answer.controller_id, [b.node_id for b in answer.brokers]),
        topics=tuple(topics),
        cluster_authorized_operations=NOT_REQUESTED,
    )


APIS = [Api(3, "Metadata", 1, 12, handle_metadata)]
