"""The node's topic catalogue: names, partitions, configs — until the controller lands.

Until the Raft controller quorum exists (issue "Controller quorum"), a node
owns its topic metadata itself, in the ``meta`` column family of its RocksDB:

    b"topic/" + name  -> JSON {"topic_id", "partition_ids", "replication_factor", "configs"}
    b"next-pid"       -> u32 BE, the next node-local partition id

A partition id is the node-local u32 that prefixes every key of that
partition's log and state (DESIGN.md §4); ids are never reused, so a topic
deleted and re-created gets fresh, empty key ranges.

Rules:
- Topic names follow Kafka: ``[A-Za-z0-9._-]``, 1 to 249 characters, not
  ``.`` or ``..`` → otherwise INVALID_TOPIC_EXCEPTION.
- Topic configs use Kafka's keys; an unknown key or a value of the wrong type
  or range is INVALID_CONFIG, naming the key and what is accepted. Only
  overrides are stored; ``effective`` merges them over the broker defaults.
- A single node can host replication factor 1 only (INVALID_REPLICATION_FACTOR
  otherwise, naming how many brokers exist).
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from ketch.errors import ErrorCode, KetchError, UnknownTopicOrPartitionError
from node.config import NodeConfig

MAX_TOPIC_NAME = 249
_LEGAL = re.compile(r"^[A-Za-z0-9._-]+$")
_TOPIC_PREFIX = b"topic/"
_NEXT_PID = b"next-pid"
_U32 = struct.Struct(">I")


class MetaStore(Protocol):
    def meta_get(self, key: bytes) -> bytes | None: ...
    def meta_put(self, key: bytes, value: bytes, sync: bool = True) -> None: ...
    def meta_delete(self, key: bytes) -> None: ...
    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]: ...


@dataclass(frozen=True)
class TopicConfig:
    """Effective settings of one topic (Kafka names in comments)."""

    retention_ms: int  # retention.ms, -1 = forever
    retention_bytes: int  # retention.bytes, -1 = unlimited
    max_message_bytes: int  # max.message.bytes: largest record batch accepted
    flush_messages: int  # flush.messages: 1 = fsync every append, 0 = WAL only
    min_insync_replicas: int  # min.insync.replicas
    cleanup_policy: str  # cleanup.policy: only "delete" so far

    def as_kafka(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "max.message.bytes": str(self.max_message_bytes),
            "flush.messages": str(self.flush_messages),
            "min.insync.replicas": str(self.min_insync_replicas),
            "cleanup.policy": self.cleanup_policy,
        }


# Kafka key -> (TopicConfig field, smallest value accepted)
_INT_KEYS: dict[str, tuple[str, int]] = {
    "retention.ms": ("retention_ms", -1),
    "retention.bytes": ("retention_bytes", -1),
    "max.message.bytes": ("max_message_bytes", 1),
    "flush.messages": ("flush_messages", 0),
    "min.insync.replicas": ("min_insync_replicas", 1),
}
SUPPORTED_CONFIGS = (*_INT_KEYS, "cleanup.policy")


@dataclass(frozen=True)
class TopicInfo:
    name: str
    topic_id: str
    partition_ids: tuple[int, ...]
    replication_factor: int
    configs: Mapping[str, str]

    @property
    def partitions(self) -> int:
        return len(self.partition_ids)


def validate_topic_name(name: str) -> None:
    if not name:
        raise KetchError("topic name is empty", code=ErrorCode.INVALID_TOPIC_EXCEPTION)
    if name in (".", ".."):
        raise KetchError(f"topic name {name!r} is not allowed", code=ErrorCode.INVALID_TOPIC_EXCEPTION)
    if len(name) > MAX_TOPIC_NAME:
        raise KetchError(
            f"topic name is {len(name)} characters; the limit is {MAX_TOPIC_NAME}",
            code=ErrorCode.INVALID_TOPIC_EXCEPTION,
        )
    if not _LEGAL.match(name):
        raise KetchError(
            f"topic name {name!r} has characters outside [A-Za-z0-9._-]",
            code=ErrorCode.INVALID_TOPIC_EXCEPTION,
        )


def validate_configs(configs: Mapping[str, str], max_request_bytes: int) -> dict[str, str]:
    """Normalised overrides, or INVALID_CONFIG naming the offending key."""
    out: dict[str, str] = {}
    for key, raw in configs.items():
        if key == "cleanup.policy":
            if raw != "delete":
                raise KetchError(
                    f"cleanup.policy={raw!r} is not supported; only 'delete' (compaction is not built yet)",
                    code=ErrorCode.INVALID_CONFIG,
                )
            out[key] = raw
            continue
        if key not in _INT_KEYS:
            raise KetchError(
                f"unknown topic config {key!r}; supported: {', '.join(SUPPORTED_CONFIGS)}",
                code=ErrorCode.INVALID_CONFIG,
            )
        _, minimum = _INT_KEYS[key]
        try:
            value = int(raw)
        except ValueError:
            raise KetchError(f"topic config {key}={raw!r} is not an integer", code=ErrorCode.INVALID_CONFIG) from None
        if value < minimum:
            raise KetchError(f"topic config {key}={value} must be >= {minimum}", code=ErrorCode.INVALID_CONFIG)
        if key == "max.message.bytes" and value > max_request_bytes:
            raise KetchError(
                f"max.message.bytes={value} exceeds the node's max_request_bytes={max_request_bytes}",
                code=ErrorCode.INVALID_CONFIG,
            )
        out[key] = str(value)
    return out


class TopicCatalog:
    """Topic metadata persisted in the node's meta column family."""

    def __init__(self, store: MetaStore, defaults: NodeConfig, brokers: int = 1) -> None:
        self._store = store
        self._defaults = defaults
        self._brokers = brokers
        self._topics: dict[str, TopicInfo] = {}
        for key, value in store.meta_items(_TOPIC_PREFIX):
            name = key[len(_TOPIC_PREFIX) :].decode()
            data = json.loads(value)
            self._topics[name] = TopicInfo(
                name=name,
                topic_id=data["topic_id"],
                partition_ids=tuple(data["partition_ids"]),
                replication_factor=data["replication_factor"],
                configs=data["configs"],
            )

    def get(self, name: str) -> TopicInfo:
        info = self._topics.get(name)
        if info is None:
            raise UnknownTopicOrPartitionError(f"topic {name!r} does not exist")
        return info

    def names(self) -> list[str]:
        return sorted(self._topics)

    def __contains__(self, name: str) -> bool:
        return name in self._topics

    def effective(self, info: TopicInfo) -> TopicConfig:
        d = self._defaults
        base = TopicConfig(
            retention_ms=d.retention_ms,
            retention_bytes=d.retention_bytes,
            max_message_bytes=d.max_message_bytes,
            flush_messages=d.flush_messages,
            min_insync_replicas=d.min_insync_replicas,
            cleanup_policy="delete",
        )
        overrides: dict[str, object] = {}
        for key, raw in info.configs.items():
            if key in _INT_KEYS:
                overrides[_INT_KEYS[key][0]] = int(raw)
            elif key == "cleanup.policy":
                overrides["cleanup_policy"] = raw
        return TopicConfig(**{**base.__dict__, **overrides})

    def check_create(
        self, name: str, partitions: int, replication_factor: int, configs: Mapping[str, str]
    ) -> dict[str, str]:
        validate_topic_name(name)
        if name in self._topics:
            raise KetchError(f"topic {name!r} already exists", code=ErrorCode.TOPIC_ALREADY_EXISTS)
        if partitions < 1:
            raise KetchError(f"number of partitions must be >= 1, got {partitions}", code=ErrorCode.INVALID_PARTITIONS)
        if not 1 <= replication_factor <= self._brokers:
            raise KetchError(
                f"replication factor {replication_factor} is not possible with {self._brokers} "
                f"broker(s); use 1..{self._brokers}",
                code=ErrorCode.INVALID_REPLICATION_FACTOR,
            )
        return validate_configs(configs, self._defaults.max_request_bytes)

    def create(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str],
        new_topic_id: Callable[[], str],
    ) -> TopicInfo:
        overrides = self.check_create(name, partitions, replication_factor, configs)
        raw_next = self._store.meta_get(_NEXT_PID)
        first = _U32.unpack(raw_next)[0] if raw_next else 0
        info = TopicInfo(
            name=name,
            topic_id=new_topic_id(),
            partition_ids=tuple(range(first, first + partitions)),
            replication_factor=replication_factor,
            configs=overrides,
        )
        self._store.meta_put(_NEXT_PID, _U32.pack(first + partitions))
        self._store.meta_put(_TOPIC_PREFIX + name.encode(), _encode(info))
        self._topics[name] = info
        return info

    def delete(self, name: str) -> TopicInfo:
        info = self.get(name)
        self._store.meta_delete(_TOPIC_PREFIX + name.encode())
        del self._topics[name]
        return info


def _encode(info: TopicInfo) -> bytes:
    return json.dumps(
        {
            "topic_id": info.topic_id,
            "partition_ids": list(info.partition_ids),
            "replication_factor": info.replication_factor,
            "configs": dict(info.configs),
        },
        sort_keys=True,
    ).encode()
