"""The broker's replica manager: topics, their partitions, and where each log lives.

It opens every partition of every catalogued topic at start, creates and
deletes topics (dropping a deleted partition's whole key range), answers
"which Partition serves topic T partition P" with a typed error when none
does, and runs retention. It does no networking: node/service.py translates
gRPC messages into these calls, and node/main.py owns the event loop.

Rules:
- A topic name that breaks Kafka's rules is INVALID_TOPIC_EXCEPTION wherever
  it appears (produce, fetch, metadata, create), before any lookup.
- Unknown topic or partition index is UNKNOWN_TOPIC_OR_PARTITION, never an
  implicit creation — unless ``auto_create_topics`` is on and the request is
  a metadata request asking for creation (Kafka's behaviour).
- Deleting a topic removes it from the catalogue first, then drops its
  partitions' data; a crash in between leaves only unreachable key ranges,
  never a topic without data.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

from ketch.errors import UnknownTopicOrPartitionError
from node.catalog import TopicCatalog, TopicConfig, TopicInfo, validate_topic_name
from node.config import NodeConfig
from replication.log import RetentionPolicy
from replication.partition import Partition
from replication.rocks_store import NodeStore

_CLUSTER_ID = b"cluster-id"


def new_topic_id() -> str:
    return uuid.uuid4().hex


class Broker:
    def __init__(self, config: NodeConfig, store: NodeStore) -> None:
        self.config = config
        self.store = store
        self.catalog = TopicCatalog(store, config)
        self.cluster_id = self._cluster_id()
        self._partitions: dict[tuple[str, int], Partition] = {}
        self._configs: dict[str, TopicConfig] = {}
        for name in self.catalog.names():
            self._open(self.catalog.get(name))

    def _cluster_id(self) -> str:
        """Made once, at the first start on an empty data directory."""
        stored = self.store.meta_get(_CLUSTER_ID)
        if stored is None:
            stored = uuid.uuid4().hex.encode()
            self.store.meta_put(_CLUSTER_ID, stored)
        return stored.decode()

    def _open(self, info: TopicInfo) -> None:
        self._configs[info.name] = self.catalog.effective(info)
        for index, pid in enumerate(info.partition_ids):
            self._partitions[(info.name, index)] = Partition(info.name, index, self.store.partition_log(pid))

    def partitions(self) -> Iterable[Partition]:
        return list(self._partitions.values())

    def partition(self, topic: str, index: int) -> tuple[Partition, TopicConfig]:
        validate_topic_name(topic)
        part = self._partitions.get((topic, index))
        if part is None:
            if topic in self._configs:
                raise UnknownTopicOrPartitionError(
                    f"topic {topic!r} has partitions 0..{self.catalog.get(topic).partitions - 1}; "
                    f"there is no partition {index}"
                )
            raise UnknownTopicOrPartitionError(f"topic {topic!r} does not exist")
        return part, self._configs[topic]

    def topic(self, name: str) -> tuple[TopicInfo, TopicConfig]:
        validate_topic_name(name)
        info = self.catalog.get(name)
        return info, self._configs[name]

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        validate_only: bool = False,
    ) -> None:
        partitions = self.config.default_partitions if partitions <= 0 else partitions
        replication_factor = self.config.default_replication_factor if replication_factor <= 0 else replication_factor
        if validate_only:
            self.catalog.check_create(name, partitions, replication_factor, configs)
            return
        info = self.catalog.create(name, partitions, replication_factor, configs, new_topic_id)
        self._open(info)

    def delete_topic(self, name: str) -> list[tuple[str, int]]:
        """Delete a topic; returns the partitions that no longer exist."""
        validate_topic_name(name)
        info = self.catalog.delete(name)
        gone = []
        for index, pid in enumerate(info.partition_ids):
            part = self._partitions.pop((name, index), None)
            if part is not None:
                part.log.close()
            self.store.drop_partition(pid)
            gone.append((name, index))
        self._configs.pop(name, None)
        return gone

    def ensure_topic(self, name: str) -> bool:
        """Auto-create ``name`` with the defaults if allowed; True if it exists after."""
        if name in self.catalog:
            return True
        if not self.config.auto_create_topics:
            return False
        self.create_topic(name, -1, -1, {})
        return True

    def apply_retention(self, now_ms: int) -> int:
        removed = 0
        for part in self.partitions():
            config = self._configs.get(part.topic)
            if config is None:
                continue
            policy = RetentionPolicy(config.retention_ms, config.retention_bytes)
            removed += part.log.apply_retention(policy, now_ms)
        return removed
