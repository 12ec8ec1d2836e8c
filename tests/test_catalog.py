"""The broker's view of a topic: overrides merged over the node's defaults (node/catalog.py)."""

from __future__ import annotations

import pytest

from node.catalog import effective_config
from node.config import NodeConfig


def test_effective_config_merges_overrides_over_broker_defaults() -> None:
    defaults = NodeConfig(retention_ms=1000, max_message_bytes=2048)
    plain = effective_config({}, defaults)
    assert (plain.retention_ms, plain.max_message_bytes, plain.unclean_leader_election) == (1000, 2048, False)
    tuned = effective_config(
        {"retention.ms": "5", "unclean.leader.election.enable": "true", "min.insync.replicas": "2"}, defaults
    )
    assert (tuned.retention_ms, tuned.min_insync_replicas, tuned.unclean_leader_election) == (5, 2, True)
    assert tuned.as_kafka()["unclean.leader.election.enable"] == "true"
    assert tuned.as_kafka()["max.message.bytes"] == "2048"


def test_compaction_settings_come_from_node_defaults_unless_overridden() -> None:
    defaults = NodeConfig(delete_retention_ms=500, min_compaction_lag_ms=7, min_cleanable_dirty_ratio=0.25)
    plain = effective_config({}, defaults)
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
    )
    assert (tuned.delete_retention_ms, tuned.min_compaction_lag_ms, tuned.min_cleanable_dirty_ratio) == (0, 100, 0.01)
    kafka = tuned.as_kafka()
    assert {k: kafka[k] for k in ("cleanup.policy", "delete.retention.ms", "min.compaction.lag.ms")} == {
        "cleanup.policy": "compact",
        "delete.retention.ms": "0",
        "min.compaction.lag.ms": "100",
    }
    assert kafka["min.cleanable.dirty.ratio"] == "0.01"
    assert effective_config({}, NodeConfig()).as_kafka()["min.cleanable.dirty.ratio"] == "0.5"


@pytest.mark.parametrize(
    ("policy", "compacted", "deletes"),
    [("delete", False, True), ("compact", True, False), ("compact,delete", True, True)],
)
def test_policy_says_whether_the_topic_is_compacted_and_whether_retention_deletes(
    policy: str, compacted: bool, deletes: bool
) -> None:
    config = effective_config({"cleanup.policy": policy}, NodeConfig())
    assert (config.compacted, config.deletes) == (compacted, deletes)
