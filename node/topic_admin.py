"""Topic metadata and administration as a broker answers it.

Reads (Metadata, DescribeTopics) are answered from this broker's metadata
image; writes (CreateTopics, CreatePartitions, DeleteTopics) are forwarded to the active
controller, and the answer waits until this broker's own image has reached
the offset that holds the change, so a client that created a topic through
a broker can use it through that broker at once (read-your-writes).

Rules:
- Broker defaults fill what the request leaves out: ``num_partitions`` and
  ``replication_factor`` of -1 (or 0) become ``default_partitions`` and
  ``default_replication_factor``.
- Metadata lists unfenced brokers only (Kafka's alive brokers), each at its
  address on the listener the request came in on; a broker without that
  listener is left out (node/listeners.py). A partition with no leader reports
  LEADER_NOT_AVAILABLE and leader -1.
- Auto-creation happens only when the broker allows it AND the request asks
  for it (Kafka's ``allow_auto_topic_creation``), with the broker defaults.
"""

from __future__ import annotations

import logging
from typing import Any

from coordinator.metadata.image import TopicImage
from coordinator.metadata.reassignment import target_replicas
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from node.broker import Broker
from node.controller_client import ControllerClient
from node.metadata_follower import MetadataFollower

log = logging.getLogger("ketch.node.topic_admin")
VISIBILITY_TIMEOUT_S = 10.0


def error_fields(exc: Exception) -> tuple[Any, str]:
    """(code, message) for a per-partition/per-topic result; unexpected errors are logged."""
    if isinstance(exc, KetchError):
        return int(exc.code), exc.message
    log.exception("unexpected error serving a request")
    return int(ErrorCode.UNKNOWN_SERVER_ERROR), f"{type(exc).__name__}: {exc}"


def partition_metadata(topic: TopicImage) -> list[pb.PartitionMetadata]:
    out = []
    for index in sorted(topic.partitions):
        state = topic.partitions[index]
        out.append(
            pb.PartitionMetadata(
                partition=index,
                error_code=(ErrorCode.LEADER_NOT_AVAILABLE if state.leader == -1 else ErrorCode.NONE).name,
                leader_id=state.leader,
                leader_epoch=state.leader_epoch,
                replicas=list(state.replicas),
                isr=list(state.isr),
                recovering=state.recovering,
            )
        )
    return out


class TopicAdmin:
    def __init__(self, broker: Broker, controllers: ControllerClient, follower: MetadataFollower) -> None:
        self.broker = broker
        self.controllers = controllers
        self.follower = follower

    def describe(self, name: str) -> pb.TopicDescription:
        out = pb.TopicDescription(name=name)
        try:
            topic, config = self.broker.topic(name)
            out.topic_id = topic.topic_id
            first = topic.partitions.get(0)
            out.replication_factor = len(target_replicas(first)) if first is not None else 0  # not those leaving
            out.partitions.extend(partition_metadata(topic))
            out.configs.update(config.as_kafka())
        except Exception as exc:
            out.error_code, out.error_message = error_fields(exc)
        return out

    def names(self) -> list[str]:
        return sorted(self.broker.image.topics_by_name)

    async def metadata(self, request: pb.MetadataRequest, cluster_id: str, listener: str) -> pb.MetadataResponse:
        names = list(request.topics) or self.names()
        if request.allow_auto_topic_creation and self.broker.config.auto_create_topics:
            missing = [n for n in names if self.broker.image.topic(n) is None]
            if missing:
                await self.create(pb.CreateTopicsRequest(topics=[pb.NewTopic(name=n) for n in missing]))
        image = self.broker.image
        leader = self.controllers.leader_guess
        response = pb.MetadataResponse(cluster_id=cluster_id, controller_id=leader)
        for broker in sorted(image.brokers.values(), key=lambda b: b.broker_id):
            address = broker.endpoint(listener)
            if not broker.fenced and address is not None:
                host, port = address
                response.brokers.add(node_id=broker.broker_id, host=host, port=port, rack=broker.rack)
        for name in names:
            d = self.describe(name)
            response.topics.add(
                name=d.name,
                error_code=d.error_code,
                error_message=d.error_message,
                topic_id=d.topic_id,
                partitions=d.partitions,
            )
        return response

    async def _forward(self, method: str, request: Any, names: list[str], out: Any) -> None:
        try:
            answer: Any = await self.controllers.call(lambda stub: getattr(stub, method), request)
        except Exception as exc:
            code, message = error_fields(exc)
            for name in names:
                out.topics.add(name=name, error_code=code, error_message=message)
            return
        if answer.status.error_code == 0 and not await self.follower.wait_for(
            answer.status.metadata_offset, VISIBILITY_TIMEOUT_S
        ):
            # Committed, but this broker's image has not caught up: say so per topic (the status
            # alone never reaches the client), so it does not act on a change it cannot see yet.
            message = (
                f"the controller committed the change at metadata offset {answer.status.metadata_offset}, "
                f"but this broker's image has not reached it within {VISIBILITY_TIMEOUT_S:.0f} s"
            )
            for result in answer.topics:
                if result.error_code == ErrorCode.NONE:
                    result.error_code = ErrorCode.REQUEST_TIMED_OUT
                    result.error_message = message
        out.topics.extend(answer.topics)

    async def create(self, request: pb.CreateTopicsRequest) -> pb.CreateTopicsResponse:
        config = self.broker.config
        forwarded = pb.CreateTopicsRequest(validate_only=request.validate_only)
        for topic in request.topics:
            forwarded.topics.add(
                name=topic.name,
                num_partitions=topic.num_partitions if topic.num_partitions > 0 else config.default_partitions,
                replication_factor=(
                    topic.replication_factor if topic.replication_factor > 0 else config.default_replication_factor
                ),
                configs=topic.configs,
            )
        out = pb.CreateTopicsResponse()
        await self._forward("CreateTopics", forwarded, [t.name for t in request.topics], out)
        return out

    async def create_partitions(self, request: pb.CreatePartitionsRequest) -> pb.CreatePartitionsResponse:
        out = pb.CreatePartitionsResponse()
        await self._forward("CreatePartitions", request, [t.name for t in request.topics], out)
        return out

    async def delete(self, request: pb.DeleteTopicsRequest) -> pb.DeleteTopicsResponse:
        out = pb.DeleteTopicsResponse()
        await self._forward("DeleteTopics", request, list(request.names), out)
        return out
