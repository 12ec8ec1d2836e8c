"""Adding partitions on a real three-node cluster, under a running producer and consumer group.

A topic of 2 partitions (replication factor 3, ``min.insync.replicas=3``, so
every acknowledged record is on all three replicas) gets a producer thread
sending keyless records without pause and a group of two consumers (threads,
each a blocking ``Consumer`` committing after every batch). Then the topic is
grown to 4 partitions with ``Admin.create_partitions``. What it proves:

- the new partitions exist on their brokers like a new topic's: placed with
  the topic's replication factor, leaders spread over the three brokers, the
  whole replica set in the ISR, and acknowledged writes (acks=all over an ISR
  of 3) on them;
- the producer writes to the new partitions after its next metadata refresh
  (``metadata_max_age_ms=1000`` here), with no failed send;
- the group rebalances on its own (a member's metadata refresh sees the
  partition count grow) and the two members split all four partitions;
- every acknowledged record is consumed (duplicates are counted and printed;
  a commit that loses a race with the rebalance may replay a batch).

And the command line: ``ketch topic add-partitions`` grows a topic and
refuses a shrink with one ``ketch: INVALID_PARTITIONS`` line.

Both tests run on one cluster (decision: each started its own three nodes, 2-3 s on 2 cores,
for topics that never meet; nothing they prove changed).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future

import pytest

from ketch import Admin, Consumer, NewPartitions, NewTopic, Producer, RecordMetadata
from ketch.errors import ErrorCode, KetchError
from node.cluster import LocalCluster
from tests.harness import ROOT, running_cluster

TOPIC = "grow"
GROUP = "growers"
ARGS = [
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-min-session-timeout-ms",
    "500",
    "--broker-session-timeout-ms",
    "3000",
    "--broker-heartbeat-interval-ms",
    "200",
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One cluster for both tests: they use their own topics (and only the first a group) and stop no node."""
    with running_cluster(tmp_path_factory.mktemp("partitions") / "cluster", 3, ARGS) as c:
        yield c


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Seconds it took; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout_s, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)
    return time.monotonic() - started


class Sender(threading.Thread):
    """Sends ``v<i>`` without a key until stopped; records every acknowledgment and failure."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="sender", daemon=True)
        self.producer = Producer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=2, batch_size=2048, metadata_max_age_ms=1000
        )
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, tuple[int, int]] = {}  # value -> (partition, offset)
        self.failed: list[str] = []
        self.sent = 0

    def run(self) -> None:
        try:
            i = 0
            while not self.stop.is_set():
                value = f"v{i}"
                self.producer.send(TOPIC, value.encode()).add_done_callback(self._done(value))
                i += 1
                self.sent = i
                time.sleep(0.001)
            self.producer.flush(60)
        finally:
            self.producer.close()

    def _done(self, value: str) -> Callable[[Future[RecordMetadata]], None]:
        def done(fut: Future[RecordMetadata]) -> None:
            with self.lock:
                exc = fut.exception()
                if exc is not None:
                    self.failed.append(f"{value}: {exc}")
                else:
                    meta = fut.result()
                    self.acked[value] = (meta.partition, meta.offset)

        return done

    def partitions(self) -> set[int]:
        with self.lock:
            return {p for p, _ in self.acked.values()}


class Member(threading.Thread):
    """One group member: polls, notes every record, commits after each batch."""

    def __init__(self, name: str, bootstrap: str) -> None:
        super().__init__(name=name, daemon=True)
        self.consumer = Consumer(
            TOPIC,
            bootstrap_servers=bootstrap,
            group_id=GROUP,
            client_id=name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            metadata_max_age_ms=1000,
            session_timeout_ms=3000,
            heartbeat_interval_ms=300,
        )
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.records: list[tuple[int, int, str]] = []  # (partition, offset, value)
        self.assigned: set[int] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                batch = self.consumer.poll(timeout_ms=200)
                with self.lock:
                    self.assigned = {tp.partition for tp in self.consumer.assignment()}
                    for records in batch.values():
                        self.records += [(r.partition, r.offset, bytes(r.value or b"").decode()) for r in records]
                if batch:
                    # A commit refused because the group rebalanced meanwhile: the next owner may replay the batch.
                    with contextlib.suppress(KetchError):
                        self.consumer.commit()
        except BaseException as e:
            self.error = e
        finally:
            self.consumer.close()

    def partitions(self) -> set[int]:
        with self.lock:
            return {p for p, _, _ in self.records}

    def values(self) -> list[str]:
        with self.lock:
            return [v for _, _, v in self.records]


def split(members: list[Member], partitions: int) -> bool:
    owned = [p for m in members for p in m.assigned]
    return all(m.assigned for m in members) and sorted(owned) == list(range(partitions))


def test_partitions_added_under_load_are_written_assigned_and_consumed(cluster: LocalCluster) -> None:
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, 2, 3, configs={"min.insync.replicas": "3"})])
    sender = Sender(cluster.bootstrap)
    members = [Member(f"m{i}", cluster.bootstrap) for i in (1, 2)]
    try:
        sender.start()
        for m in members:
            m.start()
        wait_until(lambda: split(members, 2), 30, "two members sharing partitions 0 and 1")
        wait_until(lambda: all(m.partitions() for m in members), 30, "both members consuming")
        time.sleep(2.0)  # steady traffic on two partitions first

        with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            grown_at = time.monotonic()
            admin.create_partitions({TOPIC: NewPartitions(4)})
            (topic,) = admin.describe_topics([TOPIC])
        assert [p.partition for p in topic.partitions] == [0, 1, 2, 3] and topic.replication_factor == 3
        new = topic.partitions[2:]
        assert all(sorted(p.replicas) == [1, 2, 3] for p in new)
        assert new[0].leader != new[1].leader  # continuing the round-robin: 4 leaders over 3 brokers
        assert sorted({p.leader for p in topic.partitions}) == [1, 2, 3]

        to_write = wait_until(lambda: {2, 3} <= sender.partitions(), 30, "acknowledged writes to partitions 2 and 3")
        to_assign = wait_until(lambda: split(members, 4), 30, "the group splitting all four partitions")
        to_read = wait_until(
            lambda: {2, 3} <= set().union(*(m.partitions() for m in members)), 30, "records read from 2 and 3"
        )
        since = time.monotonic() - grown_at
        time.sleep(2.0)  # more traffic over all four partitions
    finally:
        sender.stop.set()
        sender.join(90)
    try:
        acked = dict(sender.acked)
        assert not sender.failed, f"{len(sender.failed)} failed sends, first: {sender.failed[:3]}"
        assert len(acked) == sender.sent

        def all_consumed() -> bool:
            return set(acked) <= {v for m in members for v in m.values()}

        wait_until(all_consumed, 60, "every acknowledged record consumed")
    finally:
        for m in members:
            m.stop.set()
        for m in members:
            m.join(30)
    for m in members:
        assert m.error is None, f"{m.name}: {m.error!r}"
    consumed = [v for m in members for v in m.values()]
    per_partition = {p: sum(1 for q, _ in acked.values() if q == p) for p in range(4)}
    print(
        f"\n{len(acked)} records acknowledged, {per_partition} per partition; consumed {len(consumed)} "
        f"({len(consumed) - len(set(consumed))} duplicates); after add-partitions: first writes to 2 and 3 "
        f"within {to_write:.1f}s, the group split all four partitions {to_assign:.1f}s later, records from 2 and 3 "
        f"read {to_read:.1f}s later ({since:.1f}s in all)"
    )
    # Each member read its partitions in offset order, and every acknowledged (partition, offset) holds its value.
    where = {v: po for v, po in acked.items()}
    for m in members:
        for p, o, v in m.records:
            assert where.get(v, (p, o)) == (p, o), f"{v} read at {p}/{o}, acknowledged at {where[v]}"

    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        (topic,) = admin.describe_topics([TOPIC])
    assert all(sorted(p.isr) == sorted(p.replicas) == [1, 2, 3] for p in topic.partitions)


def ketch_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketch", *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_add_partitions(cluster: LocalCluster) -> None:
    b = cluster.bootstrap
    assert ketch_cli("topic", "create", "t", "--partitions", "1", "--replication-factor", "2", "-b", b).returncode == 0
    grown = ketch_cli("topic", "add-partitions", "t", "--total", "3", "-b", b)
    assert grown.returncode == 0, grown.stderr
    assert grown.stdout.strip() == "topic t now has 3 partitions"
    with Admin(bootstrap_servers=b) as admin:
        (topic,) = admin.describe_topics(["t"])
        assert len(topic.partitions) == 3 and all(len(p.replicas) == 2 for p in topic.partitions)
        admin.create_partitions({"t": NewPartitions(5)}, validate_only=True)
        assert len(admin.describe_topics(["t"])[0].partitions) == 3
        with pytest.raises(KetchError) as err:
            admin.create_partitions({"nope": NewPartitions(2)})
        assert err.value.code == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION and "nope" in err.value.message
    shrink = ketch_cli("topic", "add-partitions", "t", "--total", "2", "-b", b)
    assert shrink.returncode != 0 and shrink.stdout == ""
    assert shrink.stderr.strip().startswith("ketch: INVALID_PARTITIONS: ")
    assert "has 3 partition(s)" in shrink.stderr and "new total 2" in shrink.stderr
    assert len(shrink.stderr.strip().splitlines()) == 1
    # A producer that knows the topic sends to the new partitions once its metadata is refreshed.
    with Producer(bootstrap_servers=b, metadata_max_age_ms=500) as producer:
        producer.send("t", b"x", partition=0).get(30)
        assert ketch_cli("topic", "add-partitions", "t", "--total", "4", "-b", b).returncode == 0
        time.sleep(1.0)
        assert producer.send("t", b"y", partition=3).get(30).partition == 3
