"""A broker restarted on its own store finds every local replica again, whatever its partition index.

The store maps each replica (topic id, partition) to a partition log id under a
``pid/<topic id>/<partition as 4 bytes>`` key (node/broker.py). At start a broker
reads those keys back twice: ``replica_logs`` (what it registers with) and the
first image's orphan sweep (replicas of topics deleted while it was away). A
partition whose 4 bytes hold a ``/`` (47 is ``00 00 00 2f``) must read back as
itself: splitting the key at its last ``/`` once made such a broker fail to start.
"""

from __future__ import annotations

from pathlib import Path

from coordinator.metadata import MetadataImage, TopicIdPartition
from node.broker import _PID_PREFIX, Broker
from node.config import NodeConfig
from node.lifecycle import BrokerEpoch
from replication.rocks_store import NodeStore
from tests.batches import make_batch, values
from tests.test_metadata_support import Cluster

# 47, 303 and 559 pack with a "/" (0x2f) as their last byte; 12,032 (0x2f00) as their third
SLASHED = (47, 303, 559)
PARTITIONS = 600


def start(path: Path, c: Cluster) -> tuple[NodeStore, Broker]:
    store = NodeStore.open(str(path))
    epoch = BrokerEpoch()
    epoch.value = c.epoch(1)
    broker = Broker(NodeConfig(node_id=1), store, epoch, lambda t, i: None)
    broker.on_metadata(MetadataImage(), c.image)
    return store, broker


def test_a_restarted_broker_reopens_and_reports_every_replica(tmp_path: Path) -> None:
    c = Cluster()
    c.add_brokers([1])
    tid = c.create("many", PARTITIONS, 1)
    store, broker = start(tmp_path / "b1", c)
    for index in SLASHED:
        part = broker.replicas()[TopicIdPartition(tid, index)]
        part.append(
            make_batch(0, 3, tag=f"p{index}"), max_message_bytes=1 << 20, acks=1, min_insync_replicas=1, sync=True
        )
    store.close()

    c.register(1)  # the restart: a new registration, then the same image
    store, broker = start(tmp_path / "b1", c)
    try:
        logs = broker.replica_logs()
        assert set(logs) == {TopicIdPartition(tid, i) for i in range(PARTITIONS)}
        for index in SLASHED:
            tp = TopicIdPartition(tid, index)
            assert logs[tp][1] == 3
            assert [v for _, v in values(broker.replicas()[tp].read(0, 1 << 20).records)] == [
                f"p{index}:{i}".encode() for i in range(3)
            ]
    finally:
        store.close()


def test_replicas_of_a_topic_deleted_while_the_broker_was_away_are_dropped(tmp_path: Path) -> None:
    c = Cluster()
    c.add_brokers([1])
    c.create("gone", PARTITIONS, 1)
    store, _ = start(tmp_path / "b1", c)
    store.close()

    c.run(c.ctl.delete_topic("gone"))
    c.register(1)
    store, broker = start(tmp_path / "b1", c)
    try:
        assert broker.replicas() == {}
        assert store.meta_items(_PID_PREFIX) == []
    finally:
        store.close()
