"""A Quix Streams application, exactly-once, through the Kafka listener (issue 18).

Real processes: one single-node cluster with the Kafka listener for the module (three nodes take
15-20 s to start on the shared machine; routing across nodes is tests/test_kafka_clients*.py's
part). The application is a real ``quixstreams.Application`` (confluent-kafka underneath) with
``processing_guarantee="exactly-once"``: a transactional producer, a read_committed consumer, a
RocksDB state store with its changelog topic, and every checkpoint one Kafka transaction (its
output, changelog records and the group's offsets, committed by EndTxn). It runs in its own
process (``python -m tests.test_kafka_quix``: Quix installs signal handlers, so it needs a main
thread) and counts keys: for every input record keyed by a word it writes ``{"word", "count"}``
with the word's running count.

What is checked: the test produces a known input (word number i appears i + 1 times), the
application runs until it has processed every record, and a read_committed reader of the output
sees each word's counts exactly 1..n in order: a record lost, written twice or counted from a
lost state shows up. ``commit_every`` is small so the run is many transactions, not one: a
client below EndTxn v5 (confluent-kafka 2.12) needs Kafka's transaction version 1 to run a
second transaction on the same producer id.

Control (run by hand, not committed): with EndTxn in node/kafka/txn.py forced to transaction
version 2, the application's second transaction fails and this test fails.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiokafka
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from node.cluster import LocalCluster

ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]
WORDS = [f"word{i:02d}" for i in range(12)]
APP_DEADLINE_S = 60.0


def known_input() -> list[str]:
    """Word number i appears i + 1 times, interleaved so every checkpoint mixes words."""
    return [w for round_ in range(len(WORDS)) for i, w in enumerate(WORDS) if i >= round_]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("kafka-quix"), 1, kafka=True, extra_args=ARGS)
    try:
        c.start()
        c.wait_ready(60)
        yield c
    finally:
        c.close()


async def _create(bootstrap: str, topics: list[NewTopic]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        answer = await admin.create_topics(topics)
        assert all(error == 0 for _, error, _ in answer.topic_errors), answer
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, words: list[str]) -> None:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for word in words:
            await producer.send(topic, json.dumps({"word": word}).encode(), key=word.encode())
        await producer.flush()
    finally:
        await producer.stop()


async def _read_committed(bootstrap: str, topic: str, partition_count: int) -> list[tuple[str, dict[str, object]]]:
    """Every committed record of ``topic`` up to its last stable offset, partition by partition."""
    consumer = aiokafka.AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level="read_committed", enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = [aiokafka.TopicPartition(topic, p) for p in range(partition_count)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        read: list[tuple[str, dict[str, object]]] = []
        deadline = time.monotonic() + 30
        for tp in partitions:
            while await consumer.position(tp) < ends[tp]:
                assert time.monotonic() < deadline, f"{tp} stuck at {await consumer.position(tp)} < {ends[tp]}"
                batch = (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
                read.extend((r.key.decode(), json.loads(r.value)) for r in batch if r.key and r.value)
        return read
    finally:
        await consumer.stop()


def _run_app(bootstrap: str, state_dir: Path, guarantee: str, source: str, sink: str, count: int) -> None:
    command = [sys.executable, "-m", "tests.test_kafka_quix", bootstrap, str(state_dir), guarantee, source, sink]
    process = subprocess.Popen([*command, str(count)], cwd=Path(__file__).resolve().parent.parent)
    try:
        assert process.wait(timeout=APP_DEADLINE_S) == 0, f"the Quix application exited with {process.returncode}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_quix_exactly_once_stateful_count(cluster: LocalCluster, tmp_path: Path) -> None:
    bootstrap = cluster.kafka_bootstrap
    assert bootstrap
    words = known_input()
    asyncio.run(_create(bootstrap, [NewTopic("quix-words", 2, 1), NewTopic("quix-counts", 2, 1)]))
    asyncio.run(_produce(bootstrap, "quix-words", words))

    started = time.monotonic()
    _run_app(bootstrap, tmp_path / "state", "exactly-once", "quix-words", "quix-counts", len(words))
    print(f"Quix application: {len(words)} records in {time.monotonic() - started:.1f} s")

    output = asyncio.run(_read_committed(bootstrap, "quix-counts", 2))
    counts: dict[str, list[object]] = {}
    for key, value in output:
        assert value["word"] == key, (key, value)
        counts.setdefault(key, []).append(value["count"])
    expected = Counter(words)
    assert counts == {w: list(range(1, n + 1)) for w, n in expected.items()}


def app_main(bootstrap: str, state_dir: str, guarantee: str, source: str, sink: str, count: str) -> None:
    """The Quix Streams application: a stateful count of keys, stopped after ``count`` outputs."""
    from quixstreams import Application, State

    app = Application(
        broker_address=bootstrap,
        consumer_group=f"quix-{source}",
        auto_offset_reset="earliest",
        processing_guarantee=guarantee,  # type: ignore[arg-type]
        state_dir=state_dir,
        commit_every=10,
        commit_interval=1.0,
        loglevel="INFO",
    )

    def count_word(value: dict[str, str], state: State) -> dict[str, object]:
        seen = int(state.get("count", 0)) + 1
        state.set("count", seen)
        return {"word": value["word"], "count": seen}

    sdf = app.dataframe(app.topic(source, value_deserializer="json"))
    sdf = sdf.apply(count_word, stateful=True)
    sdf.to_topic(app.topic(sink, value_serializer="json"))
    app.run(count=int(count), timeout=APP_DEADLINE_S)


if __name__ == "__main__":
    app_main(*sys.argv[1:])
