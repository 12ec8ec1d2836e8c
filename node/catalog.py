"""The broker's view of a topic's settings: its overrides over the dynamic and static defaults.

The controller validates and stores only a topic's overrides, under Kafka's
keys (coordinator/metadata/topic_config.py holds the keys and the rules),
and the dynamic broker configs (coordinator/metadata/configs.py). A broker
reads them at the moment of use: ``effective_config`` takes, for each key,
the first of the topic's override, this broker's dynamic defaults (its own,
then the cluster-wide ones, from the image: ``Broker.dynamic``) and this
node's own setting (node/config.py), so a changed default applies to every
topic that does not override it. ``cleanup.policy`` and
``unclean.leader.election.enable`` have no node setting: a topic that sets
neither, dynamically or not, is ``delete`` and ``false`` (Kafka's defaults);
the policy is read through ``compacted`` and ``deletes``, never by comparing
text.

``topic_entries`` and ``broker_entries`` say where each value comes from
(Kafka's ConfigSource) for DescribeConfigs. A node setting counts as
STATIC_BROKER_CONFIG when it differs from Ketch's default, else as
DEFAULT_CONFIG (a setting given explicitly at its default value is shown as
the default).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from coordinator.metadata.configs import (
    DYNAMIC_BROKER_CONFIGS,
    ConfigSource,
    Layer,
    dynamic_layers,
    resolve,
)
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.records import CLUSTER_WIDE
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
    SUPPORTED_CONFIGS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
)
from node.config import NodeConfig

# Topic config key -> the node setting that is its static default.
NODE_SETTINGS: dict[str, str] = {
    RETENTION_MS: "retention_ms",
    RETENTION_BYTES: "retention_bytes",
    MAX_MESSAGE_BYTES: "max_message_bytes",
    FLUSH_MESSAGES: "flush_messages",
    MIN_INSYNC_REPLICAS: "min_insync_replicas",
    DELETE_RETENTION_MS: "delete_retention_ms",
    MIN_COMPACTION_LAG_MS: "min_compaction_lag_ms",
    MIN_CLEANABLE_DIRTY_RATIO: "min_cleanable_dirty_ratio",
}
_KETCH = NodeConfig()
# Ketch's default of every topic config (DEFAULT_CONFIG).
KETCH_DEFAULTS: dict[str, str] = {
    **{key: str(getattr(_KETCH, setting)) for key, setting in NODE_SETTINGS.items()},
    CLEANUP_POLICY: DELETE,
    UNCLEAN_LEADER_ELECTION_ENABLE: "false",
}


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


def effective_config(overrides: Mapping[str, str], defaults: NodeConfig, dynamic: Mapping[str, str]) -> TopicConfig:
    """A topic's settings: its overrides (Kafka keys), else the ``dynamic`` broker defaults (by topic
    key: ``Broker.dynamic``), else the node's own settings."""

    def text(key: str) -> str | None:
        return overrides.get(key, dynamic.get(key))

    def number(key: str, default: int) -> int:
        value = text(key)
        return default if value is None else int(value)

    ratio = text(MIN_CLEANABLE_DIRTY_RATIO)
    return TopicConfig(
        retention_ms=number(RETENTION_MS, defaults.retention_ms),
        retention_bytes=number(RETENTION_BYTES, defaults.retention_bytes),
        max_message_bytes=number(MAX_MESSAGE_BYTES, defaults.max_message_bytes),
        flush_messages=number(FLUSH_MESSAGES, defaults.flush_messages),
        min_insync_replicas=number(MIN_INSYNC_REPLICAS, defaults.min_insync_replicas),
        cleanup_policy=text(CLEANUP_POLICY) or DELETE,
        unclean_leader_election=text(UNCLEAN_LEADER_ELECTION_ENABLE) == "true",
        delete_retention_ms=number(DELETE_RETENTION_MS, defaults.delete_retention_ms),
        min_compaction_lag_ms=number(MIN_COMPACTION_LAG_MS, defaults.min_compaction_lag_ms),
        min_cleanable_dirty_ratio=defaults.min_cleanable_dirty_ratio if ratio is None else float(ratio),
    )


class ConfigValue(NamedTuple):
    name: str
    value: str
    source: ConfigSource


def static_layers(config: NodeConfig) -> list[Layer]:
    """The node's own settings that differ from Ketch's defaults, then Ketch's defaults."""
    static = {
        key: str(getattr(config, setting))
        for key, setting in NODE_SETTINGS.items()
        if getattr(config, setting) != getattr(_KETCH, setting)
    }
    return [(ConfigSource.STATIC_BROKER_CONFIG, static), (ConfigSource.DEFAULT_CONFIG, KETCH_DEFAULTS)]


def topic_entries(overrides: Mapping[str, str], config: NodeConfig, image: MetadataImage) -> list[ConfigValue]:
    """Every topic config of a topic with ``overrides``, as broker ``config.node_id`` applies it, and its source."""
    layers = [(ConfigSource.DYNAMIC_TOPIC_CONFIG, overrides), *dynamic_layers(image, config.node_id)]
    layers += static_layers(config)
    return [ConfigValue(key, *resolve(key, layers)) for key in sorted(SUPPORTED_CONFIGS)]


def broker_entries(name: str, config: NodeConfig, image: MetadataImage) -> list[ConfigValue]:
    """The dynamic broker keys of resource ``name``: ``""`` is the cluster-wide layer over Ketch's
    defaults; this broker's own id is everything it applies (its own dynamic values, the cluster-wide
    ones, its settings, Ketch's defaults)."""
    own, cluster = dynamic_layers(image, config.node_id)
    if name == CLUSTER_WIDE:
        layers = [cluster, (ConfigSource.DEFAULT_CONFIG, KETCH_DEFAULTS)]
    else:
        layers = [own, cluster, *static_layers(config)]
    return [ConfigValue(key, *resolve(topic_key, layers)) for key, topic_key in sorted(DYNAMIC_BROKER_CONFIGS.items())]
