"""The chaos cluster: a node/cluster.py LocalCluster wired through the fault proxy.

Rules:
- Nodes are real ``ketch node`` processes (node/process.py) on loopback with short
  timeouts (``NODE_ARGS``: a 2 s broker session, 3 s replica lag), so a fault's
  effect shows within a short run; ``timeouts="defaults"`` (``--timeouts defaults``)
  runs them with node/config.py's defaults instead, what ``ketch cluster up``, compose
  and Helm give a user: the failover figures the README quotes come from those runs.
- Each node ``i`` gets its own ``--controller-quorum-voters`` where every peer ``j``
  is the proxy port of the link ``i→j`` and advertises an inbound proxy port
  (``in-j``) that followers fetch through (see chaos/proxy.py). ``real_address``
  maps advertised ports back to real ones for the workload's clients.
- With ``grpc_proxy=True`` each inbound link forwards to a gRPC proxy port for the node
  (chaos/grpc_proxy.py: the delay-end-txn fault) and ``client_address`` maps advertised
  ports to those proxy ports for clients whose calls the fault should see.
- ``tls=True``: mutual TLS on every connection (node/cluster.py makes the certificates;
  the TCP fault proxy passes TLS through, every address is 127.0.0.1, which the node
  certificates name); ``security`` is what the workload's clients present.
- Optional per-node extras, both needing root or a system package and both undone
  by ``close()``: a small tmpfs as the data directory (the disk-full fault) and
  libfaketime preloaded with a per-node offset file (the clock-jump fault;
  ``DONT_FAKE_MONOTONIC=1`` so only the wall clock moves, as with a real NTP step).
- ``close()`` kills every node, stops the proxy and unmounts, whatever state the run
  left; it is safe to call twice.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc

from chaos.grpc_proxy import GrpcProxy
from chaos.proxy import Proxy
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.tls import open_channel
from node.cluster import LocalCluster
from node.config import NodeConfig
from node.process import NodeProcess, free_ports

SESSION_TIMEOUT_MS = 2000
NODE_ARGS = [
    "--broker-session-timeout-ms",
    str(SESSION_TIMEOUT_MS),
    "--broker-heartbeat-interval-ms",
    "200",
    "--replica-lag-time-max-ms",
    "3000",
    "--isr-check-interval-ms",
    "200",
    "--replica-fetch-max-wait-ms",
    "200",
]
TIMEOUTS = ("test", "defaults")  # NODE_ARGS, or node/config.py's defaults
FAKETIME_LIBS = [
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
]


def faketime_lib() -> str | None:
    return next((p for p in FAKETIME_LIBS if os.path.exists(p)), None)


@contextlib.contextmanager
def patched_environ(extra: dict[str, str]) -> Iterator[None]:
    """NodeProcess passes os.environ to the child; set ``extra`` just while it spawns."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


class ChaosCluster:
    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        tmpfs_mb: int = 0,
        faketime: bool = False,
        extra_args: list[str] | None = None,
        grpc_proxy: bool = False,
        tls: bool = False,
        timeouts: str = "test",
    ) -> None:
        if timeouts not in TIMEOUTS:
            raise ValueError(f"timeouts must be one of {sorted(TIMEOUTS)}, got {timeouts!r}")
        self.root = root
        node_args = NODE_ARGS if timeouts == "test" else []
        self.session_timeout_ms = SESSION_TIMEOUT_MS if timeouts == "test" else NodeConfig().broker_session_timeout_ms
        self.cluster = LocalCluster(root, nodes, extra_args=[*node_args, *(extra_args or [])], tls=tls)
        self.security = self.cluster.security  # how the workload's clients connect
        self.ids = sorted(self.cluster.nodes)
        self.proxy = Proxy()
        pairs = [(i, j) for i in self.ids for j in self.ids if i != j]
        ports = free_ports(len(self.ids) * 2 + len(pairs))
        inbound = dict(zip(self.ids, ports[: len(self.ids)], strict=True))
        links = dict(zip(pairs, ports[len(self.ids) : len(self.ids) + len(pairs)], strict=True))
        self.real_address: dict[tuple[str, int], tuple[str, int]] = {}
        # With grpc_proxy the inbound link goes through chaos/grpc_proxy.py (which can delay and
        # duplicate EndTxn and WriteTxnMarkers); client_address routes clients through it too.
        self.grpc_proxy: GrpcProxy | None = None
        if grpc_proxy:
            grpc_ports = ports[len(self.ids) + len(pairs) :]
            self.grpc_proxy = GrpcProxy({j: (grpc_ports[n], self.node(j).port) for n, j in enumerate(self.ids)})
        self.client_address: dict[tuple[str, int], tuple[str, int]] = {}
        for j in self.ids:
            behind = self.grpc_proxy.port(j) if self.grpc_proxy is not None else self.node(j).port
            self.proxy.add(f"in-{j}", inbound[j], behind)
            self.real_address[("127.0.0.1", inbound[j])] = ("127.0.0.1", self.node(j).port)
            self.client_address[("127.0.0.1", inbound[j])] = ("127.0.0.1", behind)
        for (i, j), port in links.items():
            self.proxy.add(f"{i}->{j}", port, self.node(j).port)
        for i in self.ids:
            voters = ",".join(f"{j}@127.0.0.1:{self.node(j).port if j == i else links[(i, j)]}" for j in self.ids)
            self.node(i).extra_args += [
                "--controller-quorum-voters",
                voters,
                "--advertised-listener",
                f"127.0.0.1:{inbound[i]}",
            ]
        self.mounts: list[Path] = []
        self.tmpfs_mb = tmpfs_mb
        self.faketime = faketime_lib() if faketime else None
        if faketime and self.faketime is None:
            raise RuntimeError("libfaketime is not installed (Debian package libfaketime)")

    def node(self, node_id: int) -> NodeProcess:
        return self.cluster.nodes[node_id]

    @property
    def bootstrap(self) -> str:
        return self.cluster.bootstrap

    def clock_file(self, node_id: int) -> Path:
        return self.root / f"clock-{node_id}"

    def set_clock_offset(self, node_id: int, offset_s: int) -> None:
        """libfaketime re-reads this file at most once a second (FAKETIME_CACHE_DURATION)."""
        self.clock_file(node_id).write_text(f"{offset_s:+d}\n")

    def start(self) -> None:
        if self.tmpfs_mb:
            for i in self.ids:
                path = self.node(i).data_dir
                mount_tmpfs(path, self.tmpfs_mb)
                self.mounts.append(path)
        self.proxy.start()
        if self.grpc_proxy is not None:
            self.grpc_proxy.start()
        for i in self.ids:
            self.start_node(i)
        self.cluster.wait_ready(60)

    def start_node(self, node_id: int) -> None:
        node = self.node(node_id)
        env: dict[str, str] = {}
        if self.faketime:
            if not self.clock_file(node_id).exists():
                self.set_clock_offset(node_id, 0)
            env = {
                "LD_PRELOAD": self.faketime,
                "FAKETIME_TIMESTAMP_FILE": str(self.clock_file(node_id)),
                "FAKETIME_CACHE_DURATION": "1",
                "DONT_FAKE_MONOTONIC": "1",
            }
        with patched_environ(env):
            node.start(60)

    def alive(self, node_id: int) -> bool:
        proc = self.node(node_id).proc
        return proc is not None and proc.poll() is None

    def describe_partition(self, topic: str, partition: int = 0) -> pb.PartitionMetadata | None:
        """The partition as the most up-to-date live node sees it (highest leader epoch; of
        those the smallest ISR): a node that just restarted may still be catching up."""
        views: list[pb.PartitionMetadata] = []
        for i in self.ids:
            if not self.alive(i):
                continue
            try:
                with open_channel(self.node(i).bootstrap, self.security) as channel:
                    response = ketch_pb2_grpc.KetchStub(channel).DescribeTopics(
                        pb.DescribeTopicsRequest(names=[topic]), timeout=1.0
                    )
            except grpc.RpcError:
                continue
            for t in response.topics:
                views.extend(p for p in t.partitions if p.partition == partition and t.error_code == 0)
        if not views:
            return None
        epoch = max(p.leader_epoch for p in views)
        return min((p for p in views if p.leader_epoch == epoch), key=lambda p: len(p.isr))

    def active_controller(self) -> int | None:
        return self.cluster.active_controller()

    def self_declared_leader(self, exclude: int) -> int | None:
        """A live node other than ``exclude`` that answers DescribeQuorum naming itself the Raft
        leader (the new active controller after ``exclude`` died), else None."""
        for i in self.ids:
            if i == exclude or not self.alive(i):
                continue
            try:
                if self.cluster.describe_quorum(i, 0.5).leader_id == i:
                    return i
            except grpc.RpcError:
                continue
        return None

    def close(self) -> None:
        for i in self.ids:
            proc = self.node(i).proc
            if proc is not None and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)  # a paused node must not stay paused
        self.cluster.close()
        self.proxy.close()
        if self.grpc_proxy is not None:
            self.grpc_proxy.close()
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        for i in self.ids:
            with contextlib.suppress(OSError):
                shutil.copy(self.node(i).data_dir / "node.log", logs / f"node-{i}.log")
        for path in self.mounts:
            unmount(path)
        self.mounts.clear()
        for i in self.ids:
            filler = self.node(i).data_dir / "chaos-filler"
            with contextlib.suppress(OSError):
                filler.unlink()


def mount_tmpfs(path: Path, size_mb: int) -> None:
    """A ``size_mb`` MiB tmpfs at ``path`` (created if missing); needs root."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True)


def unmount(path: Path) -> None:
    """Lazy unmount: processes still holding files there do not make it fail."""
    subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    mount_tmpfs(path, size_mb)
    try:
        yield path
    finally:
        unmount(path)
