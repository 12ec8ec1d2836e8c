"""SASL SCRAM through the Kafka listener (node/kafka/sasl.py) on one real node, with aiokafka.

The node: mutual TLS on its gRPC listener (the admin), TLS without client certificates on the
Kafka listener (``listener_ssl_client_auth KAFKA:none``: SCRAM logins instead), the authorizer on,
SCRAM-SHA-256 enabled. alice logs in over the Kafka listener with SaslHandshake and
SaslAuthenticate frames (SASL_SSL) and produces to a topic only her ACL allows; a wrong password
is SASL_AUTHENTICATION_FAILED; a client without a login is User:ANONYMOUS and refused the topic.
A plaintext Kafka listener has no SASL sessions (passwords travel over TLS only): its handshake
answers UNSUPPORTED_SASL_MECHANISM (tests/test_kafka_groups.py shows the answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiokafka
import pytest
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from aiokafka.helpers import create_ssl_context

from ketch import aio
from ketch.acl import AclBinding
from ketch.aio.admin import NewTopic
from ketch.aio.admin_acls import ScramUpsertion
from ketch.tls import SecurityConfig
from node import certificates
from node.cluster import CN_RULE
from node.process import NodeProcess, free_ports
from tests.harness import wait_broker_alive

pytestmark = pytest.mark.timeout(120)


class Node:
    def __init__(self, root: Path) -> None:
        tls = root / "tls"
        certificates.issue(tls, "node-1", certificates.LOCAL_HOSTS)
        certificates.issue(tls, "admin")
        self.port, kafka_port = free_ports(2)
        self.kafka = f"127.0.0.1:{kafka_port}"
        args = [
            *("--security-protocol", "SSL", "--ssl-client-auth", "required", "--ssl-cafile", str(tls / "ca.pem")),
            *("--ssl-certfile", str(tls / "node-1.pem"), "--ssl-keyfile", str(tls / "node-1-key.pem")),
            f"--ssl-principal-mapping-rules={CN_RULE}",
            *("--authorizer-enabled", "true", "--super-users", "User:admin;User:node-1"),
            *("--sasl-enabled-mechanisms", "SCRAM-SHA-256", "--offsets-topic-num-partitions", "1"),
            *(f"--kafka-listen={self.kafka}", "--kafka-security-protocol=SSL"),
            "--listener-ssl-client-auth=KAFKA:none",
        ]
        self.ca = str(tls / "ca.pem")
        self.admin = SecurityConfig("SSL", str(tls / "ca.pem"), str(tls / "admin.pem"), str(tls / "admin-key.pem"))
        self.process = NodeProcess(root / "n1", 1, args, port=self.port, metrics_port=-1, security=self.admin)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("kafka-sasl"))
    try:
        n.process.start()
        wait_broker_alive(n.process)
        yield n
    finally:
        n.process.close()


def test_scram_login_on_the_kafka_listener_acts_as_the_user(node: Node) -> None:
    tls = {"ssl_context": create_ssl_context(cafile=node.ca)}
    alice: dict[str, Any] = {
        "bootstrap_servers": node.kafka,
        **tls,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
    }

    async def scenario() -> None:
        async with aio.Admin(f"127.0.0.1:{node.port}", **node.admin.client_kwargs()) as a:
            await a.create_topics([NewTopic("alice-log", 1, 1)])
            await a.alter_user_scram_credentials([ScramUpsertion("alice", "s3cret")])
            await a.create_acls([AclBinding("TOPIC", "alice-", "User:alice", "ALL", pattern_type="PREFIXED")])
        producer = aiokafka.AIOKafkaProducer(**alice)
        try:
            await producer.start()
            assert (await producer.send_and_wait("alice-log", b"a1")).offset == 0
        finally:
            await producer.stop()
        wrong = aiokafka.AIOKafkaProducer(**{**alice, "sasl_plain_password": "wrong"})
        try:
            with pytest.raises(KafkaConnectionError):  # aiokafka wraps the SASL_AUTHENTICATION_FAILED answer
                await wrong.start()
        finally:
            await wrong.stop()
        anonymous = aiokafka.AIOKafkaProducer(
            bootstrap_servers=node.kafka, security_protocol="SSL", request_timeout_ms=3000, **tls
        )
        try:
            await anonymous.start()
            with pytest.raises(TopicAuthorizationFailedError):
                await asyncio.wait_for(anonymous.send_and_wait("alice-log", b"x"), 10)
        finally:
            await anonymous.stop()

    asyncio.run(scenario())
