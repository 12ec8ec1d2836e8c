"""The broker's view of a topic's settings: its overrides over the node's defaults.

The controller validates and stores only a topic's overrides, under Kafka's
keys (coordinator/metadata/topic_config.py holds the keys and the rules).
A broker reads them at the moment of use: ``effective_config`` merges them
over this node's defaults (node/config.py), so a changed default applies to
every topic that does not override it. ``cleanup.policy`` has no node
default: a topic that does not set it is ``delete`` (Kafka's default); the
policy is read through ``compacted`` and ``deletes``, never by comparing text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from coordinator.metadata.topic_config import (
    CLEANUP_POLICY,
    COMPACT,
    DELETE,
    DELETE_RETENTION_MS,
    FLUSH_MESSAGES,
    MAX_MESSAGE_BYTES,
    MIN_CLEANABLE_DIRTY_RATIO,
    MIN_COMPACTION_LAG_MS,
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
    cleanup_policy: str  # cleanup.policy: "delete", "compact" or "compact,delete"
    delete_retention_ms: int  # delete.retention.ms: a tombstone's life after its cleaning
    min_compaction_lag_ms: int  # min.compaction.lag.ms: a younger record is never cleaned
    min_cleanable_dirty_ratio: float  # min.cleanable.dirty.ratio: dirty share that starts a clean
    unclean_leader_election: bool = False  # unclean.leader.election.enable

    @property
    def compacted(self) -> bool:
        """The cleaner keeps each key's latest record, and every produced record needs a key."""
        return COMPACT in self.cleanup_policy.split(",")

    @property
    def deletes(self) -> bool:
        """Retention (retention.ms, retention.bytes) trims the log; never for a compact-only topic."""
        return DELETE in self.cleanup_policy.split(",")

    def as_kafka(self) -> dict[str, str]:
        return {
            RETENTION_MS: str(self.retention_ms),
            RETENTION_BYTES: str(self.retention_bytes),
            MAX_MESSAGE_BYTES: str(self.max_message_bytes),
            FLUSH_MESSAGES: str(self.flush_messages),
            MIN_INSYNC_REPLICAS: str(self.min_insync_replicas),
            CLEANUP_POLICY: self.cleanup_policy,
            UNCLEAN_LEADER_ELECTION_ENABLE: "true" if self.unclean_leader_election else "false",
            DELETE_RETENTION_MS: str(self.delete_retention_ms),
            MIN_COMPACTION_LAG_MS: str(self.min_compaction_lag_ms),
            MIN_CLEANABLE_DIRTY_RATIO: str(self.min_cleanable_dirty_ratio),
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
        cleanup_policy=overrides.get(CLEANUP_POLICY, DELETE),
        unclean_leader_election=overrides.get(UNCLEAN_LEADER_ELECTION_ENABLE) == "true",
        delete_retention_ms=number(DELETE_RETENTION_MS, defaults.delete_retention_ms),
        min_compaction_lag_ms=number(MIN_COMPACTION_LAG_MS, defaults.min_compaction_lag_ms),
        min_cleanable_dirty_ratio=(
            float(overrides[MIN_CLEANABLE_DIRTY_RATIO])
            if MIN_CLEANABLE_DIRTY_RATIO in overrides
            else defaults.min_cleanable_dirty_ratio
        ),
    )
