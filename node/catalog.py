"""The broker's view of a topic's settings: its overrides over the node's defaults.

The controller validates and stores only a topic's overrides, under Kafka's
keys (coordinator/metadata/topic_config.py holds the keys and the rules).
A broker reads them at the moment of use: ``effective_config`` merges them
over this node's defaults (node/config.py), so a changed default applies to
every topic that does not override it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coordinator.metadata.topic_config import (
    CLEANUP_POLICY,
    FLUSH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MIN_INSYNC_REPLICAS,
    RETENTION_BYTES,
    RETENTION_MS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
)
from node.config import NodeConfig


@dataclass(frozen=True)
class TopicConfig:
    """Effective settings of one topic (Kafka keys in topic_config.py)."""

    retention_ms: int  # retention.ms, -1 = forever
    retention_bytes: int  # retention.bytes, -1 = unlimited
    max_message_bytes: int  # max.message.bytes: largest record batch accepted
    flush_messages: int  # flush.messages: 1 = fsync every append, 0 = WAL only
    min_insync_replicas: int  # min.insync.replicas
    cleanup_policy: str  # cleanup.policy: only "delete" so far
    unclean_leader_election: bool = False  # unclean.leader.election.enable

    def as_kafka(self) -> dict[str, str]:
        return {
            RETENTION_MS: str(self.retention_ms),
            RETENTION_BYTES: str(self.retention_bytes),
            MAX_MESSAGE_BYTES: str(self.max_message_bytes),
            FLUSH_MESSAGES: str(self.flush_messages),
            MIN_INSYNC_REPLICAS: str(self.min_insync_replicas),
            CLEANUP_POLICY: self.cleanup_policy,
            UNCLEAN_LEADER_ELECTION_ENABLE: "true" if self.unclean_leader_election else "false",
        }


def effective_config(overrides: Mapping[str, str], defaults: NodeConfig) -> TopicConfig:
    """A topic's settings: its overrides (Kafka keys) over the broker defaults."""

    def number(key: str, default: int) -> int:
        return int(overrides[key]) if key in overrides else default

    return TopicConfig(
        retention_ms=number(RETENTION_MS, defaults.retention_ms),
        retention_bytes=number(RETENTION_BYTES, defaults.retention_bytes),
        max_message_bytes=number(MAX_MESSAGE_BYTES, defaults.max_message_bytes),
        flush_messages=number(FLUSH_MESSAGES, defaults.flush_messages),
        min_insync_replicas=number(MIN_INSYNC_REPLICAS, defaults.min_insync_replicas),
        cleanup_policy=overrides.get(CLEANUP_POLICY, "delete"),
        unclean_leader_election=overrides.get(UNCLEAN_LEADER_ELECTION_ENABLE) == "true",
    )
