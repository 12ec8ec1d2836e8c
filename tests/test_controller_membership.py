"""Controller quorum membership (KIP-853) with real ``ketch node`` processes (issue 16, item 4).

Brokers follow an active controller added at runtime: node 4 (controller role only, not in the
static voters) is added and 1-3 removed, so 4 must lead; the brokers, whose
``controller_quorum_voters`` name 1-3 only, stay unfenced and records still go through.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest

import ketch
from ketch import TopicPartition
from ketch.api.v1 import controller_pb2 as cpb
from node.cluster import LocalCluster
from node.process import NodeProcess
from tests.harness import ROOT
from tests.test_reassignment_cluster import read_back

ARGS = [
    "--broker-session-timeout-ms",
    "3000",
    "--broker-heartbeat-interval-ms",
    "300",
    "--replica-lag-time-max-ms",
    "3000",
    "--preferred-election-interval-ms",
    "1000",
    "--default-replication-factor",
    "3",
    "--min-insync-replicas",
    "2",
]
TOPIC, PARTITIONS = "wiped", 3


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", 3, extra_args=ARGS)
    try:
        c.start()
        c.wait_ready(60)
        yield c
    finally:
        c.close()


# -- observing the quorum ----------------------------------------------------------------------


def describe(c: LocalCluster, node_id: int) -> cpb.DescribeQuorumResponse | None:
    node = c.nodes[node_id]
    if node.proc is None or node.proc.poll() is not None:
        return None
    try:
        return c.describe_quorum(node_id, 1.0)
    except grpc.RpcError:
        return None


def voter_dirs(q: cpb.DescribeQuorumResponse) -> dict[int, str]:
    return {v.node_id: v.directory_id for v in q.voters}


def leader_view(c: LocalCluster, timeout_s: float = 10.0) -> cpb.DescribeQuorumResponse:
    """DescribeQuorum from the active controller (the one that knows the observers); waits while
    there is none (an election)."""
    deadline = time.monotonic() + timeout_s
    while True:
        leader = c.active_controller()
        q = describe(c, leader) if leader is not None else None
        if q is not None and q.leader_id == q.node_id:
            return q
        assert time.monotonic() < deadline, f"no active controller answered within {timeout_s}s"
        time.sleep(0.1)


def wait_until(what: str, check: Callable[[], object], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout_s}s: {what}"
        time.sleep(0.1)


def ketch_cli(bootstrap: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KETCH_BOOTSTRAP": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "ketch", *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout
    )


def cluster_change(bootstrap: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``ketch cluster ARGS --bootstrap B``, run again while it answers NOT_CONTROLLER ("retry
    shortly": the first bootstrap server that answers knows no leader yet, after the active
    controller was removed), for up to 10 s, as an operator would."""
    deadline = time.monotonic() + 10
    while True:
        done = ketch_cli(bootstrap, "cluster", *args, "--timeout", "20", "--bootstrap", bootstrap)
        if done.returncode == 0 or "NOT_CONTROLLER" not in done.stderr or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


# -- records -----------------------------------------------------------------------------------


def produce(bootstrap: str, tag: str, count: int) -> dict[TopicPartition, dict[int, bytes]]:
    """``count`` records round-robin over the partitions, acks=all; every one acknowledged."""
    sent: list[tuple[TopicPartition, bytes, Future[ketch.RecordMetadata]]] = []
    with ketch.Producer(bootstrap, acks="all", linger_ms=5) as producer:
        for i in range(count):
            tp = TopicPartition(TOPIC, i % PARTITIONS)
            value = f"{tag}:{i}".encode()
            sent.append((tp, value, producer.send(TOPIC, value, partition=tp.partition)))
        producer.flush(60)
    acked: dict[TopicPartition, dict[int, bytes]] = {}
    for tp, value, fut in sent:
        acked.setdefault(tp, {})[fut.result(timeout=0).offset] = value
    return acked


# -- the operator's path: add-controller, remove-controller -----------------------------------


def start_controller_4(c: LocalCluster, tmp_path: Path) -> NodeProcess:
    """Node 4, controller role only, not in the static voters (``c.voters`` names 1-3): an observer."""
    fourth = NodeProcess(
        tmp_path / "node-4",
        4,
        ["--roles", "controller", "--controller-quorum-voters", c.voters, "--cluster-id", c.cluster_id, *ARGS],
    )
    c.nodes[4] = fourth  # asked by active_controller() and describe() too; c.close() ends it
    return fourth.start()


def test_brokers_follow_an_active_controller_added_at_runtime(cluster: LocalCluster, tmp_path: Path) -> None:
    """The brokers know the controllers of ``controller_quorum_voters`` only. A controller added at
    runtime may become the active one (here it is made the only voter, so it must): the brokers
    learn its address from the voter set and keep registering and heartbeating, none is fenced."""
    c = cluster
    start_controller_4(c, tmp_path)
    with ketch.Admin(c.bootstrap) as admin:
        admin.create_topics([ketch.NewTopic(TOPIC, PARTITIONS, 3, {"min.insync.replicas": "2"})])
    for change in ("add-controller 4", "remove-controller 1", "remove-controller 2", "remove-controller 3"):
        verb, node = change.split()
        done = cluster_change(c.bootstrap, verb, "--node", node)
        assert done.returncode == 0, (change, done.stderr)
    assert leader_view(c).node_id == 4 and list(voter_dirs(leader_view(c))) == [4]
    time.sleep(4)  # longer than the brokers' session timeout (3 s)
    brokers = {b.broker_id: b.fenced for b in c.describe_quorum(4).brokers}
    assert brokers == {1: False, 2: False, 3: False}, f"fenced brokers: {brokers}; node 1's log:\n" + "".join(
        c.nodes[1].log_text().splitlines(keepends=True)[-3:]
    )
    records = produce(c.bootstrap, "after", 30)
    read_back(c.bootstrap, records)
