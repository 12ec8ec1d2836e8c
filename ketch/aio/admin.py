"""asyncio Admin client: topics and cluster description.

Rules:
- Requests go to any broker that answers (known brokers first, then the
  bootstrap list); brokers forward what needs the controller.
- Results are per topic, Kafka style. ``create_topics`` and ``delete_topics``
  raise the typed error of the first failed topic (``TopicAlreadyExistsError``,
  ``InvalidTopicError``, ``UnknownTopicOrPartitionError``...) after the
  broker has processed all of them; the others' outcomes stand. The error
  names the topic.
- ``num_partitions`` / ``replication_factor`` of -1 mean the broker default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ketch.aio.connection import Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import error_for

__all__ = [
    "Admin",
    "BrokerDescription",
    "ClusterDescription",
    "NewTopic",
    "PartitionDescription",
    "TopicDescription",
]


@dataclass(frozen=True)
class NewTopic:
    name: str
    num_partitions: int = -1
    replication_factor: int = -1
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartitionDescription:
    partition: int
    leader: int
    replicas: list[int]
    isr: list[int]
    leader_epoch: int


@dataclass(frozen=True)
class TopicDescription:
    name: str
    topic_id: str
    partitions: list[PartitionDescription]
    replication_factor: int
    configs: dict[str, str]


@dataclass(frozen=True)
class BrokerDescription:
    node_id: int
    host: str
    port: int
    rack: str | None


@dataclass(frozen=True)
class ClusterDescription:
    cluster_id: str
    controller_id: int
    brokers: list[BrokerDescription]


def _raise_first(results: Iterable[ketch_pb2.TopicResult]) -> None:
    for r in results:
        if r.error_code != 0:
            err = error_for(r.error_code, r.error_message or f"topic {r.name!r}")
            if r.name not in str(err):
                err = error_for(r.error_code, f"topic {r.name!r}: {r.error_message}")
            raise err


class Admin:
    """Topic administration and cluster description."""

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str] = "127.0.0.1:9092",
        *,
        client_id: str = "ketch-admin",
        request_timeout_ms: int = 30000,
    ) -> None:
        self._conn = Connection(bootstrap_servers, client_id, request_timeout_ms)

    async def __aenter__(self) -> Admin:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def create_topics(self, topics: list[NewTopic], validate_only: bool = False) -> None:
        request = ketch_pb2.CreateTopicsRequest(
            topics=[
                ketch_pb2.NewTopic(
                    name=t.name,
                    num_partitions=t.num_partitions,
                    replication_factor=t.replication_factor,
                    configs={k: str(v) for k, v in t.configs.items()},
                )
                for t in topics
            ],
            validate_only=validate_only,
        )
        response = await self._conn.call_any("CreateTopics", request)
        assert isinstance(response, ketch_pb2.CreateTopicsResponse)
        _raise_first(response.topics)

    async def delete_topics(self, names: list[str]) -> None:
        response = await self._conn.call_any("DeleteTopics", ketch_pb2.DeleteTopicsRequest(names=names))
        assert isinstance(response, ketch_pb2.DeleteTopicsResponse)
        _raise_first(response.topics)

    async def list_topics(self) -> list[str]:
        response = await self._conn.call_any("Metadata", ketch_pb2.MetadataRequest())
        assert isinstance(response, ketch_pb2.MetadataResponse)
        return sorted(t.name for t in response.topics if t.error_code == 0)

    async def describe_topics(self, names: list[str] | None = None) -> list[TopicDescription]:
        """Descriptions of ``names`` (all topics when None); typed error for an unknown one."""
        request = ketch_pb2.DescribeTopicsRequest(names=names or [])
        response = await self._conn.call_any("DescribeTopics", request)
        assert isinstance(response, ketch_pb2.DescribeTopicsResponse)
        out = []
        for t in response.topics:
            if t.error_code != 0:
                raise error_for(t.error_code, t.error_message or f"topic {t.name!r}")
            out.append(
                TopicDescription(
                    name=t.name,
                    topic_id=t.topic_id,
                    partitions=[
                        PartitionDescription(p.partition, p.leader_id, list(p.replicas), list(p.isr), p.leader_epoch)
                        for p in sorted(t.partitions, key=lambda p: p.partition)
                    ],
                    replication_factor=t.replication_factor,
                    configs=dict(t.configs),
                )
            )
        return out

    async def describe_cluster(self) -> ClusterDescription:
        response = await self._conn.call_any("Metadata", ketch_pb2.MetadataRequest(topics=[]))
        assert isinstance(response, ketch_pb2.MetadataResponse)
        return ClusterDescription(
            cluster_id=response.cluster_id,
            controller_id=response.controller_id,
            brokers=[
                BrokerDescription(b.node_id, b.host, b.port, b.rack or None)
                for b in sorted(response.brokers, key=lambda b: b.node_id)
            ],
        )

    async def close(self) -> None:
        await self._conn.close()
