"""Per-listener client authentication (``listener_ssl_client_auth``): one real node with mutual TLS
on INTERNAL (the node's own calls, the admin) and TLS without client certificates on EXTERNAL, where
clients log in with SCRAM. The authorizer is on: a SCRAM user acts as itself with no certificate at
all, an anonymous TLS client sees nothing, and INTERNAL still refuses a client without a certificate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ketch import aio
from ketch.acl import AclBinding
from ketch.aio.admin import NewTopic
from ketch.aio.admin_acls import ScramUpsertion
from ketch.errors import KetchConnectionError, TopicAuthorizationFailedError
from ketch.records import TopicPartition
from ketch.tls import SecurityConfig
from node import certificates
from node.cluster import CN_RULE
from node.config import ConfigError, NodeConfig
from node.listeners import resolve
from node.process import NodeProcess, free_ports
from tests.harness import wait_broker_alive

pytestmark = pytest.mark.timeout(120)


class Node:
    def __init__(self, root: Path) -> None:
        self.tls = root / "tls"
        certificates.issue(self.tls, "node-1", certificates.LOCAL_HOSTS)
        certificates.issue(self.tls, "admin")
        self.internal, self.external = free_ports(2)
        args = [
            *("--listeners", f"INTERNAL://127.0.0.1:{self.internal},EXTERNAL://127.0.0.1:{self.external}"),
            *("--listener-security-protocol-map", "INTERNAL:SSL,EXTERNAL:SSL"),
            *("--ssl-client-auth", "required", "--listener-ssl-client-auth", "EXTERNAL:none"),
            *("--ssl-cafile", str(self.tls / "ca.pem"), "--ssl-certfile", str(self.tls / "node-1.pem")),
            *("--ssl-keyfile", str(self.tls / "node-1-key.pem"), f"--ssl-principal-mapping-rules={CN_RULE}"),
            *("--authorizer-enabled", "true", "--super-users", "User:admin;User:node-1"),
            *("--sasl-enabled-mechanisms", "SCRAM-SHA-256", "--offsets-topic-num-partitions", "1"),
        ]
        self.process = NodeProcess(root / "n1", 1, args, port=self.internal, metrics_port=-1, security=self.admin_tls())
        self.ca = str(self.tls / "ca.pem")

    def admin_tls(self) -> SecurityConfig:
        tls = self.tls
        return SecurityConfig("SSL", str(tls / "ca.pem"), str(tls / "admin.pem"), str(tls / "admin-key.pem"))


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("client-auth"))
    try:
        n.process.start()
        wait_broker_alive(n.process)
        yield n
    finally:
        n.process.close()


def test_scram_without_a_certificate_outside_mutual_tls_inside(node: Node) -> None:
    internal, external = f"127.0.0.1:{node.internal}", f"127.0.0.1:{node.external}"
    admin = node.admin_tls().client_kwargs()
    dave: dict[str, Any] = {
        "security_protocol": "SASL_SSL",
        "ssl_cafile": node.ca,
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "dave",
        "sasl_plain_password": "correct horse",
    }

    async def scenario() -> None:
        async with aio.Admin(internal, **admin) as a:
            await a.create_topics([NewTopic("dave-log", 1, 1)])
            await a.alter_user_scram_credentials([ScramUpsertion("dave", "correct horse")])
            await a.create_acls([AclBinding("TOPIC", "dave-", "User:dave", "ALL", pattern_type="PREFIXED")])
        async with aio.Producer(external, **dave) as producer:  # no certificate at all
            await producer.send_and_wait("dave-log", b"d1")
        async with aio.Consumer(
            bootstrap_servers=external, auto_offset_reset="earliest", fetch_max_wait_ms=100, **dave
        ) as consumer:
            await consumer.assign([TopicPartition("dave-log", 0)])
            got: list[bytes | None] = []
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                for records in (await consumer.poll(timeout_ms=300)).values():
                    got += [r.value for r in records]
            assert got == [b"d1"]
        anonymous: dict[str, Any] = {"security_protocol": "SSL", "ssl_cafile": node.ca}
        async with aio.Admin(external, request_timeout_ms=5000, **anonymous) as a:
            assert await a.list_topics() == []  # User:ANONYMOUS has no ACL
        async with aio.Producer(external, acks=1, max_block_ms=5000, **anonymous) as producer:
            with pytest.raises(TopicAuthorizationFailedError):
                await producer.send_and_wait("dave-log", b"x")
        with pytest.raises(KetchConnectionError, match="ssl_certfile"):  # INTERNAL: mutual TLS
            async with aio.Admin(internal, request_timeout_ms=5000, **dave) as a:
                await a.list_topics()

    asyncio.run(scenario())


def test_listener_client_auth_is_validated() -> None:
    base = {"listeners": "A://127.0.0.1:0,B://127.0.0.1:0", "listener_security_protocol_map": "A:SSL,B:SSL"}
    config = NodeConfig(**base, ssl_client_auth="required", listener_ssl_client_auth="b:NONE")  # type: ignore[arg-type]
    assert [(x.name, x.client_auth) for x in resolve(config).all] == [("A", "required"), ("B", "none")]
    for bad, words in (
        ("C:none", "C is not among the listeners"),
        ("A:maybe", "expected NAME:none"),
        ("A:none,A:none", "A appears twice"),
    ):
        with pytest.raises(ConfigError, match=words):
            resolve(NodeConfig(**base, listener_ssl_client_auth=bad))  # type: ignore[arg-type]
