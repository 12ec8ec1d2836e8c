"""Transactions end to end on three real nodes (KIP-98 with KIP-890's per-transaction epoch bump).

- Commit is visible to read_committed; abort is invisible to read_committed
  and visible to read_uncommitted; markers are never returned.
- An open transaction holds read_committed back (the last stable offset):
  nothing of it is returned, and ``end_offsets`` under read_committed stays
  below the high watermark until it commits.
- Consume-transform-produce: offsets sent with ``send_offsets_to_transaction``
  become the group's committed offsets only when the transaction commits;
  an aborted transaction leaves them where they were.
- The zombie: two producers share a transactional id; the second's
  ``init_transactions`` fences the first, which then fails with
  PRODUCER_FENCED on every transactional call, and none of its writes is
  ever visible to read_committed.
- Admin: ``list_transactions`` and ``describe_transactions`` show the id,
  its producer id and its state; the CLI prints the same.

One cluster for the module, a topic per test (named after it). Decision: the five tests
shared nothing but the cluster and each started its own (three nodes, 3-6 s on 2 cores); each
has its own topic and transactional ids, so none reads another's records, and nothing here
kills or stops a node. What each test proves is unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ketch import Admin, Consumer, NewTopic, Producer, TopicPartition
from ketch.errors import ErrorCode, KetchError
from node.cluster import LocalCluster
from tests.harness import ROOT, running_cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(
        tmp_path_factory.mktemp("txn") / "cluster",
        3,
        ["--broker-session-timeout-ms", "2000", "--broker-heartbeat-interval-ms", "200"],
    ) as c:
        yield c


@pytest.fixture
def topic(cluster: LocalCluster, request: pytest.FixtureRequest) -> str:
    """This test's own topic (two partitions, replication factor 3), named after the test."""
    name = request.node.name.removeprefix("test_")[:100]
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=3)])
    return name


def read_values(cluster: LocalCluster, topic: str, isolation: str, expected: int, settle_s: float = 1.5) -> list[str]:
    """Every value of ``topic`` from the beginning: waits for ``expected`` values, then ``settle_s`` for any more."""
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    out: list[str] = []
    with Consumer(bootstrap_servers=cluster.bootstrap, isolation_level=isolation, auto_offset_reset="earliest") as c:
        c.assign(tps)
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=200).values():
                out.extend((r.value or b"").decode() for r in records)
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            for records in c.poll(timeout_ms=200).values():
                out.extend((r.value or b"").decode() for r in records)
    return sorted(out)


def transactional(cluster: LocalCluster, tid: str) -> Producer:
    producer = Producer(bootstrap_servers=cluster.bootstrap, transactional_id=tid, linger_ms=2)
    try:
        producer.init_transactions()
    except BaseException:
        producer.close()
        raise
    return producer


def test_commit_is_visible_to_read_committed_and_abort_only_to_read_uncommitted(
    cluster: LocalCluster, topic: str
) -> None:
    with transactional(cluster, "tx-visibility") as producer:
        producer.begin_transaction()
        for i in range(10):
            producer.send(topic, f"c{i:02d}".encode(), partition=i % 2)
        producer.commit_transaction()
        producer.begin_transaction()
        for i in range(10):
            producer.send(topic, f"a{i:02d}".encode(), partition=i % 2)
        producer.flush()  # stored, then aborted: abort_transaction drops what was not sent yet
        producer.abort_transaction()
        producer.begin_transaction()
        producer.send(topic, b"c10", partition=0)
        producer.commit_transaction()
    committed = [f"c{i:02d}" for i in range(11)]
    aborted = [f"a{i:02d}" for i in range(10)]
    assert read_values(cluster, topic, "read_committed", 11) == committed
    assert read_values(cluster, topic, "read_uncommitted", 21) == sorted(committed + aborted)


def test_an_open_transaction_holds_read_committed_back(cluster: LocalCluster, topic: str) -> None:
    tps = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    with transactional(cluster, "tx-open") as producer:
        producer.begin_transaction()
        producer.send(topic, b"pending", partition=0)
        producer.flush()  # stored at the leader, the transaction still open
        with Consumer(bootstrap_servers=cluster.bootstrap, isolation_level="read_committed") as c:
            stable = c.end_offsets(tps)
        with Consumer(bootstrap_servers=cluster.bootstrap) as c:
            high = c.end_offsets(tps)
        assert stable[tps[0]] < high[tps[0]]
        with Consumer(bootstrap_servers=cluster.bootstrap, isolation_level="read_committed") as c:
            c.assign([tps[0]])
            c.seek_to_beginning(tps[0])
            deadline = time.monotonic() + 10
            while c.highwater(tps[0]) is None and time.monotonic() < deadline:
                assert not c.poll(timeout_ms=200)  # nothing below the open transaction
            # Lag counts to the last stable offset (KIP-695), not to the high watermark.
            assert c.highwater(tps[0]) == high[tps[0]] and c.current_lag(tps[0]) == stable[tps[0]] == 0
        assert read_values(cluster, topic, "read_committed", 0, settle_s=1.0) == []
        producer.commit_transaction()
    assert read_values(cluster, topic, "read_committed", 1) == ["pending"]


def test_consume_transform_produce_commits_offsets_with_the_output(cluster: LocalCluster, topic: str) -> None:
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("src", num_partitions=2, replication_factor=3)])
    with Producer(bootstrap_servers=cluster.bootstrap) as plain:
        for i in range(20):
            plain.send("src", f"v{i:02d}".encode(), partition=i % 2)
    src = [TopicPartition("src", 0), TopicPartition("src", 1)]
    with (
        transactional(cluster, "tx-ctp") as producer,
        Consumer(
            "src",
            bootstrap_servers=cluster.bootstrap,
            group_id="ctp",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
        ) as consumer,
    ):
        done = 0
        aborted_once = False
        deadline = time.monotonic() + 60
        while done < 20 and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=200)
            if not batch:
                continue
            producer.begin_transaction()
            for records in batch.values():
                for r in records:
                    producer.send(topic, (r.value or b"").upper(), partition=r.partition)
            offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
            producer.send_offsets_to_transaction(offsets, consumer.group_metadata())
            if not aborted_once:
                aborted_once = True
                producer.abort_transaction()
                for tp in src:  # the abort left the group's offsets where they were (nothing committed)
                    assert consumer.committed(tp) is None
                for tp, records in batch.items():
                    consumer.seek(tp, records[0].offset)  # process the batch again
                continue
            producer.commit_transaction()
            done += sum(len(records) for records in batch.values())
        assert done == 20
        assert {tp: consumer.committed(tp) for tp in src} == {src[0]: 10, src[1]: 10}
    assert read_values(cluster, topic, "read_committed", 20) == [f"V{i:02d}" for i in range(20)]


def test_a_fenced_zombie_never_becomes_visible(cluster: LocalCluster, topic: str) -> None:
    zombie = transactional(cluster, "tx-zombie")
    try:
        zombie.begin_transaction()
        zombie.send(topic, b"zombie-1", partition=0).get(30)  # stored, in the open transaction
        with transactional(cluster, "tx-zombie") as successor:  # fences the zombie, aborting its transaction
            zombie_late = zombie.send(topic, b"zombie-2", partition=1)
            with pytest.raises(KetchError):
                zombie.commit_transaction()
            with pytest.raises(KetchError) as fenced:
                zombie.abort_transaction()
            assert fenced.value.code == ErrorCode.PRODUCER_FENCED
            for call in (zombie.begin_transaction, zombie.commit_transaction, zombie.abort_transaction):
                with pytest.raises(KetchError) as again:
                    call()
                assert again.value.code == ErrorCode.PRODUCER_FENCED
            with pytest.raises(KetchError) as refused:
                zombie.send(topic, b"zombie-3", partition=0)
            assert refused.value.code == ErrorCode.PRODUCER_FENCED
            with pytest.raises(KetchError):
                zombie_late.get(30)
            successor.begin_transaction()
            successor.send(topic, b"successor", partition=0)
            successor.commit_transaction()
    finally:
        zombie.close()
    assert read_values(cluster, topic, "read_committed", 1) == ["successor"]


def described_when_complete(admin: Admin, tid: str) -> Any:
    """The description of ``tid`` once its markers are written (PrepareCommit until then)."""
    deadline = time.monotonic() + 15
    while True:
        (d,) = admin.describe_transactions([tid])
        if d.state == "CompleteCommit" or time.monotonic() > deadline:
            assert d.state == "CompleteCommit", d
            return d
        time.sleep(0.1)


def test_admin_and_cli_list_and_describe_transactions(cluster: LocalCluster, topic: str) -> None:
    with transactional(cluster, "tx-admin") as producer:
        producer.begin_transaction()
        producer.send(topic, b"x", partition=1)
        producer.commit_transaction()
        producer_id = producer._aio._txn.manager.producer_id
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        listed = {t.transactional_id: t for t in admin.list_transactions()}
        assert listed["tx-admin"].producer_id == producer_id
        d = described_when_complete(admin, "tx-admin")
    assert (d.transactional_id, d.producer_id) == ("tx-admin", producer_id)
    assert d.producer_epoch >= 1 and d.start_time_ms == -1 and d.partitions == []  # the commit bumped the epoch

    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def ketch(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [sys.executable, "-m", "ketch", *args, "--bootstrap", cluster.bootstrap],
            input=stdin,
            capture_output=True,
            env=env,
            cwd=ROOT,
            timeout=60,
            check=False,
        )

    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        admin.create_topics([NewTopic("cli-tx", num_partitions=2, replication_factor=3)])
    produced = ketch("produce", "cli-tx", "--transactional-id", "tx-cli", stdin=b"one\ntwo\n")
    assert produced.returncode == 0, produced.stderr.decode()
    consumed = ketch("consume", "cli-tx", "--from-beginning", "--isolation-level", "read_committed", "-n", "2")
    assert sorted(consumed.stdout.decode().split()) == ["one", "two"], consumed.stderr.decode()
    with Admin(bootstrap_servers=cluster.bootstrap) as admin:
        described_when_complete(admin, "tx-cli")
    described = ketch("transactions", "describe", "tx-cli", "--json")
    assert described.returncode == 0, described.stderr.decode()
    assert json.loads(described.stdout)["state"] == "CompleteCommit"
    listing = ketch("transactions", "list")
    assert "tx-cli" in listing.stdout.decode() and "tx-admin" in listing.stdout.decode()
