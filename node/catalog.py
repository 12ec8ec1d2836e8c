"""Topic rules shared by the controller and the brokers: names and configs.

Topic metadata itself (ids, partitions, replicas, leaders) is owned by the
controller quorum (coordinator/metadata); this module holds the rules both
sides apply to what users send, and the broker's view of a topic's settings.

Rules:
- Topic names follow Kafka: ``[A-Za-z0-9._-]``, 1 to 249 characters, not
  ``.`` or ``..`` → otherwise INVALID_TOPIC_EXCEPTION.
- Topic configs use Kafka's keys; an unknown key or a value of the wrong type
  or range is INVALID_CONFIG, naming the key and what is accepted. Only
  overrides are stored in metadata; ``effective_config`` merges them over the
  broker defaults at the moment of use.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from ketch.errors import ErrorCode, KetchError
from node.config import NodeConfig

MAX_TOPIC_NAME = 249
_LEGAL = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class TopicConfig:
    """Effective settings of one topic (Kafka names in comments)."""

    retention_ms: int  # retention.ms, -1 = forever
    retention_bytes: int  # retention.bytes, -1 = unlimited
    max_message_bytes: int  # max.message.bytes: largest record batch accepted
    flush_messages: int  # flush.messages: 1 = fsync every append, 0 = WAL only
    min_insync_replicas: int  # min.insync.replicas
    cleanup_policy: str  # cleanup.policy: only "delete" so far
    unclean_leader_election: bool = False  # unclean.leader.election.enable

    def as_kafka(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "max.message.bytes": str(self.max_message_bytes),
            "flush.messages": str(self.flush_messages),
            "min.insync.replicas": str(self.min_insync_replicas),
            "cleanup.policy": self.cleanup_policy,
            UNCLEAN_KEY: "true" if self.unclean_leader_election else "false",
        }


# Kafka key -> (TopicConfig field, smallest value accepted)
_INT_KEYS: dict[str, tuple[str, int]] = {
    "retention.ms": ("retention_ms", -1),
    "retention.bytes": ("retention_bytes", -1),
    "max.message.bytes": ("max_message_bytes", 1),
    "flush.messages": ("flush_messages", 0),
    "min.insync.replicas": ("min_insync_replicas", 1),
}
UNCLEAN_KEY = "unclean.leader.election.enable"
SUPPORTED_CONFIGS = (*_INT_KEYS, "cleanup.policy", UNCLEAN_KEY)


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
        if key == UNCLEAN_KEY:
            if raw not in ("true", "false"):
                raise KetchError(f"{UNCLEAN_KEY}={raw!r} must be true or false", code=ErrorCode.INVALID_CONFIG)
            out[key] = raw
            continue
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


def effective_config(overrides: Mapping[str, str], defaults: NodeConfig) -> TopicConfig:
    """A topic's settings: its overrides (Kafka keys) over the broker defaults."""
    values: dict[str, object] = {
        "retention_ms": defaults.retention_ms,
        "retention_bytes": defaults.retention_bytes,
        "max_message_bytes": defaults.max_message_bytes,
        "flush_messages": defaults.flush_messages,
        "min_insync_replicas": defaults.min_insync_replicas,
        "cleanup_policy": "delete",
        "unclean_leader_election": False,
    }
    for key, raw in overrides.items():
        if key in _INT_KEYS:
            values[_INT_KEYS[key][0]] = int(raw)
        elif key == "cleanup.policy":
            values["cleanup_policy"] = raw
        elif key == UNCLEAN_KEY:
            values["unclean_leader_election"] = raw == "true"
    return TopicConfig(**values)  # type: ignore[arg-type]
