"""TLS on the Kafka listener (``kafka_security_protocol`` SSL, mutual TLS) on one real node, with aiokafka.

The node's gRPC listener stays plaintext; its Kafka listener takes only clients with a
certificate of the CA. The authorizer is on, everyone allowed where no ACL exists, and the one
ACL on ``secret`` allows User:alice (so nobody else, Kafka's rule): alice's certificate
(``CN=alice`` through ``ssl_principal_mapping_rules``) writes and reads there, so the principal
of a Kafka call is the certificate's; a client without a certificate, and a plaintext one, never
get an answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.helpers import create_ssl_context

from ketch import AclBinding, Admin, NewTopic
from node import certificates
from node.cluster import CN_RULE
from node.process import NodeProcess, free_ports
from tests.harness import wait_broker_alive


class Node:
    def __init__(self, root: Path) -> None:
        self.tls = root / "tls"
        certificates.issue(self.tls, "node-1", certificates.LOCAL_HOSTS)
        certificates.issue(self.tls, "alice")
        port, kafka_port = free_ports(2)
        self.kafka = f"127.0.0.1:{kafka_port}"
        args = [
            f"--kafka-listen={self.kafka}",
            "--kafka-security-protocol=SSL",
            "--ssl-client-auth=required",
            f"--ssl-cafile={self.tls / 'ca.pem'}",
            f"--ssl-certfile={self.tls / 'node-1.pem'}",
            f"--ssl-keyfile={self.tls / 'node-1-key.pem'}",
            f"--ssl-principal-mapping-rules={CN_RULE}",
            "--authorizer-enabled=true",
            "--allow-everyone-if-no-acl-found=true",
            "--default-replication-factor=1",
        ]
        self.process = NodeProcess(root / "n1", 1, args, port=port, metrics_port=-1)

    def client_tls(self, name: str | None) -> ssl.SSLContext:
        cert = {"certfile": str(self.tls / f"{name}.pem"), "keyfile": str(self.tls / f"{name}-key.pem")}
        return create_ssl_context(cafile=str(self.tls / "ca.pem"), **(cert if name else {}))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("kafka-tls"))
    try:
        n.process.start()
        wait_broker_alive(n.process)
        with Admin(bootstrap_servers=n.process.bootstrap) as admin:
            admin.create_topics([NewTopic("secret", 1)])
            admin.create_acls([AclBinding("TOPIC", "secret", "User:alice", "ALL")])
        yield n
    finally:
        n.process.close()


def test_a_client_certificate_is_the_principal_of_its_kafka_calls(node: Node) -> None:
    tls: dict[str, Any] = {"security_protocol": "SSL", "ssl_context": node.client_tls("alice")}

    async def produce_and_consume() -> list[bytes]:
        producer = AIOKafkaProducer(bootstrap_servers=node.kafka, acks="all", **tls)
        await producer.start()
        try:
            await producer.send_and_wait("secret", b"from alice")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=node.kafka, auto_offset_reset="earliest", **tls)
        await consumer.start()
        try:
            consumer.assign([TopicPartition("secret", 0)])
            records = await consumer.getmany(timeout_ms=5000)
        finally:
            await consumer.stop()
        return [r.value for batch in records.values() for r in batch]

    assert asyncio.run(produce_and_consume()) == [b"from alice"]


@pytest.mark.parametrize("client", ["without a certificate", "plaintext"])
def test_a_client_without_a_certificate_gets_no_answer(node: Node, client: str) -> None:
    if client == "plaintext":
        settings: dict[str, Any] = {}
    else:
        settings = {"security_protocol": "SSL", "ssl_context": node.client_tls(None)}

    async def start() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=node.kafka, request_timeout_ms=3000, **settings)
        try:
            await producer.start()
        finally:
            await producer.stop()

    with pytest.raises(KafkaConnectionError):
        asyncio.run(start())
