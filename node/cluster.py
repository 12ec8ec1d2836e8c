"""LocalCluster: N combined broker+controller node processes on one machine.

Used by ``ketch cluster up`` and by the integration and chaos tests. Layout
of its directory (``--data-dir``):

    cluster.json        {"cluster_id", "nodes": [{"node_id", "port", "metrics_port", "kafka_port"}, ...],
                         "kafka_bootstrap": "127.0.0.1:P1,..."}
    node-<id>/          each node's data directory (RocksDB, node.log)
    node-<id>.pid       the node's pid while it runs detached
    tls/                with ``tls=True``: the CA, node-<id>.pem and admin.pem (node/certificates.py)

Rules:
- The voters are every node: ``1@127.0.0.1:P1,2@127.0.0.1:P2,...``; ports are
  chosen once (``base_port`` + i, or free ports) and kept in cluster.json,
  so a cluster started again on the same directory comes back on the same
  addresses with the same cluster id and data.
- ``start()`` starts every node that is not running; ``wait_ready()`` returns
  once a controller is active and every broker is registered and unfenced
  (the Metadata response lists exactly the unfenced brokers).
- ``tls=True`` (``ketch cluster up --tls``) makes a CA and a certificate per node (for
  127.0.0.1 and localhost) and one for the admin client under ``tls/``, and starts every
  node with mutual TLS: ``security_protocol SSL``, ``ssl_client_auth required``, and the
  authorizer on (``authorizer_enabled``; the principal of a certificate is its CN, by
  ``ssl_principal_mapping_rules`` ``RULE:^CN=([^,]+)$/$1/,DEFAULT``): User:admin and the nodes'
  own User:node-<id> are the super users, anyone else needs ACLs; SCRAM logins are on
  (``ketch user add``; such a client still presents a certificate of the CA, which mutual
  TLS requires, and acts as its SCRAM user). The choice is kept in
  cluster.json, so a cluster started again keeps it; ``security`` is how a client (this
  harness, the admin) connects.
- ``kafka=True`` (``ketch cluster up``) gives every node the Kafka protocol listener
  (``--kafka-listen 127.0.0.1:K``, node/kafka/server.py) on ``base_kafka_port`` + i or a free
  port, kept in cluster.json as ``kafka_port`` with ``kafka_bootstrap`` (the Kafka clients'
  bootstrap servers); a cluster started again on the directory keeps them. With ``tls`` it is
  SSL with mutual TLS like the rest (``kafka_security_protocol`` SSL): a Kafka client presents a
  certificate of the cluster's CA (``tls/admin.pem``, or one from ``ketch cluster issue-cert``)
  and acts as its CN, or logs in with SCRAM over it.
- Tests end every process they start: ``close()`` kills what is left.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from pathlib import Path

import grpc

from ketch.api.v1 import controller_pb2 as cpb
from ketch.api.v1 import controller_pb2_grpc, ketch_pb2_grpc
from ketch.api.v1 import ketch_pb2 as pb
from ketch.tls import PLAINTEXT, SecurityConfig, open_channel
from node import certificates
from node.certificates import tls_dir
from node.process import NodeProcess, free_ports

LAYOUT = "cluster.json"
CN_RULE = "RULE:^CN=([^,]+)$/$1/,DEFAULT"  # a certificate's principal is User:<its CN>


class LocalCluster:
    def __init__(
        self,
        root: Path,
        nodes: int = 3,
        *,
        base_port: int | None = None,
        base_metrics_port: int | None = None,
        extra_args: list[str] | None = None,
        detach: bool = False,
        tls: bool = False,
        kafka: bool = False,
        base_kafka_port: int | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        layout_path = root / LAYOUT
        if layout_path.exists():
            layout = json.loads(layout_path.read_text())
        else:
            ports = [base_port + i for i in range(nodes)] if base_port else free_ports(nodes)
            metrics = [base_metrics_port + i for i in range(nodes)] if base_metrics_port else [0] * nodes
            layout = {
                "cluster_id": uuid.uuid4().hex,
                "nodes": [{"node_id": i + 1, "port": ports[i], "metrics_port": metrics[i]} for i in range(nodes)],
                "tls": tls,
            }
        if kafka and "kafka_bootstrap" not in layout:
            count = len(layout["nodes"])
            taken = {n["port"] for n in layout["nodes"]}
            free = [p for p in free_ports(2 * count) if p not in taken][:count]  # none of the gRPC ports
            kafka_ports = [base_kafka_port + i for i in range(count)] if base_kafka_port else free
            for node, kafka_port in zip(layout["nodes"], kafka_ports, strict=True):
                node["kafka_port"] = kafka_port
            layout["kafka_bootstrap"] = ",".join(f"127.0.0.1:{p}" for p in kafka_ports)
        layout_path.write_text(json.dumps(layout, indent=2))
        self.kafka_bootstrap: str = layout.get("kafka_bootstrap", "")
        self.cluster_id: str = layout["cluster_id"]
        self.tls: bool = layout.get("tls", False)
        self.tls_dir = tls_dir(root)
        self.security = self.client_security("admin") if self.tls else PLAINTEXT
        self.super_users = ";".join(["User:admin", *(f"User:node-{n['node_id']}" for n in layout["nodes"])])
        self.voters = ",".join(f"{n['node_id']}@127.0.0.1:{n['port']}" for n in layout["nodes"])
        args = ["--controller-quorum-voters", self.voters, "--cluster-id", self.cluster_id, *(extra_args or [])]
        self.nodes = {
            n["node_id"]: NodeProcess(
                root / f"node-{n['node_id']}",
                n["node_id"],
                [*args, *self._tls_args(n["node_id"]), *_kafka_args(n, self.tls)],
                port=n["port"],
                metrics_port=n["metrics_port"],
                detach=detach,
                security=self.security,
            )
            for n in layout["nodes"]
        }
        self._kafka_ports = {n["node_id"]: n["kafka_port"] for n in layout["nodes"] if "kafka_port" in n}

    def client_security(self, name: str) -> SecurityConfig:
        """Mutual TLS as principal User:NAME, its certificate issued on first use."""
        cert, key = self.tls_dir / f"{name}.pem", self.tls_dir / f"{name}-key.pem"
        if not (cert.exists() and key.exists()):
            cert, key = certificates.issue(self.tls_dir, name)
        return SecurityConfig("SSL", str(self.tls_dir / "ca.pem"), str(cert), str(key))

    def _tls_args(self, node_id: int) -> list[str]:
        if not self.tls:
            return []
        name = f"node-{node_id}"
        if not (self.tls_dir / f"{name}.pem").exists():
            certificates.issue(self.tls_dir, name, certificates.LOCAL_HOSTS)
        return [
            "--security-protocol=SSL",
            "--ssl-client-auth=required",
            f"--ssl-principal-mapping-rules={CN_RULE}",
            "--authorizer-enabled=true",
            "--sasl-enabled-mechanisms=SCRAM-SHA-256,SCRAM-SHA-512",
            f"--super-users={self.super_users}",
            f"--ssl-cafile={self.tls_dir / 'ca.pem'}",
            f"--ssl-certfile={self.tls_dir / name}.pem",
            f"--ssl-keyfile={self.tls_dir / name}-key.pem",
        ]

    def kafka_address(self, node_id: int) -> str:
        """The node's Kafka listener address (``kafka=True``)."""
        return f"127.0.0.1:{self._kafka_ports[node_id]}"

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.nodes.values())

    def pid_file(self, node_id: int) -> Path:
        return self.root / f"node-{node_id}.pid"

    def running_pid(self, node_id: int) -> int | None:
        """The pid in node-<id>.pid if that process is alive."""
        path = self.pid_file(node_id)
        if not path.exists():
            return None
        pid = int(path.read_text().strip() or 0)
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, PermissionError, ValueError):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.exists() and b"ketch" not in cmdline.read_bytes():
            return None  # the pid was reused by another program
        return pid

    def start(self, timeout_s: float = 30.0) -> list[int]:
        """Start every node not already running; returns the ids started."""
        started = []
        for node_id, node in self.nodes.items():
            if self.running_pid(node_id) is not None or (node.proc is not None and node.proc.poll() is None):
                continue
            node.start(timeout_s)
            assert node.proc is not None
            self.pid_file(node_id).write_text(str(node.proc.pid))
            started.append(node_id)
        return started

    def describe_quorum(self, node_id: int, timeout_s: float = 2.0) -> cpb.DescribeQuorumResponse:
        with open_channel(self.nodes[node_id].bootstrap, self.security) as channel:
            response: cpb.DescribeQuorumResponse = controller_pb2_grpc.KetchControllerStub(channel).DescribeQuorum(
                cpb.DescribeQuorumRequest(), timeout=timeout_s
            )
            return response

    def live_brokers(self, node_id: int, timeout_s: float = 2.0) -> list[int]:
        with open_channel(self.nodes[node_id].bootstrap, self.security) as channel:
            response = ketch_pb2_grpc.KetchStub(channel).Metadata(pb.MetadataRequest(), timeout=timeout_s)
            return sorted(b.node_id for b in response.brokers)

    def active_controller(self) -> int | None:
        """The leader id most nodes that answer agree on, or None."""
        votes: dict[int, int] = {}
        for node_id, node in self.nodes.items():
            if node.proc is not None and node.proc.poll() is not None:
                continue
            try:
                leader = self.describe_quorum(node_id, 1.0).leader_id
            except grpc.RpcError:
                continue
            if leader > 0:
                votes[leader] = votes.get(leader, 0) + 1
        return max(votes, key=lambda k: votes[k]) if votes else None

    def wait_ready(self, timeout_s: float = 60.0, brokers: list[int] | None = None) -> None:
        want = sorted(brokers if brokers is not None else self.nodes)
        deadline = time.monotonic() + timeout_s
        last = "no answer"
        while time.monotonic() < deadline:
            for node_id in want:
                try:
                    live = self.live_brokers(node_id, 1.0)
                except grpc.RpcError as exc:
                    last = f"node {node_id}: {exc.code().name}"
                    continue
                if live == want:
                    return
                last = f"node {node_id} sees live brokers {live}"
            time.sleep(0.2)
        raise TimeoutError(f"cluster not ready within {timeout_s}s: {last}")

    def stop_detached(self, timeout_s: float = 30.0) -> list[int]:
        """SIGTERM every node recorded in a pid file (``ketch cluster down``), one at a time
        so each controlled shutdown still finds a quorum; returns the ids stopped."""
        stopped = []
        for node_id in self.nodes:
            pid = self.running_pid(node_id)
            if pid is None:
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.running_pid(node_id) == pid:
                time.sleep(0.05)
            if self.running_pid(node_id) == pid:
                os.kill(pid, signal.SIGKILL)
            self.pid_file(node_id).unlink(missing_ok=True)
            stopped.append(node_id)
        return stopped

    def stop(self) -> None:
        """SIGTERM the nodes one at a time (see ``stop_detached``)."""
        for node_id, node in self.nodes.items():
            node.stop()
            self.pid_file(node_id).unlink(missing_ok=True)

    def close(self) -> None:
        for node_id, node in self.nodes.items():
            node.kill()
            self.pid_file(node_id).unlink(missing_ok=True)


def _kafka_args(node: dict[str, int], tls: bool) -> list[str]:
    if "kafka_port" not in node:
        return []
    return [f"--kafka-listen=127.0.0.1:{node['kafka_port']}", *(["--kafka-security-protocol=SSL"] if tls else [])]
