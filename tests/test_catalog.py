"""The broker's view of a topic: overrides merged over the node's defaults (node/catalog.py)."""

from __future__ import annotations

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
