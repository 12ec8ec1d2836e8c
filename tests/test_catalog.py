"""The broker's view of a topic: overrides over dynamic and node defaults, and their sources (node/catalog.py)."""

from __future__ import annotations

import pytest

from coordinator.metadata import MetadataImage
from coordinator.metadata import records as rec
from coordinator.metadata.configs import ConfigSource, dynamic_topic_defaults
from coordinator.metadata.delta import replay_batch
from node.catalog import broker_entries, effective_config, topic_entries
from node.config import NodeConfig


def test_effective_config_merges_overrides_over_broker_defaults() -> None:
    defaults = NodeConfig(retention_ms=1000, max_message_bytes=2048)
    plain = effective_config({}, defaults, {})
    assert (plain.retention_ms, plain.max_message_bytes, plain.unclean_leader_election) == (1000, 2048, False)
    tuned = effective_config(
        {"retention.ms": "5", "unclean.leader.election.enable": "true", "min.insync.replicas": "2"}, defaults, {}
    )
    assert (tuned.retention_ms, tuned.min_insync_replicas, tuned.unclean_leader_election) == (5, 2, True)
    assert tuned.as_kafka()["unclean.leader.election.enable"] == "true"
    assert tuned.as_kafka()["max.message.bytes"] == "2048"


def test_compaction_settings_come_from_node_defaults_unless_overridden() -> None:
    defaults = NodeConfig(delete_retention_ms=500, min_compaction_lag_ms=7, min_cleanable_dirty_ratio=0.25)
    plain = effective_config({}, defaults, {})
    assert (plain.delete_retention_ms, plain.min_compaction_lag_ms, plain.min_cleanable_dirty_ratio) == (500, 7, 0.25)
    assert (plain.cleanup_policy, plain.deletes, plain.compacted) == ("delete", True, False)
    tuned = effective_config(
        {
            "cleanup.policy": "compact",
            "delete.retention.ms": "0",
            "min.compaction.lag.ms": "100",
            "min.cleanable.dirty.ratio": "0.01",
        },
        defaults,
        {},
    )
    assert (tuned.delete_retention_ms, tuned.min_compaction_lag_ms, tuned.min_cleanable_dirty_ratio) == (0, 100, 0.01)
    kafka = tuned.as_kafka()
    assert {k: kafka[k] for k in ("cleanup.policy", "delete.retention.ms", "min.compaction.lag.ms")} == {
        "cleanup.policy": "compact",
        "delete.retention.ms": "0",
        "min.compaction.lag.ms": "100",
    }
    assert kafka["min.cleanable.dirty.ratio"] == "0.01"
    assert effective_config({}, NodeConfig(), {}).as_kafka()["min.cleanable.dirty.ratio"] == "0.5"


@pytest.mark.parametrize(
    ("policy", "compacted", "deletes"),
    [("delete", False, True), ("compact", True, False), ("compact,delete", True, True)],
)
def test_policy_says_whether_the_topic_is_compacted_and_whether_retention_deletes(
    policy: str, compacted: bool, deletes: bool
) -> None:
    config = effective_config({"cleanup.policy": policy}, NodeConfig(), {})
    assert (config.compacted, config.deletes) == (compacted, deletes)


def image_with(**keys: dict[str, str]) -> MetadataImage:
    """An image holding dynamic broker configs: ``cluster={...}`` for "", ``node_2={...}`` for node 2."""
    records = [
        rec.config(rec.BROKER_RESOURCE, "" if name == "cluster" else name.removeprefix("node_"), k, v)
        for name, values in keys.items()
        for k, v in values.items()
    ]
    return replay_batch(MetadataImage(), 1, records)


def test_dynamic_defaults_sit_between_the_override_and_the_node_setting() -> None:
    image = image_with(
        cluster={"log.retention.ms": "60000", "log.cleanup.policy": "compact", "min.insync.replicas": "2"},
        node_1={"log.retention.ms": "5000", "unclean.leader.election.enable": "true"},
    )
    node = NodeConfig(node_id=1, retention_bytes=10, flush_messages=1)
    config = effective_config({"min.insync.replicas": "3"}, node, dynamic_topic_defaults(image, 1))
    assert (config.retention_ms, config.retention_bytes, config.min_insync_replicas) == (5000, 10, 3)
    assert (config.cleanup_policy, config.unclean_leader_election, config.flush_messages) == ("compact", True, 1)
    other = effective_config({}, NodeConfig(node_id=2), dynamic_topic_defaults(image, 2))
    assert (other.retention_ms, other.min_insync_replicas, other.unclean_leader_election) == (60000, 2, False)


def test_topic_entries_name_each_source_and_agree_with_the_effective_config() -> None:
    image = image_with(
        cluster={"log.retention.ms": "60000", "log.retention.bytes": "7"}, node_1={"log.retention.ms": "5"}
    )
    node = NodeConfig(node_id=1, flush_messages=1, retention_bytes=99)
    overrides = {"retention.bytes": "20"}
    entries = {e.name: (e.value, e.source) for e in topic_entries(overrides, node, image)}
    assert entries["retention.bytes"] == ("20", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    assert entries["retention.ms"] == ("5", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert entries["flush.messages"] == ("1", ConfigSource.STATIC_BROKER_CONFIG)
    assert entries["max.message.bytes"] == ("1048588", ConfigSource.DEFAULT_CONFIG)
    assert entries["cleanup.policy"] == ("delete", ConfigSource.DEFAULT_CONFIG)
    assert entries["min.cleanable.dirty.ratio"] == ("0.5", ConfigSource.DEFAULT_CONFIG)
    other = {e.name: (e.value, e.source) for e in topic_entries({}, NodeConfig(node_id=2), image)}
    assert other["retention.ms"] == ("60000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert other["retention.bytes"] == ("7", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    effective = effective_config(overrides, node, dynamic_topic_defaults(image, 1)).as_kafka()
    assert {name: value for name, (value, _) in entries.items()} == effective


def test_broker_entries_cluster_wide_and_for_this_broker() -> None:
    image = image_with(cluster={"log.retention.ms": "60000"}, node_1={"message.max.bytes": "2048"})
    node = NodeConfig(node_id=1, min_insync_replicas=2)
    cluster = {e.name: (e.value, e.source) for e in broker_entries("", node, image)}
    assert cluster["log.retention.ms"] == ("60000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert cluster["message.max.bytes"] == ("1048588", ConfigSource.DEFAULT_CONFIG)  # node 1's own is not cluster-wide
    assert cluster["min.insync.replicas"] == ("1", ConfigSource.DEFAULT_CONFIG)
    own = {e.name: (e.value, e.source) for e in broker_entries("1", node, image)}
    assert own["log.retention.ms"] == ("60000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
    assert own["message.max.bytes"] == ("2048", ConfigSource.DYNAMIC_BROKER_CONFIG)
    assert own["min.insync.replicas"] == ("2", ConfigSource.STATIC_BROKER_CONFIG)
    assert own["log.cleanup.policy"] == ("delete", ConfigSource.DEFAULT_CONFIG)
    assert len(own) == len(cluster) == 10
