"""Fast failover on three real node processes (README "Failover").

One cluster for the module with a 4 s broker session, longer than every bound below, so
each test shows its mechanism and not the session:
- kill -9 of a partition leader (not the active controller): the controller's probe finds
  its listener refusing connections and fences it before the session could expire; a
  producer's next write to that partition is acknowledged by the new leader;
- SIGSTOP of a partition leader: the session fences it, and a producer whose request
  hangs on the paused leader abandons it and is acknowledged by the new leader while the
  old one is still paused (not after its 30 s request timeout);
- a metadata refresh whose first bootstrap server is paused, and ``ketch cluster
  describe`` whose first bootstrap server is dead, both answer from the others at once.

And on a cluster of its own, whose probe waits for 6 s of silence: a follower whose fetch
from its killed leader fails names the leader in a heartbeat sent at once, and the controller
probes it then, so the leader is fenced long before it has been silent for 6 s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from ketch import Admin, NewTopic, Producer
from ketch.aio.connection import Connection
from node.cluster import LocalCluster
from node.process import free_ports
from tests.harness import running_cluster

SESSION_S = 4.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root = tmp_path_factory.mktemp("failover") / "cluster"
    with running_cluster(root, 3, ["--broker-session-timeout-ms", str(int(SESSION_S * 1000))]) as c:
        with Admin(c.bootstrap) as admin:
            admin.create_topics([NewTopic("fo", 6, 3, configs={"min.insync.replicas": "2"})])
        yield c


def leaders(cluster: LocalCluster, via: int) -> dict[int, tuple[int, int]]:
    """partition → (leader, leader epoch) as broker ``via`` sees it."""
    with Admin(cluster.nodes[via].bootstrap) as admin:
        (topic,) = admin.describe_topics(["fo"])
    return {p.partition: (p.leader, p.leader_epoch) for p in topic.partitions}


def wait_whole(cluster: LocalCluster, timeout_s: float = 60.0) -> None:
    """Every broker registered and every ISR full again: with min.insync.replicas 2, a fault on a
    leader whose ISR still lacks the node restarted before would (rightly) stop acks=all writes."""
    cluster.wait_ready(timeout_s)
    deadline = time.monotonic() + timeout_s
    while True:
        with Admin(cluster.bootstrap) as admin:
            (topic,) = admin.describe_topics(["fo"])
        if all(len(p.isr) == 3 for p in topic.partitions):
            return
        assert time.monotonic() < deadline, f"ISRs not full: {topic.partitions}"
        time.sleep(0.2)


def victim_and_partition(cluster: LocalCluster) -> tuple[int, int, int]:
    """A broker leading some partition that is not the active controller, the partition, its epoch."""
    controller = cluster.active_controller()
    for partition, (leader, epoch) in sorted(leaders(cluster, 1 if controller != 1 else 2).items()):
        if leader != controller:
            return leader, partition, epoch
    raise AssertionError("the active controller leads every partition")


def acked_within(producer: Producer, partition: int, seconds: float) -> float:
    started = time.monotonic()
    producer.send("fo", b"after", partition=partition).result(timeout=seconds)
    return time.monotonic() - started


def restart(cluster: LocalCluster, node_id: int) -> None:
    cluster.nodes[node_id].kill()
    cluster.nodes[node_id].start(60)
    wait_whole(cluster)


def test_a_killed_leader_is_fenced_on_a_refused_connection_before_its_session(cluster: LocalCluster) -> None:
    victim, partition, epoch = victim_and_partition(cluster)
    witness = next(n for n in cluster.nodes if n != victim)
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        producer.send("fo", b"before", partition=partition).result(timeout=10)
        cluster.nodes[victim].kill()
        try:
            took = acked_within(producer, partition, SESSION_S + 10)
            leader, new_epoch = leaders(cluster, witness)[partition]
        finally:
            restart(cluster, victim)
    print(f"\nkill -9 of broker {victim}: partition {partition} acknowledged again after {took:.2f}s")
    assert leader != victim and new_epoch > epoch
    assert took < SESSION_S - 1.0, f"took {took:.2f}s: fenced by the {SESSION_S}s session, not the probe"


def test_a_paused_leader_is_left_while_it_is_still_paused(cluster: LocalCluster) -> None:
    victim, partition, _ = victim_and_partition(cluster)
    pid = cluster.nodes[victim].proc.pid  # type: ignore[union-attr]
    with Producer(cluster.bootstrap, linger_ms=0) as producer:
        producer.send("fo", b"before", partition=partition).result(timeout=10)
        os.kill(pid, signal.SIGSTOP)
        try:
            took = acked_within(producer, partition, SESSION_S + 6)
        finally:
            os.kill(pid, signal.SIGCONT)
    wait_whole(cluster)
    print(f"\nSIGSTOP of broker {victim}: partition {partition} acknowledged again after {took:.2f}s")
    assert took < SESSION_S + 3.0


def test_metadata_and_commands_do_not_wait_on_a_paused_or_dead_first_bootstrap(cluster: LocalCluster) -> None:
    first = cluster.nodes[1]
    others = [n.bootstrap for i, n in sorted(cluster.nodes.items()) if i != 1]

    async def refresh_around_a_pause() -> float:
        """Refresh once with every node up (the channel to node 1 is then open, as a running client's
        is: a fresh connection to a stopped process fails fast, an open one waits), pause node 1,
        refresh again."""
        conn = Connection([first.bootstrap, *others])
        try:
            await conn.refresh()
            os.kill(first.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            started = time.monotonic()
            await conn.refresh()
            return time.monotonic() - started
        finally:
            os.kill(first.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
            await conn.close()

    took = asyncio.run(refresh_around_a_pause())
    assert took < 1.5, f"the metadata refresh waited {took:.2f}s on the paused first bootstrap server"

    dead = f"127.0.0.1:{free_ports(1)[0]}"
    env = {**os.environ, "KETCH_BOOTSTRAP": ",".join([dead, *others])}
    out = subprocess.run(
        [sys.executable, "-m", "ketch", "cluster", "describe"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "Active controller" in out.stdout


def test_the_cluster_is_whole_again(cluster: LocalCluster) -> None:
    wait_whole(cluster, 30)
    assert sorted(cluster.live_brokers(1)) == [1, 2, 3]


def test_a_killed_leader_reported_by_its_follower_is_probed_without_waiting_for_its_silence(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    probe_s = 6.0
    args = [
        *("--broker-liveness-probe-ms", str(int(probe_s * 1000))),
        *("--broker-heartbeat-interval-ms", "1000"),
        *("--broker-session-timeout-ms", "20000"),
    ]
    with running_cluster(tmp_path_factory.mktemp("reported") / "cluster", 3, args) as c:
        with Admin(c.bootstrap) as admin:
            admin.create_topics([NewTopic("fo", 6, 3, configs={"min.insync.replicas": "2"})])
        victim, partition, epoch = victim_and_partition(c)
        witness = next(n for n in c.nodes if n != victim)
        with Producer(c.bootstrap, linger_ms=0) as producer:
            producer.send("fo", b"before", partition=partition).result(timeout=10)
            c.nodes[victim].kill()
            took = acked_within(producer, partition, probe_s + 10)
        leader, new_epoch = leaders(c, witness)[partition]
    print(f"\nkill -9 of broker {victim}, reported by its followers: acknowledged again after {took:.2f}s")
    assert leader != victim and new_epoch > epoch
    # silence alone would probe after 5-6 s (the last heartbeat came at most 1 s before the kill)
    assert took < probe_s - 2.5, f"took {took:.2f}s: fenced after the probe's silence, not the report"
