"""The issue's case on three real nodes: a partition stuck in unclean recovery is marked by
``ketch topic describe`` and gets a leader once the topic is switched to unclean leader election.

A topic with replication factor 2 and min.insync.replicas 1 on nodes a (leader) and b: b is killed
with -9 and leaves the ISR; then a, the last ISR member, is killed with -9 and restarted. Back from an
unclean shutdown, a may lack records it acknowledged, and b (which may hold them) is down, so the
controller keeps the partition offline in recovery until b reports (KIP-966, recovery.py). An operator
who prefers availability runs ``ketch topic alter-config T --set unclean.leader.election.enable=true``:
the same metadata batch elects a (configs.py), and the partition takes writes again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ketch import Admin, NewTopic, Producer
from node.cluster import LocalCluster
from tests.harness import running_cluster

TOPIC = "stuck"


def ketch(cluster: LocalCluster, node_ids: list[int], *args: str) -> subprocess.CompletedProcess[str]:
    bootstrap = ",".join(cluster.nodes[n].bootstrap for n in node_ids)
    env = {**os.environ, "KETCH_BOOTSTRAP": bootstrap}
    return subprocess.run([sys.executable, "-m", "ketch", *args], capture_output=True, text=True, env=env, timeout=60)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_unclean_election_switched_on_ends_a_stuck_recovery(tmp_path: Path) -> None:
    """Suite time: kept as is (~7 s on 2 cores): the only test of switching unclean leader
    election on to end a stuck recovery on real nodes."""
    args = ["--broker-session-timeout-ms", "2000", "--broker-heartbeat-interval-ms", "200"]
    with running_cluster(tmp_path / "cluster", 3, args) as cluster:
        with Admin(bootstrap_servers=cluster.bootstrap) as admin:
            admin.create_topics([NewTopic(TOPIC, 1, 2)])
            replicas = admin.describe_topics([TOPIC])[0].partitions[0].replicas
        a, b = replicas
        (c,) = set(cluster.nodes) - {a, b}
        with Producer(bootstrap_servers=cluster.bootstrap, acks=1) as producer:
            producer.send(TOPIC, b"before").result()

        def partition(nodes: list[int]) -> dict[str, Any]:
            out = ketch(cluster, nodes, "topic", "describe", TOPIC, "--json")
            return json.loads(out.stdout)["partitions"][0] if out.returncode == 0 else {}

        cluster.nodes[b].kill()
        wait_until(lambda: partition([a, c]).get("isr") == [a], 30, f"the ISR to shrink to [{a}]")
        cluster.nodes[a].kill()
        cluster.nodes[a].start()  # back from kill -9: an unclean shutdown, and the ISR's last member
        wait_until(lambda: partition([c, a]).get("recovering") is True, 60, "the partition to enter recovery")
        text = ketch(cluster, [c, a], "topic", "describe", TOPIC).stdout
        row = [line for line in text.splitlines() if line.startswith("0 ")]
        assert row and row[0].split()[1] == "-1" and row[0].endswith("unclean recovery"), text

        unclean = "unclean.leader.election.enable=true"
        switched = ketch(cluster, [c, a], "topic", "alter-config", TOPIC, "--set", unclean)
        assert switched.returncode == 0, switched.stderr
        wait_until(lambda: partition([c, a]).get("leader") == a, 30, f"node {a} to lead")
        now = partition([c, a])
        assert now["recovering"] is False and now["isr"] == [a]
        with Producer(bootstrap_servers=",".join(cluster.nodes[n].bootstrap for n in (a, c)), acks=1) as producer:
            producer.send(TOPIC, b"after").result(timeout=30)
