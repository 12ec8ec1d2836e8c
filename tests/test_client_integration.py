"""The client library against a real ``ketch node`` process (tests/harness.py).

One node for the module; every test has its own topics. Decision: the tests shared nothing but
the node and each started its own (1-3 s each, a dozen of them); the two that change the node
itself keep their own: the restart test and the one that needs ``--auto-create-topics``. What
each test proves is unchanged.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ketch
import ketch.aio
from ketch import NewTopic, TopicPartition
from ketch.errors import (
    InvalidTopicError,
    MessageTooLargeError,
    OffsetOutOfRangeError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from ketch.partitioner import key_partition
from ketch.records import ConsumerRecord
from tests.harness import NodeProcess, start_node


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = start_node(tmp_path_factory.mktemp("client"))
    try:
        yield n
    finally:
        n.close()


@pytest.fixture
def own_node(tmp_path: Path) -> Iterator[NodeProcess]:
    n = start_node(tmp_path)
    try:
        yield n
    finally:
        n.close()


def create(node: NodeProcess, name: str, partitions: int = 1, **configs: str) -> None:
    with ketch.Admin(node.bootstrap) as admin:
        admin.create_topics([NewTopic(name, partitions, 1, configs)])


def consume_all(consumer: ketch.Consumer, count: int, timeout: float = 10) -> list[ConsumerRecord]:
    out: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    while len(out) < count and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=200).values():
            out.extend(records)
    return out


def test_sync_round_trip_keys_headers_offsets(node: NodeProcess) -> None:
    create(node, "orders", 3)
    with ketch.Producer(node.bootstrap, acks="all", linger_ms=2) as producer:
        futures = [
            producer.send("orders", b"v%d" % i, key=b"k%d" % (i % 10), headers=[("n", b"%d" % i)]) for i in range(300)
        ]
        producer.flush()
        metas = [f.get(5) for f in futures]
    for i, meta in enumerate(metas):
        assert meta.topic == "orders" and meta.partition == key_partition(b"k%d" % (i % 10), 3)
    for p in range(3):  # offsets within a partition are 0..n-1 in send order
        offsets = [m.offset for m in metas if m.partition == p]
        assert offsets == list(range(len(offsets)))
    with ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition("orders", p) for p in range(3)])
        records = consume_all(consumer, 300)
        assert consumer.end_offsets([TopicPartition("orders", 0)]) == {
            TopicPartition("orders", 0): sum(1 for m in metas if m.partition == 0)
        }
    assert len(records) == 300
    by_value = {r.value: r for r in records}
    for i, meta in enumerate(metas):
        r = by_value[b"v%d" % i]
        assert (r.partition, r.offset, r.timestamp) == (meta.partition, meta.offset, meta.timestamp)
        assert r.key == b"k%d" % (i % 10) and r.headers == [("n", b"%d" % i)]


@pytest.mark.parametrize("codec", [None, "gzip", "snappy", "lz4", "zstd"])
def test_every_compression_through_the_node(node: NodeProcess, codec: str | None) -> None:
    topic = f"c-{codec}"
    create(node, topic, 1)
    with ketch.Producer(node.bootstrap, acks=1, compression_type=codec) as producer:
        for i in range(500):
            producer.send(topic, b"record %d " % i * 5, partition=0)
    with ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([TopicPartition(topic, 0)])
        records = consume_all(consumer, 500)
    assert [r.value for r in records] == [b"record %d " % i * 5 for i in range(500)]
    assert [r.offset for r in records] == list(range(500))


def test_aio_clients_async_for_and_subscribe(node: NodeProcess) -> None:
    async def main() -> None:
        async with ketch.aio.Admin(node.bootstrap) as admin:
            await admin.create_topics([NewTopic("events", 2, 1)])
        async with ketch.aio.Producer(node.bootstrap, acks=1, batch_size=300) as producer:
            futures = [await producer.send("events", b"e%d" % i) for i in range(200)]
            metas = [await f for f in futures]
        assert {m.partition for m in metas} == {0, 1}  # sticky batches spread over partitions
        async with ketch.aio.Consumer(
            "events", bootstrap_servers=node.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=2000
        ) as consumer:
            assert consumer.assignment() == {TopicPartition("events", 0), TopicPartition("events", 1)}
            seen = []
            async for record in consumer:
                seen.append(record)
                if len(seen) == 200:
                    break
            tp = TopicPartition("events", seen[-1].partition)
            assert await consumer.position(tp) == seen[-1].offset + 1  # advances per record
        assert sorted(r.value or b"" for r in seen) == sorted(b"e%d" % i for i in range(200))

    asyncio.run(main())


def test_offsets_seek_and_times(node: NodeProcess) -> None:
    create(node, "timed", 1)
    tp = TopicPartition("timed", 0)
    with ketch.Producer(node.bootstrap, acks=1) as producer:
        for i in range(10):
            producer.send("timed", b"%d" % i, timestamp_ms=1_000_000 + i * 1000)
        producer.flush()
    with ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="latest") as consumer:
        consumer.assign([tp])
        assert consumer.position(tp) == 10  # latest
        assert consumer.beginning_offsets([tp]) == {tp: 0} and consumer.end_offsets([tp]) == {tp: 10}
        found = consumer.offsets_for_times({tp: 1_003_500})[tp]
        assert found is not None and (found.offset, found.timestamp) == (4, 1_004_000)
        assert consumer.offsets_for_times({tp: 2_000_000}) == {tp: None}
        consumer.seek(tp, 7)
        assert [r.value for r in consume_all(consumer, 3)] == [b"7", b"8", b"9"]
        consumer.seek_to_beginning()
        assert consumer.position(tp) == 0
        assert consume_all(consumer, 10)[0].offset == 0
        consumer.seek_to_end(tp)
        assert consumer.position(tp) == 10 and consumer.poll(timeout_ms=300) == {}


def test_out_of_range_resets_or_raises(node: NodeProcess) -> None:
    create(node, "r", 1)
    tp = TopicPartition("r", 0)
    with ketch.Producer(node.bootstrap) as producer:
        for i in range(5):
            producer.send("r", b"%d" % i)
    with ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 1000)
        assert [r.offset for r in consume_all(consumer, 5)] == [0, 1, 2, 3, 4]
    with ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="none") as consumer:
        consumer.assign([tp])
        consumer.seek(tp, 1000)
        with pytest.raises(OffsetOutOfRangeError, match="1000"):
            consume_all(consumer, 1, timeout=5)
        consumer.seek(tp, 3)
        assert [r.offset for r in consume_all(consumer, 2)] == [3, 4]


def test_admin_topics_and_cluster(node: NodeProcess) -> None:
    with ketch.Admin(node.bootstrap) as admin:
        admin.create_topics([NewTopic("a1", 4, 1, {"retention.ms": "60000"})])
        with pytest.raises(TopicAlreadyExistsError, match="a1"):
            admin.create_topics([NewTopic("a1", 1, 1)])
        with pytest.raises(InvalidTopicError):
            admin.create_topics([NewTopic("bad name!", 1, 1)])
        assert "a1" in admin.list_topics()
        (desc,) = admin.describe_topics(["a1"])
        assert desc.name == "a1" and desc.topic_id and desc.replication_factor == 1
        assert [p.partition for p in desc.partitions] == [0, 1, 2, 3]
        assert all(p.leader == 1 and p.replicas == [1] and p.isr == [1] for p in desc.partitions)
        assert desc.configs["retention.ms"] == "60000"
        cluster = admin.describe_cluster()
        assert cluster.controller_id == 1 and cluster.cluster_id
        assert [(b.node_id, b.host, b.port) for b in cluster.brokers] == [(1, "127.0.0.1", node.port)]
        admin.delete_topics(["a1"])
        assert "a1" not in admin.list_topics()
        with pytest.raises(UnknownTopicOrPartitionError):
            admin.describe_topics(["a1"])


def test_producer_errors_from_the_node(node: NodeProcess) -> None:
    create(node, "small", 1, **{"max.message.bytes": "2000"})
    with ketch.Producer(node.bootstrap, max_request_size=100_000) as producer:
        with pytest.raises(MessageTooLargeError, match="2000"):
            producer.send("small", b"x" * 10_000).get(5)
        with pytest.raises(MessageTooLargeError, match="max_request_size 100000"):
            producer.send("small", b"x" * 200_000).get(5)
        with pytest.raises(UnknownTopicOrPartitionError):
            producer.send("never-created", b"x").get(5)
        assert producer.send("small", b"ok").get(5).offset == 0


def test_auto_created_topic_and_late_subscription(tmp_path: Path) -> None:
    node = start_node(tmp_path, extra_args=["--auto-create-topics", "true"])
    try:
        with ketch.Consumer(
            "late", bootstrap_servers=node.bootstrap, auto_offset_reset="earliest", allow_auto_create_topics=False
        ) as consumer:
            assert consumer.poll(timeout_ms=100) == {} and consumer.assignment() == set()
            with ketch.Producer(node.bootstrap) as producer:  # the producer's metadata creates it
                assert producer.send("late", b"hello").get(5).offset == 0
            records = consume_all(consumer, 1, timeout=5)
            assert [r.value for r in records] == [b"hello"]
            assert consumer.assignment() == {TopicPartition("late", 0)}
    finally:
        node.close()


def test_producer_and_consumer_survive_a_node_restart(own_node: NodeProcess) -> None:
    node = own_node  # restarted below: not the module's
    create(node, "durable", 1)
    tp = TopicPartition("durable", 0)
    with (
        ketch.Producer(node.bootstrap, acks="all", retry_backoff_ms=50) as producer,
        ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest", retry_backoff_ms=50) as consumer,
    ):
        consumer.assign([tp])
        first = [producer.send("durable", b"a%d" % i) for i in range(50)]
        producer.flush()
        assert len(consume_all(consumer, 50)) == 50
        node.restart()
        second = [producer.send("durable", b"b%d" % i) for i in range(50)]
        producer.flush()
        offsets = [f.get(10).offset for f in first + second]
        assert offsets == list(range(100))
        assert [r.value for r in consume_all(consumer, 50)] == [b"b%d" % i for i in range(50)]


def test_send_from_a_delivery_callback(node: NodeProcess) -> None:
    create(node, "cb", 1)
    with ketch.Producer(node.bootstrap) as producer:
        chained: list[ketch.FutureRecordMetadata] = []
        first = producer.send("cb", b"first")
        first.add_callback(lambda meta: chained.append(producer.send("cb", b"after %d" % meta.offset)))
        first.get(5)
        deadline = time.monotonic() + 5
        while not chained and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chained[0].get(5).offset == 1


def test_sync_iteration_and_max_records(node: NodeProcess) -> None:
    create(node, "it", 2)
    with ketch.Producer(node.bootstrap, linger_ms=0) as producer:
        for i in range(30):
            producer.send("it", b"%d" % i, partition=i % 2)
    with ketch.Consumer(
        "it", bootstrap_servers=node.bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=500
    ) as consumer:
        assert consumer.subscription() == {"it"}
        deadline = time.monotonic() + 5
        while not consumer.poll(timeout_ms=0, max_records=1) and time.monotonic() < deadline:
            time.sleep(0.02)  # one record polled; positions move by what poll returns
        few = consumer.poll(timeout_ms=1000, max_records=4)
        assert 1 <= sum(len(v) for v in few.values()) <= 4
        rest = list(consumer)  # stops after 500 ms without records
    assert 1 + sum(len(v) for v in few.values()) + len(rest) == 30
