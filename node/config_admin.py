"""DescribeConfigs and IncrementalAlterConfigs as a broker answers them.

Reads are answered from this broker's metadata image (node/catalog.py
resolves each value and its source); changes are forwarded to the active
controller (coordinator/metadata/configs.py decides them) and answered once
this broker's own image holds them, like CreateTopics (node/topic_admin.py):
a client that altered a config through a broker describes the new value
through it at once.

Rules:
- Each resource gets its own result; one bad resource never fails the others.
- A topic: every topic config with its value and source, as this broker
  applies it; UNKNOWN_TOPIC_OR_PARTITION for a topic the image lacks.
- Brokers: ``""`` is the cluster-wide layer (each dynamic key set for every
  broker, else Ketch's default); a node id is answered only by that broker
  (its own settings are not in the image), with every dynamic key as it
  applies it. Another node id is INVALID_REQUEST naming the broker to ask,
  as in Kafka (the Admin client sends each to its own broker).
- A forwarded change that the controller could not take (no controller, a
  timeout) fails every resource with that error; a change committed but not
  yet in this broker's image after ``VISIBILITY_TIMEOUT_S`` is
  REQUEST_TIMED_OUT (it is committed: describing it again shows it).
"""

from __future__ import annotations

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from node.broker import Broker
from node.catalog import ConfigValue, broker_entries, topic_entries
from node.controller_client import ControllerClient
from node.metadata_follower import MetadataFollower
from node.topic_admin import VISIBILITY_TIMEOUT_S, error_fields


class ConfigAdmin:
    def __init__(self, broker: Broker, controllers: ControllerClient, follower: MetadataFollower) -> None:
        self.broker = broker
        self.controllers = controllers
        self.follower = follower

    def describe(self, request: pb.DescribeConfigsRequest) -> pb.DescribeConfigsResponse:
        out = pb.DescribeConfigsResponse()
        for resource in request.resources:
            result = out.results.add(resource=resource)
            try:
                for entry in self._entries(resource):
                    result.entries.add(name=entry.name, value=entry.value, source=int(entry.source))
            except Exception as exc:
                result.error_code, result.error_message = error_fields(exc)
        return out

    def _entries(self, resource: pb.ConfigResource) -> list[ConfigValue]:
        config, image = self.broker.config, self.broker.image
        if resource.type == pb.CONFIG_RESOURCE_TOPIC:
            topic, _ = self.broker.topic(resource.name)
            return topic_entries(topic.configs, config, image)
        if resource.type != pb.CONFIG_RESOURCE_BROKER:
            raise KetchError(
                f"resource type {resource.type} is not a topic (2) or brokers (4)", code=ErrorCode.INVALID_REQUEST
            )
        if resource.name and not (resource.name.isdecimal() and int(resource.name) == config.node_id):
            raise KetchError(
                f"broker {resource.name}'s configs are described by broker {resource.name} itself; "
                f'this is broker {config.node_id} ("" names the cluster-wide ones)',
                code=ErrorCode.INVALID_REQUEST,
            )
        return broker_entries(resource.name and str(config.node_id), config, image)

    async def alter(self, request: pb.IncrementalAlterConfigsRequest) -> pb.IncrementalAlterConfigsResponse:
        out = pb.IncrementalAlterConfigsResponse()
        try:
            answer = await self.controllers.call(lambda stub: stub.IncrementalAlterConfigs, request)
        except Exception as exc:
            code, message = error_fields(exc)
            for r in request.resources:
                out.results.add(resource=r.resource, error_code=code, error_message=message)
            return out
        status = answer.status
        if status.error_code == 0 and not await self.follower.wait_for(status.metadata_offset, VISIBILITY_TIMEOUT_S):
            for result in answer.results:
                if result.error_code == 0:
                    result.error_code = ErrorCode.REQUEST_TIMED_OUT
                    result.error_message = (
                        f"committed at metadata offset {status.metadata_offset}, not yet visible on broker "
                        f"{self.broker.node_id} after {VISIBILITY_TIMEOUT_S}s"
                    )
        out.results.extend(answer.results)
        return out
