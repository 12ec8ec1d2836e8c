"""Named listeners on real nodes (node/listeners.py): three combined nodes, each with a plaintext
INTERNAL listener (Raft, controller RPCs, replica fetching) advertised as 127.0.0.1 and an SSL
EXTERNAL listener advertised as ``localhost``; node 1 also has a plaintext ONLY1 listener.

The tests show: Metadata through each listener names every broker at that listener's address
and no other; a broker without the listener is left out; FindCoordinator answers the same way;
a client bootstrapped on the SSL listener produces with acks=all to three replicas and
min.insync.replicas 3, which only the followers' fetches over INTERNAL can satisfy; the SSL
listener refuses a plaintext client; a node whose map names an unknown listener exits 2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from ketch import Admin, Consumer, NewTopic, Producer, TopicPartition
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.tls import PLAINTEXT, SecurityConfig, open_channel
from node import certificates
from node.process import NodeProcess, free_ports

pytestmark = pytest.mark.timeout(120)
TOPIC = "listeners-demo"


class Cluster:
    def __init__(self, root: Path) -> None:
        certificates.issue(root / "tls", "node", ["localhost", "127.0.0.1"])
        self.client_cert = certificates.issue(root / "tls", "client")
        self.tls = root / "tls"
        ports = free_ports(7)
        self.internal = dict(zip((1, 2, 3), ports[0:3], strict=True))
        self.external = dict(zip((1, 2, 3), ports[3:6], strict=True))
        self.only1 = ports[6]
        voters = ",".join(f"{i}@127.0.0.1:{p}" for i, p in self.internal.items())
        self.nodes: dict[int, NodeProcess] = {}
        for i in (1, 2, 3):
            listeners = f"INTERNAL://127.0.0.1:{self.internal[i]},EXTERNAL://127.0.0.1:{self.external[i]}"
            advertised = f"EXTERNAL://localhost:{self.external[i]}"
            protocols = "INTERNAL:PLAINTEXT,EXTERNAL:SSL"
            if i == 1:
                listeners += f",ONLY1://127.0.0.1:{self.only1}"
                protocols += ",ONLY1:PLAINTEXT"
            args = [
                *("--listeners", listeners, "--advertised-listeners", advertised),
                *("--listener-security-protocol-map", protocols),
                *("--inter-broker-listener-name", "INTERNAL", "--controller-listener-names", "INTERNAL"),
                *("--controller-quorum-voters", voters, "--cluster-id", "listeners-test"),
                *("--ssl-cafile", str(self.tls / "ca.pem"), "--ssl-certfile", str(self.tls / "node.pem")),
                *("--ssl-keyfile", str(self.tls / "node-key.pem"), "--ssl-client-auth", "required"),
                *("--default-replication-factor", "3", "--min-insync-replicas", "3"),
                *("--offsets-topic-num-partitions", "1", "--broker-session-timeout-ms", "3000"),
            ]
            self.nodes[i] = NodeProcess(root / f"n{i}", i, args, port=self.internal[i], metrics_port=-1)

    @property
    def ssl(self) -> SecurityConfig:
        cert, key = self.client_cert
        return SecurityConfig("SSL", str(self.tls / "ca.pem"), str(cert), str(key))

    def external_bootstrap(self) -> str:
        return ",".join(f"localhost:{p}" for p in self.external.values())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("listeners"))
    try:
        for node in c.nodes.values():
            node.start()
        for node in c.nodes.values():
            node.wait_broker_alive(30)
        yield c
    finally:
        for node in c.nodes.values():
            node.stop(10)


def metadata(address: str, security: SecurityConfig, brokers: int = 3) -> pb.MetadataResponse:
    deadline = time.monotonic() + 20
    with open_channel(address, security) as channel:
        stub = ketch_pb2_grpc.KetchStub(channel)
        while True:  # until every broker's registration is visible here
            response = stub.Metadata(pb.MetadataRequest(), timeout=5)
            if len(response.brokers) == brokers or time.monotonic() > deadline:
                return response
            time.sleep(0.1)


def addresses(response: pb.MetadataResponse) -> dict[int, str]:
    return {b.node_id: f"{b.host}:{b.port}" for b in response.brokers}


def test_ready_line_reports_every_listener(cluster: Cluster) -> None:
    node = cluster.nodes[1]
    assert node.listeners == {
        "INTERNAL": f"127.0.0.1:{cluster.internal[1]}",
        "EXTERNAL": f"127.0.0.1:{cluster.external[1]}",
        "ONLY1": f"127.0.0.1:{cluster.only1}",
    }
    assert node.port == cluster.internal[1]  # "listen" is the first listener


def test_metadata_names_the_brokers_on_the_listener_asked(cluster: Cluster) -> None:
    internal = {i: f"127.0.0.1:{p}" for i, p in cluster.internal.items()}
    external = {i: f"localhost:{p}" for i, p in cluster.external.items()}
    for i in (1, 2, 3):
        assert addresses(metadata(f"127.0.0.1:{cluster.internal[i]}", PLAINTEXT)) == internal
        assert addresses(metadata(f"localhost:{cluster.external[i]}", cluster.ssl)) == external
    # Only node 1 has ONLY1: the others are left out, never given another listener's address.
    with open_channel(f"127.0.0.1:{cluster.only1}", PLAINTEXT) as channel:
        only1 = ketch_pb2_grpc.KetchStub(channel).Metadata(pb.MetadataRequest(), timeout=5)
    assert addresses(only1) == {1: f"127.0.0.1:{cluster.only1}"}


def test_the_ssl_listener_refuses_plaintext(cluster: Cluster) -> None:
    with (
        open_channel(f"127.0.0.1:{cluster.external[1]}", PLAINTEXT) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        ketch_pb2_grpc.KetchStub(channel).Metadata(pb.MetadataRequest(), timeout=3)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_clients_on_the_external_listener_replicate_over_the_internal_one(cluster: Cluster) -> None:
    bootstrap = cluster.external_bootstrap()
    client = cluster.ssl.client_kwargs()
    with Admin(bootstrap_servers=bootstrap, **client) as admin:
        admin.create_topics([NewTopic(TOPIC, 1)])
        deadline = time.monotonic() + 20
        while True:
            (partition,) = admin.describe_topics([TOPIC])[0].partitions
            if len(partition.isr) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert sorted(partition.isr) == [1, 2, 3]
    values = [b"v%03d" % i for i in range(50)]
    # acks=all with min.insync.replicas 3: acknowledged only once both followers fetched over INTERNAL.
    with Producer(bootstrap_servers=bootstrap, acks="all", delivery_timeout_ms=30000, **client) as producer:
        offsets = [f.get(30).offset for f in [producer.send(TOPIC, v, partition=0) for v in values]]
    assert offsets == list(range(50))
    read: list[bytes] = []
    with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest", **client) as consumer:
        consumer.assign([TopicPartition(TOPIC, 0)])
        deadline = time.monotonic() + 20
        while len(read) < 50 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                read.extend(r.value or b"" for r in records)
    assert read == values


def test_find_coordinator_answers_on_the_listener_asked(cluster: Cluster) -> None:
    def find(address: str, security: SecurityConfig) -> pb.FindCoordinatorResponse:
        with open_channel(address, security) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            deadline = time.monotonic() + 30
            while True:  # the first call creates the offsets topic
                answer = stub.FindCoordinator(pb.FindCoordinatorRequest(group_id="g"), timeout=10)
                if answer.node_id >= 0 or time.monotonic() > deadline:
                    return answer
                time.sleep(0.2)

    internal = find(f"127.0.0.1:{cluster.internal[2]}", PLAINTEXT)
    assert internal.node_id in (1, 2, 3)
    assert (internal.host, internal.port) == ("127.0.0.1", cluster.internal[internal.node_id])
    external = find(f"localhost:{cluster.external[3]}", cluster.ssl)
    assert (external.node_id, external.host, external.port) == (
        internal.node_id,
        "localhost",
        cluster.external[internal.node_id],
    )


def test_a_node_with_an_unknown_listener_in_the_map_exits_2(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "ketch", "node", "--data-dir", str(tmp_path), "--metrics-port", "-1"),
            *("--listeners", f"INTERNAL://127.0.0.1:{port}"),
            *("--listener-security-protocol-map", "INTERNAL:PLAINTEXT,EXTRENAL:SSL"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "listener_security_protocol_map names EXTRENAL, which is not among the listeners (INTERNAL)" in result.stderr


def test_a_node_dials_its_controller_listener_with_that_listeners_protocol(tmp_path: Path) -> None:
    """Plaintext for clients, SSL for the controller and inter-broker listener: the broker's registration
    reaches the controller only if it dials the SSL listener over TLS with the node's certificate."""
    tls = tmp_path / "tls"
    cert, key = certificates.issue(tls, "node", ["localhost", "127.0.0.1"])
    client, controller = free_ports(2)
    args = [
        *("--listeners", f"CLIENT://127.0.0.1:{client},SSL://127.0.0.1:{controller}"),
        *("--listener-security-protocol-map", "CLIENT:PLAINTEXT"),
        *("--inter-broker-listener-name", "SSL", "--controller-listener-names", "SSL"),
        *("--ssl-cafile", str(tls / "ca.pem"), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)),
        *("--ssl-client-auth", "required"),
    ]
    node = NodeProcess(tmp_path / "n1", 1, args, port=client, metrics_port=-1)
    try:
        node.start().wait_broker_alive(20)  # registered through the SSL controller listener
        assert node.listeners == {"CLIENT": f"127.0.0.1:{client}", "SSL": f"127.0.0.1:{controller}"}
        assert addresses(metadata(f"127.0.0.1:{client}", PLAINTEXT, brokers=1)) == {1: f"127.0.0.1:{client}"}
    finally:
        node.stop(10)


def test_cluster_describe_lists_every_listener_of_every_broker(cluster: Cluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ketch", "cluster", "describe", "--json", "-b", f"127.0.0.1:{cluster.internal[2]}"],
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("KETCH_")},
    )
    assert result.returncode == 0, result.stderr
    brokers = {b["node_id"]: b for b in json.loads(result.stdout)["brokers"]}
    for i in (1, 2, 3):
        assert brokers[i]["address"] == f"127.0.0.1:{cluster.internal[i]}"  # the inter-broker listener
        assert brokers[i]["listeners"]["EXTERNAL"] == f"localhost:{cluster.external[i]}"
    assert brokers[1]["listeners"]["ONLY1"] == f"127.0.0.1:{cluster.only1}" and "ONLY1" not in brokers[2]["listeners"]
