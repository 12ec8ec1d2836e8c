"""confluent-kafka's producer through the Kafka listener while the partition leader is killed with -9.

A confluent-kafka (librdkafka) producer with acks=all and idempotence on sends unique values to
one partition (replication factor 3, min.insync.replicas 2) through the Kafka listener; every send
and its delivery report go into a chaos history (chaos/history.py): ``ok`` with the partition and
offset the report names, ``unknown`` for a report with an error (it may or may not be written).
The partition's leader is killed with SIGKILL; once a send made after the kill is acknowledged the
node is restarted and waits to be back in the ISR, so at most one replica is ever down. At the end
the whole partition is read back through the Kafka listener with a confluent-kafka consumer and
the history is judged by chaos/checker.py ``check``: no acknowledged record lost or moved, no
offset holding two values, no phantom, offsets read in order; and, as the producer is idempotent,
no value stored twice (a retried batch the old leader had written is not written again).

The control, in every run: the same history with the final read of one acknowledged record left
out must be judged unsafe with exactly that record lost, so a checker that passes everything would
fail this test.

One kill in CI (~15 s); ``KETCH_SLOW=1`` adds a run of ``SLOW_KILLS`` kills.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from chaos.checker import Verdict, check
from chaos.history import History
from ketch import Admin, NewTopic
from ketch.cli.topic import describe_json
from ketch.errors import KetchError
from node.cluster import LocalCluster
from tests import kafka_clients as kc

SLOW_KILLS = 6
FAILOVER_ARGS = [
    "--broker-session-timeout-ms=2000",
    "--broker-heartbeat-interval-ms=200",
    "--replica-lag-time-max-ms=3000",
    "--isr-check-interval-ms=200",
    "--replica-fetch-max-wait-ms=200",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with kc.kafka_cluster(tmp_path_factory.mktemp("kafka-failover") / "cluster", FAILOVER_ARGS) as c:
        yield c


def partition_view(cluster: LocalCluster, topic: str) -> dict[str, Any]:
    """Partition 0 as the most up-to-date live node sees it (highest leader epoch, then smallest ISR)."""
    views = []
    for node in cluster.nodes.values():
        if node.proc is None or node.proc.poll() is not None:
            continue
        try:
            with Admin(bootstrap_servers=node.bootstrap, request_timeout_ms=5000) as admin:
                views.append(describe_json(admin.describe_topics([topic])[0])["partitions"][0])
        except KetchError:
            continue
    assert views, "no node could describe the topic"
    epoch = max(p["leader_epoch"] for p in views)
    newest: dict[str, Any] = min((p for p in views if p["leader_epoch"] == epoch), key=lambda p: len(p["isr"]))
    return newest


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class RecordedProducer:
    """A confluent-kafka producer on its own thread; every send and delivery report into ``history``.

    librdkafka runs delivery callbacks inside ``poll()``/``flush()`` of the thread calling them,
    so the history is only ever written from this one thread."""

    def __init__(self, bootstrap: str, topic: str, history: History) -> None:
        from confluent_kafka import Producer

        self.topic = topic
        self.history = history
        self.acks: list[tuple[float, float]] = []  # (sent, acknowledged) on the history's clock
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.producer = Producer(
            kc.confluent_config(
                bootstrap,
                acks="all",
                **{
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    "retry.backoff.ms": 50,
                    "message.timeout.ms": 60_000,
                    "request.timeout.ms": 5000,
                    "topic.metadata.refresh.interval.ms": 1000,
                },
            )
        )
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _delivered(self, send_id: int, sent_at: float, err: Any, msg: Any) -> None:
        if err is not None:
            self.errors.append(str(err))
            self.history.record("send", "unknown", id=send_id, proc="confluent", error=str(err))
            return
        self.history.record("send", "ok", id=send_id, proc="confluent", partition=msg.partition(), offset=msg.offset())
        self.acks.append((sent_at, self.history.now()))

    def _run(self) -> None:
        i = 0
        while not self.stop.is_set():
            send_id, value = self.history.next_id(), f"v{i:07d}"
            i += 1
            op = self.history.record("send", "invoke", id=send_id, proc="confluent", value=value)
            self.producer.produce(
                self.topic,
                value=value.encode(),
                partition=0,
                on_delivery=lambda err, msg, s=send_id, t=op["t"]: self._delivered(s, t, err, msg),
            )
            self.producer.poll(0.002)  # delivery reports, and a steady ~500 sends/s
            while len(self.producer) > 2000 and not self.stop.is_set():
                self.producer.poll(0.05)
        left = self.producer.flush(90)
        assert left == 0, f"{left} sends without a delivery report after 90 s"

    def acked_after(self, t: float) -> bool:
        return any(sent >= t for sent, _ in self.acks[-200:])


def read_back(bootstrap: str, topic: str, history: History) -> int:
    """Read partition 0 from the beginning to its high watermark through the Kafka listener."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(kc.confluent_config(bootstrap, **{"group.id": "failover-reader", "enable.auto.commit": False}))
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        read, deadline = 0, time.monotonic() + 60
        while read < high and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            history.record(
                "read", "ok", proc="final", partition=msg.partition(), offset=msg.offset(), value=msg.value().decode()
            )
            read += 1
        assert read == high, f"read {read} of {high} records back"
        return high
    finally:
        consumer.close()


def without_one_acknowledged_read(ops: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """The control: the history minus the final read of the middle acknowledged value."""
    acked = {o["id"] for o in ops if o["f"] == "send" and o["type"] == "ok"}
    acked_values = [o["value"] for o in ops if o["f"] == "send" and o["type"] == "invoke" and o["id"] in acked]
    dropped = acked_values[len(acked_values) // 2]
    return [o for o in ops if not (o["f"] == "read" and o["value"] == dropped)], dropped


def run_kills(cluster: LocalCluster, topic: str, kills: int) -> Verdict:
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(topic, 1, 3, configs={"min.insync.replicas": "2"})])
    wait_until(lambda: len(partition_view(cluster, topic)["isr"]) == 3, 30, "a full ISR")
    history = History()
    producer = RecordedProducer(kc.kafka_bootstrap(cluster), topic, history)
    producer.thread.start()
    try:
        wait_until(lambda: len(producer.acks) > 300, 30, "first acknowledgements")
        for _ in range(kills):
            leader = partition_view(cluster, topic)["leader"]
            killed_at: float = history.record("fault", "start", name="kill-leader", node=leader)["t"]
            cluster.nodes[leader].kill()
            wait_until(functools.partial(producer.acked_after, killed_at), 60, "an acknowledged send after the kill")
            cluster.nodes[leader].start()
            wait_until(lambda: len(partition_view(cluster, topic)["isr"]) == 3, 60, "the restarted node in the ISR")
            history.record("fault", "end", name="kill-leader", node=leader)
            time.sleep(0.5)
    finally:
        producer.stop.set()
        producer.thread.join(120)
    assert not producer.thread.is_alive()
    stored = read_back(kc.kafka_bootstrap(cluster), topic, history)
    verdict = check(history.ops)
    gaps = [u["seconds"] for u in verdict.unavailability]
    print(
        f"\nconfluent-kafka, acks=all + idempotence, {kills} leader kill -9(s): {verdict.acknowledged} acknowledged, "
        f"{stored} stored, {len(verdict.lost)} lost, {len(verdict.duplicates)} duplicates, "
        f"{verdict.unknown} unknown ({producer.errors[:3]}); unavailability {gaps} s"
    )
    assert verdict.final_read and verdict.acknowledged > 300
    assert verdict.safe, {k: getattr(verdict, k)[:5] for k in ("lost", "inconsistent_offsets", "phantoms")}
    assert not verdict.duplicates, f"idempotence let values be stored twice: {verdict.duplicates[:5]}"
    assert all(u["recovered"] for u in verdict.unavailability)

    planted, dropped = without_one_acknowledged_read(history.ops)
    control = check(planted)
    assert not control.safe and [lost["value"] for lost in control.lost] == [dropped], control.lost
    return verdict


def test_leader_killed_once_loses_no_acknowledged_record(cluster: LocalCluster) -> None:
    run_kills(cluster, "failover-once", 1)


@pytest.mark.skipif(not os.environ.get("KETCH_SLOW"), reason=f"{SLOW_KILLS} leader kills: set KETCH_SLOW=1")
def test_leader_killed_repeatedly_loses_no_acknowledged_record(cluster: LocalCluster) -> None:
    run_kills(cluster, "failover-repeated", SLOW_KILLS)
