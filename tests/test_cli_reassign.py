"""``ketch topic reassign`` on two real nodes, as a user types it: start, status, metrics, cancel,
refusals, and a move that completes and deletes the old replica's data.

The throttle is set low (300 KB/s) and the partition holds 1.5 MB in small batches first, so a
move copies for about four seconds: long enough to see it in ``--status`` and in the metrics.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import ketch
from node.cluster import LocalCluster
from tests.harness import running_cluster

THROTTLE = 300_000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    args = ["--reassignment-throttle-bytes", str(THROTTLE), "--preferred-election-interval-ms", "0"]
    with running_cluster(tmp_path / "cluster", 2, args) as c:
        yield c


def ketch_cli(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KETCH_BOOTSTRAP": c.bootstrap}
    return subprocess.run([sys.executable, "-m", "ketch", *args], capture_output=True, text=True, env=env, timeout=60)


def metric(c: LocalCluster, node_id: int, name: str) -> float:
    """Sum of every sample of ``name`` on the node (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{c.nodes[node_id].metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def replicas(c: LocalCluster) -> list[int]:
    out = json.loads(ketch_cli(c, "topic", "describe", "r", "--json").stdout)
    return list(out["partitions"][0]["replicas"])


def test_reassign_status_cancel_and_complete(cluster: LocalCluster) -> None:
    """Suite time: kept as is (~11 s on 2 cores): the only test of ``ketch topic reassign`` as a
    user types it; most of it is a move slow enough (1.5 MB at 300 KB/s) to be seen in
    ``--status`` and the metrics, then the move that completes."""
    c = cluster
    assert ketch_cli(c, "topic", "create", "r", "--partitions", "1", "--replication-factor", "1").returncode == 0
    (src,) = replicas(c)
    dst = 3 - src
    with ketch.Producer(c.bootstrap, acks="all", batch_size=16_384) as producer:  # small batches: a smooth throttle
        for i in range(150):
            producer.send("r", f"{i}:".encode() + b"x" * 10_000, partition=0)
        producer.flush(30)

    started = ketch_cli(c, "topic", "reassign", "r", "--partition", "0", "--replicas", str(dst))
    assert started.returncode == 0, started.stderr
    assert f"reassignment of r-0 started: replicas [{dst}, {src}] (adding [{dst}], removing [{src}])" in started.stdout
    status = json.loads(ketch_cli(c, "topic", "reassign", "--status", "--json").stdout)
    assert status == [
        {"topic": "r", "partition": 0, "replicas": [dst, src], "adding": [dst], "removing": [src], "isr": [src]}
    ]
    table = ketch_cli(c, "topic", "reassign", "--status").stdout
    assert "ADDING" in table and "REMOVING" in table
    controller = c.active_controller()
    assert controller is not None and metric(c, controller, "ketch_reassignments_in_progress") == 1
    deadline = time.monotonic() + 10
    while metric(c, src, "ketch_replication_throttled_bytes_total") == 0:  # the leader sends through the throttle
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert metric(c, src, "ketch_replication_throttle_rate_bytes") == THROTTLE

    cancelled = ketch_cli(c, "topic", "reassign", "r", "--partition", "0", "--cancel")
    assert cancelled.returncode == 0 and f"reassignment of r-0 cancelled: replicas [{src}]" in cancelled.stdout
    assert ketch_cli(c, "topic", "reassign", "--status").stdout.strip() == "no reassignments in progress"
    assert replicas(c) == [src]

    for args, code, text in [
        (("--replicas", "9"), "INVALID_REPLICA_ASSIGNMENT", "broker 9"),
        (("--replicas", "1,1"), "INVALID_REPLICA_ASSIGNMENT", "more than once"),
        (("--cancel",), "NO_REASSIGNMENT_IN_PROGRESS", "r-0"),
    ]:
        refused = ketch_cli(c, "topic", "reassign", "r", "--partition", "0", *args)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode != 0 and len(lines) == 1 and code in lines[0] and text in lines[0], refused.stderr
    missing = ketch_cli(c, "topic", "reassign", "r", "--replicas", "1")
    assert missing.returncode != 0 and "INVALID_REQUEST" in missing.stderr

    assert ketch_cli(c, "topic", "reassign", "r", "--partition", "0", "--replicas", str(dst)).returncode == 0
    deadline = time.monotonic() + 60
    while replicas(c) != [dst]:
        assert time.monotonic() < deadline, ketch_cli(c, "topic", "reassign", "--status").stdout
        time.sleep(0.3)
    assert ketch_cli(c, "topic", "reassign", "--status").stdout.strip() == "no reassignments in progress"
    assert metric(c, src, 'ketch_log_end_offset{partition="0",topic="r"}') == 0  # the old replica is gone
    consumed = ketch_cli(c, "consume", "r", "--from-beginning", "--max-messages", "150")
    assert [line.split(":")[0] for line in consumed.stdout.splitlines()] == [str(i) for i in range(150)]
    done = ketch_cli(c, "topic", "reassign", "r", "--partition", "0", "--replicas", str(dst))
    assert f"r-0 is on replicas [{dst}]: nothing to copy, done" in done.stdout
