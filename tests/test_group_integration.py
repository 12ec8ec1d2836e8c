"""Consumer groups end to end: real node processes, consumers as processes (tests/group_worker.py), kill -9.

Every test runs a producer thread (steady traffic, values ``v<i>``), worker
processes that commit exactly what they processed after writing it down,
and a monitor thread that reads the group's committed offsets every 50 ms
from whichever broker is the coordinator. What they prove:

- ``test_members_split_partitions_and_a_killed_member_is_replaced``: three
  members of one group on a 6-partition topic hold disjoint assignments that
  cover every partition; after kill -9 of one, the other two cover all six
  within the session timeout (the time is printed); a member started again
  resumes each partition at the group's committed offset.
- ``test_at_least_once_across_consumer_crashes``: cooperative-sticky, two
  members killed -9 at different times (while holding processed but
  uncommitted records) and restarted: every acknowledged record is processed
  at least once; duplicates are counted and printed.
- ``test_commits_survive_a_coordinator_kill``: three nodes, offsets topic
  with replication factor 3; kill -9 the coordinator node: commits continue
  on the new coordinator, and no acknowledged commit is lost.

In all of them committed offsets never go backwards (the monitor checks
every reading), each newly assigned partition starts at its committed
offset, and at the end the committed offsets reach the end of every
partition.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from ketch import Admin, NewTopic, Producer
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from node.cluster import LocalCluster
from node.process import NodeProcess
from tests.harness import start_node

TOPIC = "work"
GROUP = "workers"
PARTITIONS = 6
SESSION_MS = 3000
GROUP_ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]
ROOT = Path(__file__).resolve().parent.parent


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        time.sleep(0.05)


class Workers:
    """Worker processes and the files they write."""

    def __init__(self, root: Path, bootstrap: str, strategy: str = "range", batch_delay_ms: int = 20) -> None:
        self.dir = root / "workers"
        self.batch_delay_ms = batch_delay_ms
        self.dir.mkdir(parents=True, exist_ok=True)
        self.bootstrap = bootstrap
        self.strategy = strategy
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "tests.group_worker",
            "--bootstrap",
            self.bootstrap,
            "--group",
            GROUP,
            "--topic",
            TOPIC,
            "--dir",
            str(self.dir),
            "--name",
            name,
            "--strategy",
            self.strategy,
            "--session-timeout-ms",
            str(SESSION_MS),
            "--batch-delay-ms",
            str(self.batch_delay_ms),
        ]
        log = open(self.dir / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[name] = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=log)
        log.close()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def kill9(self, name: str) -> None:
        self.procs[name].send_signal(signal.SIGKILL)
        self.procs[name].wait(10)

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def assignment(self, name: str) -> set[int] | None:
        path = self.dir / f"{name}.state"
        if not path.exists():
            return None
        return {tp[1] for tp in json.loads(path.read_text())["assignment"]}

    def split(self, names: list[str]) -> bool:
        """The named members' assignments are non-empty, disjoint and cover every partition."""
        got = [self.assignment(n) for n in names]
        if any(not a for a in got):
            return False
        owned = [p for a in got for p in (a or ())]
        return len(owned) == len(set(owned)) == PARTITIONS

    def events(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / f"{name}.events"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []

    def processed(self) -> list[tuple[str, int, int, str]]:
        out = []
        for path in sorted(self.dir.glob("*.records")):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 3:  # a kill -9 may cut the last line
                    out.append((path.stem, int(parts[0]), int(parts[1]), parts[2]))
        return out

    def close(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(5)


def committed_offsets(addresses: list[str], timeout_s: float = 1.0) -> tuple[int, dict[int, int]] | None:
    """(coordinator node id, committed offset per partition), asking the coordinator; None if none answers."""
    for address in addresses:
        try:
            with grpc.insecure_channel(address) as channel:
                found = ketch_pb2_grpc.KetchStub(channel).FindCoordinator(
                    pb.FindCoordinatorRequest(group_id=GROUP), timeout=timeout_s
                )
            if found.status.error_code != 0:
                continue
            with grpc.insecure_channel(f"{found.host}:{found.port}") as channel:
                response = ketch_pb2_grpc.KetchStub(channel).OffsetFetch(
                    pb.OffsetFetchRequest(
                        group_id=GROUP,
                        partitions=[pb.TopicPartitionRef(topic=TOPIC, partition=p) for p in range(PARTITIONS)],
                    ),
                    timeout=timeout_s,
                )
            if response.status.error_code != 0:
                continue
            return found.node_id, {o.partition: o.offset for o in response.offsets if o.offset >= 0}
        except grpc.RpcError:
            continue
    return None


class Monitor(threading.Thread):
    """Reads committed offsets every 50 ms; records every reading and any offset that went backwards."""

    def __init__(self, addresses: Callable[[], list[str]]) -> None:
        super().__init__(daemon=True)
        self.addresses = addresses
        self.readings: list[tuple[float, int, dict[int, int]]] = []
        self.backwards: list[str] = []
        self.stopping = threading.Event()
        self.high: dict[int, int] = {}

    def run(self) -> None:
        while not self.stopping.is_set():
            got = committed_offsets(self.addresses())
            if got is not None:
                node, offsets = got
                self.readings.append((time.time(), node, offsets))
                for p, off in offsets.items():
                    if off < self.high.get(p, -1):
                        self.backwards.append(f"partition {p}: {self.high[p]} -> {off} (coordinator {node})")
                    self.high[p] = max(off, self.high.get(p, -1))
                missing = set(self.high) - set(offsets)
                if missing:
                    self.backwards.append(f"partitions {sorted(missing)} lost their committed offset")
            self.stopping.wait(0.05)


class Traffic(threading.Thread):
    """Sends ``v<i>`` round-robin over the partitions, about ``rate`` per second; keeps the acknowledged ones."""

    def __init__(self, bootstrap: str, rate: float = 150, acks: Any = 1) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.rate, self.acks = bootstrap, rate, acks
        self.acked: set[str] = set()
        self.stopping = threading.Event()
        self.errors = 0

    def run(self) -> None:
        with Producer(
            bootstrap_servers=self.bootstrap,
            acks=self.acks,
            linger_ms=5,
            retry_backoff_ms=50,
            delivery_timeout_ms=30000,
        ) as producer:
            i = 0
            while not self.stopping.is_set():
                value = f"v{i}"
                future = producer.send(TOPIC, value.encode(), partition=i % PARTITIONS)
                future.add_done_callback(lambda f, v=value: self._done(f, v))
                i += 1
                time.sleep(1 / self.rate)
            producer.flush(30)

    def _done(self, future: Any, value: str) -> None:
        if future.exception() is None:
            self.acked.add(value)
        else:
            self.errors += 1


def end_offsets(bootstrap: str) -> dict[int, int]:
    from ketch import Consumer, TopicPartition

    with Consumer(bootstrap_servers=bootstrap) as consumer:
        ends = consumer.end_offsets([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    return {tp.partition: off for tp, off in ends.items()}


def finish(workers: Workers, monitor: Monitor, traffic: Traffic, bootstrap: str) -> dict[str, int]:
    """Stop the traffic, let the workers commit everything, stop them, and check the common properties."""
    traffic.stopping.set()
    traffic.join(60)
    ends = end_offsets(bootstrap)
    wait_until(lambda: all(monitor.high.get(p, -1) >= ends[p] for p in ends), 40, f"commits to reach {ends}")
    workers.stop_all()
    monitor.stopping.set()
    monitor.join(10)
    assert not monitor.backwards, monitor.backwards
    processed = workers.processed()
    values = [v for _, _, _, v in processed]
    missing = traffic.acked - set(values)
    assert not missing, f"{len(missing)} acknowledged records never processed, e.g. {sorted(missing)[:5]}"
    duplicates = len(values) - len(set(values))
    # every newly assigned partition starts at the committed offset (when there is one)
    starts = 0
    for name in workers.procs:
        for e in workers.events(name):
            if e["event"] == "assigned":
                for p, s in e["starts"].items():
                    if s["committed"] is not None:
                        assert s["position"] == s["committed"], f"{name} partition {p}: {s}"
                        starts += 1
    return {
        "acked": len(traffic.acked),
        "processed": len(values),
        "duplicates": duplicates,
        "resumed_at_committed": starts,
    }


def create_topic(bootstrap: str, replication: int) -> None:
    with Admin(bootstrap_servers=bootstrap) as admin:
        admin.create_topics([NewTopic(TOPIC, PARTITIONS, replication, configs={"min.insync.replicas": "1"})])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    n = start_node(tmp_path, extra_args=GROUP_ARGS)
    try:
        yield n
    finally:
        n.close()


def run_single_node(
    tmp_path: Path, node: NodeProcess, strategy: str, body: Callable[[Workers], None], batch_delay_ms: int = 20
) -> dict[str, int]:
    create_topic(node.bootstrap, 1)
    workers = Workers(tmp_path, node.bootstrap, strategy, batch_delay_ms)
    monitor = Monitor(lambda: [node.bootstrap])
    traffic = Traffic(node.bootstrap)
    try:
        monitor.start()
        traffic.start()
        body(workers)
        return finish(workers, monitor, traffic, node.bootstrap)
    finally:
        traffic.stopping.set()
        monitor.stopping.set()
        workers.close()


def test_members_split_partitions_and_a_killed_member_is_replaced(tmp_path: Path, node: NodeProcess) -> None:
    """Suite time: kept as is (~8 s on 2 cores): the only test of a group of consumer processes
    losing one to kill -9; most of it is the 3 s session timeout."""
    timings: dict[str, float] = {}

    def body(workers: Workers) -> None:
        for name in ("a", "b", "c"):
            workers.start(name)
        wait_until(lambda: workers.split(["a", "b", "c"]), 30, "three members to split six partitions")
        assert all(len(workers.assignment(n) or ()) == 2 for n in ("a", "b", "c"))
        time.sleep(1.0)  # let commits flow
        killed = time.monotonic()
        workers.kill9("a")
        wait_until(lambda: workers.split(["b", "c"]), SESSION_MS / 1000 + 10, "b and c to take a's partitions")
        timings["reassigned_s"] = time.monotonic() - killed
        workers.start("a2")  # a consumer started again resumes at the committed offsets
        wait_until(lambda: workers.split(["a2", "b", "c"]), 30, "the restarted member to get partitions")
        time.sleep(1.0)

    figures = run_single_node(tmp_path, node, "range", body)
    print(
        f"\nreassignment after kill -9: {timings['reassigned_s']:.2f}s "
        f"(session timeout {SESSION_MS / 1000}s); {figures}"
    )
    assert timings["reassigned_s"] < SESSION_MS / 1000 + 3
    assert figures["resumed_at_committed"] >= 2


def test_at_least_once_across_consumer_crashes(tmp_path: Path, node: NodeProcess) -> None:
    """Suite time: kept as is (~15 s on 2 cores): the only at-least-once check across consumer
    crashes; two kills, each waiting out the 3 s session timeout and a rejoin."""

    def body(workers: Workers) -> None:
        for name in ("a", "b", "c"):
            workers.start(name)
        wait_until(lambda: workers.split(["a", "b", "c"]), 30, "three members to split six partitions")
        live = ["a", "b", "c"]
        for victim, replacement in (("a", "a2"), ("c", "c2")):
            time.sleep(1.5)
            workers.kill9(victim)
            live.remove(victim)
            wait_until(lambda: workers.split(live), SESSION_MS / 1000 + 10, f"the others to take {victim}'s partitions")
            workers.start(replacement)
            live.append(replacement)
            wait_until(lambda: workers.split(live), 30, f"{replacement} to join")
        time.sleep(1.0)

    # 150 ms of "processing" per batch, between writing it down and committing it: a kill -9 most likely
    # lands there, so the next owner processes that batch again (the duplicates printed)
    figures = run_single_node(tmp_path, node, "cooperative-sticky", body, batch_delay_ms=150)
    print(f"\nat-least-once across two kill -9 (cooperative-sticky): {figures}")
    assert figures["processed"] >= figures["acked"]


def test_commits_survive_a_coordinator_kill(tmp_path: Path) -> None:
    """Suite time: kept as is (~14 s on 2 cores): the only test of a group coordinator killed
    with -9 under committing members; it starts its own three nodes (offsets topic, replication
    factor 3), which no other test here needs."""
    cluster = LocalCluster(
        tmp_path / "cluster",
        3,
        extra_args=[
            *GROUP_ARGS,
            "--offsets-topic-replication-factor",
            "3",
            "--offsets-topic-num-partitions",
            "3",
            "--broker-session-timeout-ms",
            "2000",
            "--broker-heartbeat-interval-ms",
            "200",
            "--replica-lag-time-max-ms",
            "3000",
            "--isr-check-interval-ms",
            "200",
            "--replica-fetch-max-wait-ms",
            "200",
        ],
    )
    workers = Workers(tmp_path, cluster.bootstrap)
    live = lambda: [n.bootstrap for n in cluster.nodes.values() if n.proc is not None and n.proc.poll() is None]  # noqa: E731
    monitor = Monitor(live)
    traffic = Traffic(cluster.bootstrap, acks="all")
    try:
        cluster.start()
        cluster.wait_ready(60)
        create_topic(cluster.bootstrap, 3)
        monitor.start()
        traffic.start()
        workers.start("a")
        workers.start("b")
        wait_until(lambda: workers.split(["a", "b"]), 40, "two members to split six partitions")
        time.sleep(1.5)
        got = committed_offsets(live())
        assert got is not None
        coordinator = got[0]
        killed_at = time.time()
        acked_before: dict[int, int] = {}  # the highest commit each partition had acknowledged before the kill
        for name in ("a", "b"):
            for e in workers.events(name):
                if e["event"] == "committed" and e["time"] < killed_at:
                    for p, off in e["offsets"].items():
                        acked_before[int(p)] = max(off, acked_before.get(int(p), -1))
        cluster.nodes[coordinator].kill()
        after = lambda: [r for r in monitor.readings if r[0] > killed_at + 0.05]  # noqa: E731
        wait_until(lambda: bool(after()), 30, "a new coordinator to answer")
        first = after()[0]
        assert first[1] != coordinator
        lost = {p: (off, first[2].get(p)) for p, off in acked_before.items() if first[2].get(p, -1) < off}
        assert not lost, f"acknowledged commits lost in the failover (acked, now): {lost}"
        wait_until(
            lambda: bool(after()) and all(after()[-1][2].get(p, -1) > off for p, off in acked_before.items()),
            40,
            "commits to continue on the new coordinator",
        )
        moved_s = after()[0][0] - killed_at
        progressed_s = (
            next(r[0] for r in after() if all(r[2].get(p, -1) > off for p, off in acked_before.items())) - killed_at
        )
        figures = finish(workers, monitor, traffic, ",".join(live()))
        print(
            f"\ncoordinator {coordinator} killed: node {first[1]} answered after {moved_s:.2f}s, every partition "
            f"committed past its pre-kill offset after {progressed_s:.2f}s; {figures}"
        )
    finally:
        traffic.stopping.set()
        monitor.stopping.set()
        workers.close()
        cluster.close()
