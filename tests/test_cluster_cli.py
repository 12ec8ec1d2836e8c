"""``ketch cluster up --detach`` / ``describe`` / ``down`` as a user runs them."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
from pathlib import Path

from node.cluster import LocalCluster


def consecutive_free_ports(count: int) -> int:
    """A base port such that base..base+count-1 can all be bound right now."""
    for _ in range(100):
        base = random.randrange(20000, 60000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def ketch(*args: str, bootstrap: str = "", timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KETCH_BOOTSTRAP": bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "ketch", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_detached_cluster_up_describe_down_and_up_again(tmp_path: Path) -> None:
    """Suite time: kept as is (~14 s on 2 cores): the only test of ``ketch cluster up --detach``,
    ``down`` and a second ``up`` on the same data."""
    data = tmp_path / "c"
    port, metrics, kafka = consecutive_free_ports(3), consecutive_free_ports(3), consecutive_free_ports(3)
    up = ["cluster", "up", "--nodes", "3", "--data-dir", str(data), "--port", str(port)]
    up += ["--metrics-port", str(metrics), "--kafka-port", str(kafka), "--detach"]
    kafka_bootstrap = f"127.0.0.1:{kafka},127.0.0.1:{kafka + 1},127.0.0.1:{kafka + 2}"
    try:
        first = ketch(*up)
        assert first.returncode == 0, first.stderr
        assert f"127.0.0.1:{port},127.0.0.1:{port + 1},127.0.0.1:{port + 2}" in first.stdout
        assert f"Kafka bootstrap servers: {kafka_bootstrap}\n" in first.stdout
        assert json.loads((data / "cluster.json").read_text())["kafka_bootstrap"] == kafka_bootstrap
        pids = {i: int((data / f"node-{i}.pid").read_text()) for i in (1, 2, 3)}
        described = json.loads(ketch("cluster", "describe", "--json", bootstrap=f"127.0.0.1:{port}").stdout)
        assert sorted(b["node_id"] for b in described["brokers"]) == [1, 2, 3]
        assert all(b["state"] == "alive" for b in described["brokers"])
        assert described["active_controller"] in (1, 2, 3) and described["raft_term"] >= 1
        # Kill one node; `up` again starts only that one, on the same port and data.
        os.kill(pids[2], 9)
        again = ketch(*up)
        assert again.returncode == 0, again.stderr
        assert "nodes started: 2" in again.stdout and f"Kafka bootstrap servers: {kafka_bootstrap}" in again.stdout
        assert int((data / "node-1.pid").read_text()) == pids[1]
        down = ketch("cluster", "down", "--data-dir", str(data))
        assert down.returncode == 0 and "stopped nodes 1, 2, 3" in down.stdout
        assert not any((data / f"node-{i}.pid").exists() for i in (1, 2, 3))
    finally:
        LocalCluster(data).stop_detached(timeout_s=5)
