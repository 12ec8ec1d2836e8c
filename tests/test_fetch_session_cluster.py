"""Follower fetch sessions on three real nodes (node/fetch_session.py, node/replica_fetcher.py).

Each broker's fetch loop keeps one session with each leader it follows, so a round over idle
partitions names none of them. The ISR must not notice: a partition a follower does not name counts
as fetched again, so an idle cluster keeps every follower in sync well past
``replica.lag.time.max.ms``, and records written after the idle spell replicate as before.
"""

from __future__ import annotations

import time
from pathlib import Path

from ketch import Admin, Consumer, NewTopic, Producer, TopicPartition
from node.cluster import LocalCluster
from tests.harness import running_cluster
from tests.test_cli_reassign import metric
from tests.test_cluster_failover import describe_json

LAG_MS = 1000
PARTITIONS = 6


def shrinks(c: LocalCluster) -> float:
    return sum(metric(c, n, "ketch_isr_shrinks_total") for n in c.nodes)


def test_idle_followers_in_a_session_stay_in_sync_and_replicate_what_comes_next(tmp_path: Path) -> None:
    args = ["--replica-lag-time-max-ms", str(LAG_MS)]
    with running_cluster(tmp_path / "cluster", 3, args) as c:
        with Admin(bootstrap_servers=c.bootstrap) as admin:
            admin.create_topics([NewTopic("idle", PARTITIONS, 3, {"min.insync.replicas": "2"})])
        with Producer(c.bootstrap, acks="all") as producer:
            for i in range(PARTITIONS * 5):
                producer.send("idle", f"before-{i}".encode(), partition=i % PARTITIONS).get(30)

            deadline = time.monotonic() + 30
            while not all(metric(c, n, "ketch_fetch_sessions") == 2 for n in c.nodes):  # two followers' each
                assert time.monotonic() < deadline, {n: metric(c, n, "ketch_fetch_sessions") for n in c.nodes}
                time.sleep(0.2)

            before = shrinks(c)
            time.sleep(4 * LAG_MS / 1000)  # idle: the followers' rounds name nothing
            assert shrinks(c) == before  # not one follower dropped (and let back in) meanwhile
            assert [sorted(p["isr"]) for p in describe_json(c, "idle", via=1)["partitions"]] == [[1, 2, 3]] * PARTITIONS

            # acks=all over an ISR of three: every write after the idle spell waits for both followers' sessions
            for i in range(PARTITIONS * 5):
                producer.send("idle", f"after-{i}".encode(), partition=i % PARTITIONS).get(30)

        with Consumer(bootstrap_servers=c.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition("idle", p) for p in range(PARTITIONS)])
            got: list[bytes] = []
            deadline = time.monotonic() + 30
            while len(got) < PARTITIONS * 10 and time.monotonic() < deadline:
                for records in consumer.poll(1000).values():
                    got += [r.value for r in records if r.value is not None]
        assert sorted(got) == sorted(
            [f"before-{i}".encode() for i in range(PARTITIONS * 5)]
            + [f"after-{i}".encode() for i in range(PARTITIONS * 5)]
        )


def test_a_follower_fetches_a_new_partition_without_waiting_out_its_parked_fetch(tmp_path: Path) -> None:
    """A fetch parked at a leader names only what its follower followed when it went out. When the
    follower's set changes (here a new topic; after a failover, a partition whose leader moved), the
    fetcher cuts that fetch short instead of waiting out ``replica.fetch.max.wait.ms``, here 20 s:
    acks=all writes to the new topic, which wait for both followers, complete long before that."""
    wait_ms = 20_000
    args = ["--replica-fetch-max-wait-ms", str(wait_ms), "--replica-lag-time-max-ms", str(3 * wait_ms)]
    with running_cluster(tmp_path / "cluster", 3, args) as c, Admin(bootstrap_servers=c.bootstrap) as admin:
        admin.create_topics([NewTopic("warm", 3, 3, {"min.insync.replicas": "3"})])
        with Producer(c.bootstrap, acks="all") as producer:
            for i in range(3):  # every broker now follows every other; their next fetches park for 20 s
                producer.send("warm", b"w", partition=i).get(30)
            started = time.monotonic()
            admin.create_topics([NewTopic("new", 3, 3, {"min.insync.replicas": "3"})])
            for i in range(3):
                producer.send("new", b"n", partition=i).get(wait_ms / 2000)
            assert time.monotonic() - started < wait_ms / 2000
