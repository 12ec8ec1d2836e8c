"""Broker.topic_config remembers a topic's settings per configs object, and sees every change."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.metadata import MetadataImage
from coordinator.metadata.configs import (
    BROKER_RESOURCE,
    TOPIC_RESOURCE,
    AlterConfigsResource,
    ConfigChange,
    ConfigResource,
)
from ketch.errors import ErrorCode, KetchError
from node.broker import Broker
from node.config import NodeConfig
from node.lifecycle import BrokerEpoch
from replication.rocks_store import NodeStore
from tests.test_metadata_support import Cluster


def alter(c: Cluster, resource: ConfigResource, key: str, value: str | None) -> None:
    response = c.run(c.ctl.incremental_alter_configs([AlterConfigsResource(resource, (ConfigChange(key, value),))]))
    assert all(r.error_code == 0 for r in response.results), response


def test_a_remembered_config_follows_topic_and_broker_changes(tmp_path: Path) -> None:
    c = Cluster()
    c.add_brokers([1])
    c.create("t", 1, 1, configs={"retention.ms": "5000"})
    c.create("u", 1, 1)
    store = NodeStore.open(str(tmp_path / "store"))
    try:
        broker = Broker(NodeConfig(node_id=1, retention_ms=7000), store, BrokerEpoch(), lambda t, i: None)
        image = MetadataImage()

        def follow() -> None:
            nonlocal image
            old, image = image, c.image
            broker.on_metadata(old, image)

        def config(name: str) -> tuple[int, int]:
            topic = broker.image.topic(name)
            assert topic is not None
            first = broker.topic_config(topic)
            assert broker.topic_config(topic) is first  # remembered, not computed again
            return first.retention_ms, first.min_insync_replicas

        follow()
        assert config("t") == (5000, 1) and config("u") == (7000, 1)
        alter(c, ConfigResource(TOPIC_RESOURCE, "t"), "retention.ms", "6000")
        follow()
        assert config("t") == (6000, 1) and config("u") == (7000, 1)
        alter(c, ConfigResource(BROKER_RESOURCE, ""), "log.retention.ms", "8000")  # a cluster-wide default
        follow()
        assert config("t") == (6000, 1) and config("u") == (8000, 1)
        alter(c, ConfigResource(TOPIC_RESOURCE, "t"), "retention.ms", None)
        follow()
        assert config("t") == (8000, 1)
        assert broker.topic_config(None).retention_ms == 8000  # a topic not in the image: defaults
    finally:
        store.close()


def test_the_remembered_leader_replicas_follow_config_and_leadership_changes(tmp_path: Path) -> None:
    """Broker.partition remembers what it found per image: a new image (an altered config, a
    moved leader) is looked up afresh, and a replica that stopped leading is never returned."""
    c = Cluster()
    c.add_brokers([1, 2])
    c.create("t", 1, 2, configs={"retention.ms": "5000"})
    store = NodeStore.open(str(tmp_path / "store"))
    try:
        epoch = BrokerEpoch()
        epoch.value = c.epoch(1)
        broker = Broker(NodeConfig(node_id=1), store, epoch, lambda t, i: None)
        broker.on_metadata(MetadataImage(), c.image)
        topic = c.image.topic("t")
        assert topic is not None and topic.partitions[0].leader == 1
        part, config = broker.partition("t", 0)
        assert broker.partition("t", 0) == (part, config) and config.retention_ms == 5000

        old = c.image
        alter(c, ConfigResource(TOPIC_RESOURCE, "t"), "retention.ms", "6000")
        broker.on_metadata(old, c.image)
        assert broker.partition("t", 0) == (part, broker.topic_config(c.image.topic("t")))
        assert broker.partition("t", 0)[1].retention_ms == 6000

        old = c.image
        c.advance(60_000, alive=[2])  # broker 1 misses its session: fenced, node 2 leads
        broker.on_metadata(old, c.image)
        with pytest.raises(KetchError) as refused:
            broker.partition("t", 0)
        assert refused.value.code == ErrorCode.NOT_LEADER_OR_FOLLOWER
    finally:
        store.close()
