"""Real Kafka clients against Ketch's Kafka listener: the harness of tests/test_kafka_clients*.py.

What is here, one small function per client and action, each ending what it starts:
- ``kafka_cluster``: three real ``ketch node`` processes (``LocalCluster``) with the Kafka listener
  on, replication factor 3 and min.insync.replicas 2 by default, and a group's first join not
  delayed (``group_initial_rebalance_delay_ms=0``: Kafka's 3 s would be paid by every group in
  the module); every process ends when the block exits.
- ``produce_*``: acks=all with idempotence on; returns each record's (partition, offset) from
  the client's acknowledgement, in send order; a failed send raises with the client's error.
- ``consume_*``: one group member subscribed to the topic, from the earliest offset when the
  group has no commit, reads until ``count`` records or the deadline, commits what it read
  (synchronously) and leaves the group; returns the values read. Reading too few is an
  AssertionError naming what was read.
- ``admin_*``: create a topic (replication factor 3), then list and describe it until the answering
  broker has it (``settled``); returns {"listed", "error", "partitions": {partition: replicas}}.
- ``batch_producers``: the producer id and first sequence of every stored batch, read over gRPC
  (Ketch's own Fetch), to show a client's idempotence was really on.
- ``produce_transactions``, ``copy_exactly_once``: confluent-kafka's transactional producer, and a
  consume-transform-produce loop committing its group's offsets in the transaction.
- ``kcat``: runs Debian's kcat with a timeout; it is killed and reaped whatever happens.

Values are unique per test (``values(prefix, n)``), so a record read twice or from another test
shows up in a comparison of sorted lists.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ketch import Admin
from node.cluster import LocalCluster
from tests.harness import running_cluster

DEADLINE_S = 30.0
SETTLE_S = 10.0
CLUSTER_ARGS = [
    "--default-replication-factor=3",
    "--min-insync-replicas=2",
    "--offsets-topic-replication-factor=3",
    "--group-initial-rebalance-delay-ms=0",
]


def values(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}-{i:05d}".encode() for i in range(count)]


def kafka_bootstrap(cluster: LocalCluster) -> str:
    """Every node's Kafka listener address, as `ketch cluster up` prints it."""
    assert cluster.kafka_bootstrap, "the cluster was started without the Kafka listener"
    return cluster.kafka_bootstrap


@contextmanager
def kafka_cluster(path: Path, extra_args: list[str] | None = None) -> Iterator[LocalCluster]:
    """Three nodes with the Kafka listener (``LocalCluster(kafka=True)``), ready; all end on exit."""
    with running_cluster(path, 3, [*CLUSTER_ARGS, *(extra_args or [])], kafka=True) as cluster:
        yield cluster


def settled(look: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """``look()`` until the topic is listed without error, for up to ``SETTLE_S``; the last answer.

    CreateTopics answers once the controller has the topic; the broker answering the next
    Metadata may not have it yet (UNKNOWN_TOPIC_OR_PARTITION for a moment), as with Kafka."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        answer = look()
        if (answer["listed"] and answer["error"] == 0) or time.monotonic() > deadline:
            return answer
        time.sleep(0.1)


def batch_producers(cluster: LocalCluster, topic: str) -> set[tuple[int, int]]:
    """(producer id, first sequence) of every batch stored in ``topic``, read over gRPC from each
    partition's leader: an idempotent producer's batches carry its id (>= 0), a plain one's -1."""
    from ketch.api.v1 import ketch_pb2 as pb
    from ketch.api.v1 import ketch_pb2_grpc
    from ketch.cli.topic import describe_json
    from ketch.recordbatch import iter_headers
    from ketch.tls import open_channel

    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        partitions = describe_json(admin.describe_topics([topic])[0])["partitions"]
    found = set()
    for p in partitions:
        with open_channel(cluster.nodes[p["leader"]].bootstrap, cluster.security) as channel:
            request = pb.FetchRequest(
                max_wait_ms=0, max_bytes=1 << 20, partitions=[pb.FetchPartition(topic=topic, partition=p["partition"])]
            )
            (answer,) = ketch_pb2_grpc.KetchStub(channel).Fetch(request, timeout=10).partitions
        assert answer.error_code == 0, answer
        found |= {(h.producer_id, h.base_sequence) for h in iter_headers(answer.records)}
    return found


# --- kafka-python ---------------------------------------------------------------------------------


def produce_kafka_python(bootstrap: str, topic: str, records: list[bytes]) -> list[tuple[int, int]]:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    try:
        futures = [producer.send(topic, key=v, value=v) for v in records]
        producer.flush(DEADLINE_S)
        return [(m.partition, m.offset) for m in (f.get(timeout=DEADLINE_S) for f in futures)]
    finally:
        producer.close(timeout=5)


def consume_kafka_python(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    read: list[bytes] = []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while len(read) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                read.extend(r.value for r in batch)
        if len(read) < count:  # with what the member saw: its partitions, positions and commits
            assigned = sorted(consumer.assignment())
            state = {tp.partition: (consumer.position(tp, timeout_ms=5000), consumer.committed(tp)) for tp in assigned}
            raise AssertionError(f"kafka-python read {len(read)} of {count}; (position, committed) {state}: {read}")
        consumer.commit()
    finally:
        consumer.close()
    return read


def admin_kafka_python(bootstrap: str, topic: str, partitions: int) -> dict[str, Any]:
    """Create ``topic``, then list and describe it: {"listed": bool, "partitions": {p: replicas}}."""
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, partitions, 3)])

        def look() -> dict[str, Any]:
            listed = topic in admin.list_topics()
            (described,) = admin.describe_topics([topic])
            return {
                "listed": listed,
                "error": described["error_code"],
                "partitions": {p["partition_index"]: sorted(p["replica_nodes"]) for p in described["partitions"]},
            }

        return settled(look)
    finally:
        admin.close()


# --- aiokafka ---------------------------------------------------------------------------------------


def produce_aiokafka(bootstrap: str, topic: str, records: list[bytes]) -> list[tuple[int, int]]:
    from aiokafka import AIOKafkaProducer

    async def run() -> list[tuple[int, int]]:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
        try:
            await producer.start()
            futures = [await producer.send(topic, key=v, value=v) for v in records]
            metadata = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE_S)
            return [(m.partition, m.offset) for m in metadata]
        finally:
            await producer.stop()

    return asyncio.run(run())


def consume_aiokafka(bootstrap: str, topic: str, group: str, count: int) -> list[bytes]:
    from aiokafka import AIOKafkaConsumer

    async def run() -> list[bytes]:
        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
        )
        read: list[bytes] = []
        try:
            await consumer.start()
            deadline = time.monotonic() + DEADLINE_S
            while len(read) < count and time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    read.extend(r.value for r in batch if r.value is not None)
            await consumer.commit()
        finally:
            await consumer.stop()
        return read

    read = asyncio.run(run())
    assert len(read) >= count, f"aiokafka read {len(read)} of {count}: {read}"
    return read


def admin_aiokafka(bootstrap: str, topic: str, partitions: int) -> dict[str, Any]:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def run() -> dict[str, Any]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            await admin.start()
            await admin.create_topics([NewTopic(topic, partitions, 3)])
            deadline = time.monotonic() + SETTLE_S
            while True:
                listed = topic in await admin.list_topics()
                (described,) = await admin.describe_topics([topic])
                if (listed and described["error_code"] == 0) or time.monotonic() > deadline:
                    return {
                        "listed": listed,
                        "error": described["error_code"],
                        "partitions": {p["partition"]: sorted(p["replicas"]) for p in described["partitions"]},
                    }
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    return asyncio.run(run())


# --- confluent-kafka (librdkafka) -------------------------------------------------------------------


def confluent_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000, **extra}


def produce_confluent(bootstrap: str, topic: str, records: list[bytes], **extra: Any) -> list[tuple[int, int]]:
    from confluent_kafka import Producer

    producer = Producer(confluent_config(bootstrap, acks="all", **{"enable.idempotence": True, **extra}))
    acked: dict[bytes, tuple[int, int]] = {}
    errors: list[Any] = []

    def delivered(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(err)
        else:
            acked[msg.value()] = (msg.partition(), msg.offset())

    for v in records:
        producer.produce(topic, key=v, value=v, on_delivery=delivered)
        producer.poll(0)
    left = producer.flush(DEADLINE_S)
    assert not errors and not left, f"confluent-kafka: {len(errors)} failed ({errors[:3]}), {left} undelivered"
    return [acked[v] for v in records]


def consume_confluent(bootstrap: str, topic: str, group: str, count: int, **extra: Any) -> list[bytes]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        confluent_config(
            bootstrap,
            **{"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False, **extra},
        )
    )
    read: list[bytes] = []
    errors: list[Any] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + DEADLINE_S
        while len(read) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error() is not None:
                errors.append(msg.error())
                continue
            read.append(msg.value())
        if read:
            consumer.commit(asynchronous=False)
    finally:
        consumer.close()
    assert len(read) >= count, f"confluent-kafka read {len(read)} of {count} (errors {errors[:3]}): {read}"
    return read


def admin_confluent(bootstrap: str, topic: str, partitions: int) -> dict[str, Any]:
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(confluent_config(bootstrap))
    admin.create_topics([NewTopic(topic, partitions, 3)])[topic].result(DEADLINE_S)

    def look() -> dict[str, Any]:
        found = admin.list_topics(timeout=DEADLINE_S).topics.get(topic)
        try:
            described = admin.describe_topics(TopicCollection([topic]))[topic].result(DEADLINE_S)
        except KafkaException as exc:
            return {"listed": False, "error": exc.args[0].code(), "partitions": {}}
        return {
            "listed": found is not None and found.error is None,
            "error": 0,
            "partitions": {p.id: sorted(r.id for r in p.replicas) for p in described.partitions},
        }

    return settled(look)


# --- kcat -----------------------------------------------------------------------------------------


def kcat(bootstrap: str, *args: str, stdin: str | None = None, timeout_s: float = DEADLINE_S) -> str:
    """``kcat -b BOOTSTRAP ARGS``; its stdout. A non-zero exit or a timeout fails with its stderr."""
    binary = shutil.which("kcat") or shutil.which("kafkacat")
    assert binary, "kcat is not installed: python scripts/ensure_system_packages.py"
    proc = subprocess.Popen(
        [binary, "-b", bootstrap, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(stdin, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"kcat {' '.join(args)} timed out after {timeout_s}s: {err[-2000:]}") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}: {err[-2000:]}"
    return out


# --- confluent-kafka transactions -------------------------------------------------------------------


def produce_transactions(
    bootstrap: str, topic: str, transactions: list[tuple[list[bytes], bool]], producer_per_transaction: bool = True
) -> None:
    """Each (values, commit) is one transaction of transactional id ``<topic>-producer``, committed
    or aborted. ``producer_per_transaction``: a new producer (InitProducerId) for each one, as Ketch's
    coordinator bumps the epoch at every EndTxn and these clients (EndTxn below v5) keep theirs
    (node/kafka/txn.py); False: one producer for all, as a Kafka application would."""
    from confluent_kafka import Producer

    config = confluent_config(bootstrap, **{"transactional.id": f"{topic}-producer", "linger.ms": 5})
    producer = None
    for records, commit in transactions:
        if producer is None or producer_per_transaction:
            producer = Producer(config)
            producer.init_transactions(DEADLINE_S)
        producer.begin_transaction()
        for v in records:
            producer.produce(topic, key=v, value=v, partition=0)
        producer.flush(DEADLINE_S)
        if commit:
            producer.commit_transaction(DEADLINE_S)
        else:
            producer.abort_transaction(DEADLINE_S)


def copy_exactly_once(bootstrap: str, source: str, target: str, group: str, count: int) -> int:
    """Consume-transform-produce: read ``count`` committed records of ``source`` in ``group``, write
    each upper-cased to ``target`` and commit the group's offsets inside the same transaction
    (AddOffsetsToTxn, TxnOffsetCommit, EndTxn); returns the offset committed for partition 0."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer(
        confluent_config(
            bootstrap,
            **{
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            },
        )
    )
    producer = Producer(confluent_config(bootstrap, **{"transactional.id": f"{group}-copier"}))
    try:
        producer.init_transactions(DEADLINE_S)
        consumer.subscribe([source])
        producer.begin_transaction()
        read, deadline = 0, time.monotonic() + DEADLINE_S
        while read < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            producer.produce(target, key=msg.key(), value=msg.value().upper(), partition=0)
            read += 1
        assert read == count, f"copied {read} of {count}"
        positions = consumer.position(consumer.assignment())
        producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata(), DEADLINE_S)
        producer.commit_transaction(DEADLINE_S)
        (committed,) = consumer.committed([TopicPartition(source, 0)], timeout=DEADLINE_S)
        offset: int = committed.offset
        return offset
    finally:
        consumer.close()


async def aiokafka_create_topics(bootstrap: str, topics: list[NewTopic]) -> None:
    """Create ``topics`` through the Kafka listener with aiokafka's admin client; every one must succeed."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        answer = await admin.create_topics(topics)
        assert all(error == 0 for _, error, _ in answer.topic_errors), answer
    finally:
        await admin.close()
