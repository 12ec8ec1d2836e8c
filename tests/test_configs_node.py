"""Altered configs on a real node: Admin.incremental_alter_configs reaches describe and what the broker does."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from ketch import Admin, ConfigResource, ConfigSource, NewTopic, Producer, TopicPartition
from ketch.errors import ErrorCode, InvalidConfigError, KetchError, UnknownTopicOrPartitionError
from node.process import NodeProcess
from tests.harness import start_node

T, U = ConfigResource.topic("t"), ConfigResource.topic("u")
CLUSTER, NODE_1 = ConfigResource.broker(), ConfigResource.broker(1)


def value(admin: Admin, resource: ConfigResource, key: str) -> tuple[str, ConfigSource]:
    entry = admin.describe_configs([resource])[resource][key]
    return entry.value, entry.source


def wait_trimmed(admin: Admin, topic: str, end: int, timeout_s: float = 20.0) -> None:
    tp = TopicPartition(topic, 0)
    deadline = time.monotonic() + timeout_s
    while admin.list_offsets({tp: "earliest"})[tp] < end:
        assert time.monotonic() < deadline, f"{topic} was not trimmed by retention"
        time.sleep(0.1)


def test_altered_retention_reaches_describe_and_the_log(tmp_path: Path) -> None:
    node = start_node(tmp_path, extra_args=["--retention-check-interval-ms", "200"])
    try:
        with Admin(node.bootstrap) as admin, Producer(node.bootstrap, acks=1) as producer:
            admin.create_topics([NewTopic("t", 1, 1), NewTopic("u", 1, 1)])
            for topic in ("t", "u"):
                for i in range(5):
                    producer.send(topic, b"%d" % i)
            producer.flush()
            time.sleep(1.2)  # the records are now older than the 1 s set below; the default keeps them 7 days
            assert value(admin, T, "retention.ms") == ("604800000", ConfigSource.DEFAULT_CONFIG)

            admin.incremental_alter_configs({T: {"retention.ms": 1000}})
            assert value(admin, T, "retention.ms") == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
            assert admin.describe_topics(["t"])[0].configs["retention.ms"] == "1000"  # the broker's effective value
            wait_trimmed(admin, "t", 5)
            assert admin.list_offsets({TopicPartition("u", 0): "earliest"})[TopicPartition("u", 0)] == 0

            # A cluster-wide default reaches the topic without an override; t keeps its own.
            admin.incremental_alter_configs({CLUSTER: {"log.retention.ms": "1000"}})
            assert value(admin, U, "retention.ms") == ("1000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
            assert value(admin, CLUSTER, "log.retention.ms") == ("1000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
            wait_trimmed(admin, "u", 5)

            # One broker's own value wins over the cluster-wide one; deleting both falls back to the default.
            admin.incremental_alter_configs({NODE_1: {"log.retention.ms": "2000"}})
            assert value(admin, U, "retention.ms") == ("2000", ConfigSource.DYNAMIC_BROKER_CONFIG)
            assert value(admin, NODE_1, "log.retention.ms") == ("2000", ConfigSource.DYNAMIC_BROKER_CONFIG)
            assert value(admin, CLUSTER, "log.retention.ms") == ("1000", ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG)
            admin.incremental_alter_configs({NODE_1: {"log.retention.ms": None}, CLUSTER: {"log.retention.ms": None}})
            assert value(admin, U, "retention.ms") == ("604800000", ConfigSource.DEFAULT_CONFIG)
            assert value(admin, T, "retention.ms") == ("1000", ConfigSource.DYNAMIC_TOPIC_CONFIG)
    finally:
        node.close()


def test_static_settings_show_as_the_nodes(tmp_path: Path) -> None:
    node = start_node(tmp_path, extra_args=["--min-insync-replicas", "1", "--retention-bytes", "1000000"])
    try:
        with Admin(node.bootstrap) as admin:
            admin.create_topics([NewTopic("t", 1, 1)])
            assert value(admin, T, "retention.bytes") == ("1000000", ConfigSource.STATIC_BROKER_CONFIG)
            assert value(admin, T, "min.insync.replicas") == ("1", ConfigSource.DEFAULT_CONFIG)  # Ketch's own default
            assert value(admin, NODE_1, "log.retention.bytes") == ("1000000", ConfigSource.STATIC_BROKER_CONFIG)
            assert value(admin, CLUSTER, "log.retention.bytes") == ("-1", ConfigSource.DEFAULT_CONFIG)
    finally:
        node.close()


def test_bad_keys_and_values_are_refused_per_resource(node: NodeProcess) -> None:
    with Admin(node.bootstrap) as admin:
        admin.create_topics([NewTopic("t", 1, 1)])
        with pytest.raises(InvalidConfigError, match=re.escape("retention.ms='soon' is not an integer")):
            admin.incremental_alter_configs({T: {"retention.ms": "soon"}})
        with pytest.raises(InvalidConfigError, match=re.escape("retention.hours")):
            admin.incremental_alter_configs({T: {"retention.hours": "1"}})
        with pytest.raises(UnknownTopicOrPartitionError, match=re.escape("'missing'")):
            admin.incremental_alter_configs({ConfigResource.topic("missing"): {"retention.ms": "1"}})
        with pytest.raises(InvalidConfigError, match=re.escape("log.retention.ms")):  # it names the accepted keys
            admin.incremental_alter_configs({CLUSTER: {"log.segment.bytes": "1"}})
        with pytest.raises(KetchError) as err:
            admin.incremental_alter_configs({ConfigResource.broker(9): {"log.retention.ms": "1"}})
        assert err.value.code == ErrorCode.BROKER_ID_NOT_REGISTERED
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.describe_configs([ConfigResource.topic("missing")])
        # A refused resource does not stop the others.
        with pytest.raises(InvalidConfigError, match=re.escape("min.cleanable.dirty.ratio")):
            admin.incremental_alter_configs(
                {T: {"retention.ms": "5"}, CLUSTER: {"log.cleaner.min.cleanable.ratio": "2"}}
            )
        assert value(admin, T, "retention.ms") == ("5", ConfigSource.DYNAMIC_TOPIC_CONFIG)
        admin.incremental_alter_configs({T: {"retention.ms": "9"}, CLUSTER: {"log.retention.ms": "9"}}, True)
        assert value(admin, T, "retention.ms") == ("5", ConfigSource.DYNAMIC_TOPIC_CONFIG)  # validate_only
        assert value(admin, CLUSTER, "log.retention.ms") == ("604800000", ConfigSource.DEFAULT_CONFIG)
