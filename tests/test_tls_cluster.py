"""Mutual TLS on every connection of three real nodes started by ``ketch cluster up --tls``.

Clients, replica fetching, the controller RPCs and Raft all go over TLS with client
certificates required; the tests show a client without a trusted certificate refused with
an error that says why, produce and consume working for one with a certificate, and the
cluster carrying on across a rotation of every certificate (without a restart) followed by
a kill -9 that makes a node fetch and vote again on fresh connections.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from ketch import aio
from ketch.acl import AclBinding
from ketch.aio.admin import NewTopic
from ketch.api.v1 import controller_pb2 as cpb
from ketch.api.v1 import controller_pb2_grpc, ketch_pb2_grpc, raft_pb2, raft_pb2_grpc
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import (
    AuthenticationFailedError,
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KetchConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
)
from ketch.records import TopicPartition
from ketch.tls import open_channel
from node import certificates
from node.cluster import LocalCluster
from tests.test_cluster_cli import consecutive_free_ports, ketch

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, dict[str, str]]]:
    """The cluster, and the environment ``cluster up --tls`` told the user to export."""
    data = tmp_path_factory.mktemp("tls") / "c"
    port, metrics = consecutive_free_ports(3), consecutive_free_ports(3)
    up = ["cluster", "up", "--tls", "--data-dir", str(data), "--port", str(port), "--metrics-port", str(metrics)]
    try:
        started = ketch(*up, "--detach")
        assert started.returncode == 0, started.stderr
        env = {}
        for line in started.stdout.splitlines():
            if line.strip().startswith("export "):
                for pair in line.split()[1:]:
                    key, _, value = pair.partition("=")
                    env[key] = value
        env["UP"] = " ".join(up)
        yield LocalCluster(data), env
    finally:
        LocalCluster(data).stop_detached(timeout_s=5)


def run(coro: object) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]


def security(env: dict[str, str]) -> dict[str, Any]:
    return {
        "security_protocol": "SSL",
        "ssl_cafile": env["KETCH_SSL_CAFILE"],
        "ssl_certfile": env["KETCH_SSL_CERTFILE"],
        "ssl_keyfile": env["KETCH_SSL_KEYFILE"],
    }


def test_cluster_up_tls_prints_the_environment_every_command_reads(
    tls_cluster: tuple[LocalCluster, dict[str, str]],
) -> None:
    cluster, env = tls_cluster
    assert env["KETCH_SECURITY_PROTOCOL"] == "SSL"
    assert env["KETCH_SSL_CAFILE"] == str(cluster.tls_dir / "ca.pem")
    assert env["KETCH_SSL_CERTFILE"] == str(cluster.tls_dir / "admin.pem")
    with_env = {k: v for k, v in env.items() if k.startswith("KETCH_")}
    os.environ.update(with_env)
    try:
        assert ketch("topic", "create", "cli-demo", bootstrap=cluster.bootstrap).returncode == 0
        produced = _ketch_stdin("produce", "cli-demo", text="a\nb\nc\n", bootstrap=cluster.bootstrap)
        assert produced.returncode == 0, produced.stderr
        consumed = ketch("consume", "cli-demo", "--from-beginning", "--max-messages", "3", bootstrap=cluster.bootstrap)
        assert consumed.stdout.split() == ["a", "b", "c"], consumed.stderr
        # A certificate issued for another principal is signed by the same CA: accepted, but
        # User:alice sees no topic until an ACL lets her (the authorizer is on).
        issued = ketch("cluster", "issue-cert", "--data-dir", str(cluster.root), "--name", "alice")
        assert issued.returncode == 0 and "User:alice" in issued.stdout, issued.stderr
        os.environ["KETCH_SSL_CERTFILE"] = str(cluster.tls_dir / "alice.pem")
        os.environ["KETCH_SSL_KEYFILE"] = str(cluster.tls_dir / "alice-key.pem")
        listed = ketch("topic", "list", bootstrap=cluster.bootstrap)
        assert listed.returncode == 0 and "cli-demo" not in listed.stdout, listed.stderr
        refused = _ketch_stdin("produce", "cli-demo", text="d\n", bootstrap=cluster.bootstrap)
        assert refused.returncode != 0 and "TOPIC_AUTHORIZATION_FAILED" in refused.stderr, refused.stderr
        os.environ["KETCH_SSL_CERTFILE"] = with_env["KETCH_SSL_CERTFILE"]  # the admin grants READ
        os.environ["KETCH_SSL_KEYFILE"] = with_env["KETCH_SSL_KEYFILE"]
        added = ketch(
            "acl",
            "add",
            "--principal",
            "User:alice",
            "--operation",
            "READ",
            "--topic",
            "cli-",
            "--prefixed",
            bootstrap=cluster.bootstrap,
        )
        assert added.returncode == 0 and "ALLOW User:alice READ on TOPIC 'cli-' (PREFIXED)" in added.stdout
        acls = ketch("acl", "list", "--principal", "User:alice", bootstrap=cluster.bootstrap)
        assert "User:alice" in acls.stdout and "PREFIXED" in acls.stdout, acls.stderr
        os.environ["KETCH_SSL_CERTFILE"] = str(cluster.tls_dir / "alice.pem")
        os.environ["KETCH_SSL_KEYFILE"] = str(cluster.tls_dir / "alice-key.pem")
        listed = ketch("topic", "list", bootstrap=cluster.bootstrap)
        assert listed.returncode == 0 and "cli-demo" in listed.stdout, listed.stderr
        consumed = ketch("consume", "cli-demo", "--from-beginning", "--max-messages", "3", bootstrap=cluster.bootstrap)
        assert consumed.stdout.split() == ["a", "b", "c"], consumed.stderr
        # Without the certificate the same command is refused, with a hint, not a hang.
        os.environ["KETCH_SSL_CERTFILE"] = os.environ["KETCH_SSL_KEYFILE"] = ""
        refused = ketch("topic", "list", bootstrap=cluster.bootstrap, timeout=60)
        assert refused.returncode == 1 and "ssl_certfile" in refused.stderr
    finally:
        for key in with_env:
            os.environ.pop(key, None)


def _ketch_stdin(*args: str, text: str, bootstrap: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketch", *args],
        input=text,
        capture_output=True,
        text=True,
        env={**os.environ, "KETCH_BOOTSTRAP": bootstrap},
        timeout=120,
    )


def test_clients_without_a_trusted_certificate_are_refused(
    tls_cluster: tuple[LocalCluster, dict[str, str]], tmp_path: Path
) -> None:
    cluster, env = tls_cluster
    elsewhere = tmp_path / "other-ca"
    mallory_cert, mallory_key = certificates.issue(elsewhere, "mallory")

    async def topics(**config: Any) -> list[str]:
        async with aio.Admin(cluster.bootstrap, request_timeout_ms=5000, **config) as admin:
            return await admin.list_topics()

    ca = env["KETCH_SSL_CAFILE"]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({}, KetchConnectionError, "Socket closed"),  # plaintext to a TLS listener
        ({"security_protocol": "SSL", "ssl_cafile": ca}, KetchConnectionError, "client certificates"),
        (  # a certificate from a CA the nodes do not trust
            {"security_protocol": "SSL", "ssl_cafile": ca, "ssl_certfile": str(mallory_cert)}
            | {"ssl_keyfile": str(mallory_key)},
            KetchConnectionError,
            "Socket closed",
        ),
        (  # the client does not trust the nodes' CA: refused on its side, not retriable
            security(env) | {"ssl_cafile": str(elsewhere / "ca.pem")},
            AuthenticationFailedError,
            "TLS handshake refused",
        ),
    ]
    for config, error, words in cases:
        started = time.monotonic()
        with pytest.raises(error, match=words):
            run(topics(**config))
        assert time.monotonic() - started < 30
    assert not AuthenticationFailedError("x").retriable
    # The nodes kept serving the client that has a certificate.
    assert isinstance(run(topics(**security(env))), list)


def test_produce_and_consume_over_mutual_tls(tls_cluster: tuple[LocalCluster, dict[str, str]]) -> None:
    cluster, env = tls_cluster
    values = [f"v{i}".encode() for i in range(300)]
    run(_produce(cluster, env, "tls-orders", values, create=True))
    assert run(_consume(cluster, env, "tls-orders", len(values))) == values


async def _produce(
    cluster: LocalCluster, env: dict[str, str], topic: str, values: list[bytes], create: bool = False
) -> None:
    if create:
        async with aio.Admin(cluster.bootstrap, **security(env)) as admin:
            await admin.create_topics([NewTopic(topic, 1, 3, {"min.insync.replicas": "2"})])
    async with aio.Producer(cluster.bootstrap, acks="all", **security(env)) as producer:
        for value in values:
            await producer.send(topic, value)
        await producer.flush()


async def _consume(cluster: LocalCluster, env: dict[str, str], topic: str, count: int) -> list[bytes]:
    got: list[bytes] = []
    async with aio.Consumer(
        topic, bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", **security(env)
    ) as consumer:
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            for records in (await consumer.poll(timeout_ms=500)).values():
                got += [r.value or b"" for r in records]
    return got


def served_serial(address: str, env: dict[str, str]) -> int:
    """The serial number of the certificate a node presents to a new TLS connection now."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=env["KETCH_SSL_CAFILE"])
    context.load_cert_chain(env["KETCH_SSL_CERTFILE"], env["KETCH_SSL_KEYFILE"])
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as s,
    ):
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_the_kafka_listener_is_mutual_tls_too(tls_cluster: tuple[LocalCluster, dict[str, str]]) -> None:
    """``cluster up --tls`` serves the Kafka listener with SSL: the admin's certificate gets the
    three brokers' Kafka addresses; a client without a certificate gets no answer."""
    from aiokafka.client import AIOKafkaClient
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.helpers import create_ssl_context

    cluster, env = tls_cluster
    admin_tls = create_ssl_context(
        cafile=env["KETCH_SSL_CAFILE"], certfile=env["KETCH_SSL_CERTFILE"], keyfile=env["KETCH_SSL_KEYFILE"]
    )

    async def brokers(context: ssl.SSLContext) -> set[str]:
        client = AIOKafkaClient(bootstrap_servers=cluster.kafka_bootstrap, security_protocol="SSL", ssl_context=context)
        try:
            await client.bootstrap()
            return {f"{b.host}:{b.port}" for b in client.cluster.brokers()}
        finally:
            await client.close()

    assert run(brokers(admin_tls)) == set(cluster.kafka_bootstrap.split(","))
    with pytest.raises(KafkaConnectionError):
        run(brokers(create_ssl_context(cafile=env["KETCH_SSL_CAFILE"])))


def test_every_certificate_rotated_without_a_restart_then_a_node_killed(
    tls_cluster: tuple[LocalCluster, dict[str, str]],
) -> None:
    cluster, env = tls_cluster
    run(_produce(cluster, env, "tls-rotation", [b"before"], create=True))
    before = {i: served_serial(n.bootstrap, env) for i, n in cluster.nodes.items()}
    for node_id in cluster.nodes:  # what an operator (or cert-manager) does: new keys, same CA
        certificates.issue(cluster.tls_dir, f"node-{node_id}", certificates.LOCAL_HOSTS)
    certificates.issue(cluster.tls_dir, "admin")
    deadline = time.monotonic() + 10
    after = dict(before)
    while time.monotonic() < deadline and any(after[i] == before[i] for i in after):
        after = {i: served_serial(n.bootstrap, env) for i, n in cluster.nodes.items()}
        time.sleep(0.2)
    assert all(after[i] != before[i] for i in after), "a node still serves its old certificate"
    pids = {i: cluster.running_pid(i) for i in cluster.nodes}
    assert all(pids.values()), "no node restarted for the rotation"

    # Node 2 crashes and comes back: it registers, votes and fetches on new connections, new certificates.
    os.kill(pids[2] or 0, 9)
    again = ketch(*env["UP"].split(), "--detach")
    assert again.returncode == 0 and "nodes started: 2" in again.stdout, again.stderr
    values = [f"after-{i}".encode() for i in range(100)]
    run(_produce(cluster, env, "tls-rotation", values))

    async def caught_up() -> bool:
        async with aio.Admin(cluster.bootstrap, **security(env)) as admin:
            description = (await admin.describe_topics(["tls-rotation"]))[0]
            return sorted(description.partitions[0].isr) == [1, 2, 3]

    deadline = time.monotonic() + 60
    while not run(caught_up()):
        assert time.monotonic() < deadline, "node 2 did not rejoin the ISR over TLS"
        time.sleep(0.5)
    quorum = cluster.describe_quorum(2)
    assert quorum.leader_id in (1, 2, 3) and len(quorum.voters) == 3
    assert run(_consume(cluster, env, "tls-rotation", 101)) == [b"before", *values]


def test_acls_decide_each_operation_with_kafkas_errors(tls_cluster: tuple[LocalCluster, dict[str, str]]) -> None:
    """User:bob, with a certificate and no ACL, is refused per operation with the right typed
    error; each ACL the admin adds lets exactly its operation through; a DENY wins; the node-to-node
    calls stay closed to him."""
    cluster, env = tls_cluster
    bob = cluster.client_security("bob").client_kwargs()
    admin_kwargs = security(env)

    async def scenario() -> None:
        async with aio.Admin(cluster.bootstrap, **admin_kwargs) as admin:
            await admin.create_topics([NewTopic("bob-orders", 1, 3), NewTopic("bob-secret", 1, 3)])
            async with aio.Producer(cluster.bootstrap, **admin_kwargs) as producer:
                await producer.send("bob-secret", b"s")
                await producer.flush()
        async with aio.Admin(cluster.bootstrap, **bob) as bob_admin:
            assert await bob_admin.list_topics() == []  # filtered, not refused
            with pytest.raises(TopicAuthorizationFailedError, match="may not CREATE topic 'bob-new'"):
                await bob_admin.create_topics([NewTopic("bob-new", 1, 3)])
            with pytest.raises(ClusterAuthorizationFailedError, match="may not ALTER cluster"):
                await bob_admin.create_acls([AclBinding("TOPIC", "*", "User:bob", "ALL")])
            with pytest.raises(ClusterAuthorizationFailedError):
                await bob_admin.alter_partition_reassignments({TopicPartition("bob-orders", 0): [1, 2, 3]})
            with pytest.raises(GroupAuthorizationFailedError, match="may not DESCRIBE group 'bob-g'"):
                await bob_admin.describe_consumer_groups(["bob-g"])
        plain = {**bob, "acks": 1}  # no producer id needed: the send reaches Metadata and Produce
        await _expect_refused_send(cluster, plain, "bob-orders", TopicAuthorizationFailedError)  # no DESCRIBE
        async with aio.Admin(cluster.bootstrap, **admin_kwargs) as admin:  # DESCRIBE is not WRITE
            await admin.create_acls([AclBinding("TOPIC", "bob-orders", "User:bob", "DESCRIBE")])
        await _expect_refused_send(cluster, plain, "bob-orders", TopicAuthorizationFailedError)
        # An idempotent producer needs WRITE somewhere for its producer id (KIP-679), and says so at once.
        started = time.monotonic()
        await _expect_refused_send(cluster, bob, "bob-orders", ClusterAuthorizationFailedError)
        assert time.monotonic() - started < 10

        async with aio.Admin(cluster.bootstrap, **admin_kwargs) as admin:
            await admin.create_acls(
                [
                    AclBinding("TOPIC", "bob-", "User:bob", "WRITE", pattern_type="PREFIXED"),
                    AclBinding("TOPIC", "bob-", "User:bob", "READ", pattern_type="PREFIXED"),
                    AclBinding("TOPIC", "bob-secret", "User:bob", "READ", "DENY"),
                    AclBinding("GROUP", "bob-g", "User:bob", "READ"),
                    AclBinding("TRANSACTIONAL_ID", "bob-tx", "User:bob", "WRITE"),
                ]
            )
        async with aio.Admin(cluster.bootstrap, **bob) as bob_admin:
            assert await bob_admin.list_topics() == ["bob-orders", "bob-secret"]
        async with aio.Producer(cluster.bootstrap, transactional_id="bob-tx", **bob) as producer:
            await producer.init_transactions()
            producer.begin_transaction()
            await producer.send("bob-orders", b"o1")
            await producer.commit_transaction()
        async with aio.Consumer(
            "bob-orders", bootstrap_servers=cluster.bootstrap, group_id="bob-g", auto_offset_reset="earliest", **bob
        ) as consumer:
            got: list[bytes | None] = []
            deadline = time.monotonic() + 30
            while not got and time.monotonic() < deadline:
                for records in (await consumer.poll(timeout_ms=500)).values():
                    got += [r.value for r in records]
            assert got == [b"o1"]
            await consumer.commit()
        async with aio.Consumer(
            bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100, **bob
        ) as consumer:
            await consumer.assign([TopicPartition("bob-secret", 0)])
            with pytest.raises(TopicAuthorizationFailedError, match="may not READ topic 'bob-secret'"):
                deadline = time.monotonic() + 15
                while time.monotonic() < deadline:
                    await consumer.poll(timeout_ms=300)
        with pytest.raises(TransactionalIdAuthorizationFailedError, match="bob-other"):
            async with aio.Producer(cluster.bootstrap, transactional_id="bob-other", **bob) as producer:
                await producer.init_transactions()

    run(scenario())
    # Node-to-node calls: Raft, a follower's fetch, the controller's broker calls.
    sec = cluster.client_security("bob")
    with open_channel(cluster.nodes[1].bootstrap, sec) as channel:
        with pytest.raises(grpc.RpcError) as raft:
            raft_pb2_grpc.KetchRaftStub(channel).Step(raft_pb2.RaftBatch(), timeout=5)
        assert raft.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "CLUSTER_AUTHORIZATION_FAILED" in (raft.value.details() or "")
        with pytest.raises(grpc.RpcError) as fetch:
            request = pb.FetchRequest(replica_id=2, partitions=[pb.FetchPartition(topic="bob-orders")])
            ketch_pb2_grpc.KetchStub(channel).Fetch(request, timeout=5)
        assert fetch.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.RpcError) as streamed:  # the same fetch over FetchStream
            list(ketch_pb2_grpc.KetchStub(channel).FetchStream(iter([request]), timeout=5))
        assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "CLUSTER_AUTHORIZATION_FAILED" in (streamed.value.details() or "")
        with pytest.raises(grpc.RpcError) as heartbeat:
            controller_pb2_grpc.KetchControllerStub(channel).BrokerHeartbeat(
                cpb.BrokerHeartbeatRequest(broker_id=1), timeout=5
            )
        assert heartbeat.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def _expect_refused_send(cluster: LocalCluster, config: dict[str, Any], topic: str, error: type) -> None:
    async with aio.Producer(cluster.bootstrap, max_block_ms=10000, **config) as producer:
        with pytest.raises(error):
            await producer.send_and_wait(topic, b"x")


def test_scram_users_log_in_and_act_as_themselves(tls_cluster: tuple[LocalCluster, dict[str, str]]) -> None:
    """``ketch user add`` stores a SCRAM credential (the password read from stdin, never sent); a
    client logging in with it acts as User:carol, whatever certificate mutual TLS made it present;
    a wrong password is refused at once with SASL_AUTHENTICATION_FAILED."""
    cluster, env = tls_cluster
    os.environ.update({k: v for k, v in env.items() if k.startswith("KETCH_")})
    try:
        added = _ketch_stdin(
            "user", "add", "carol", "--mechanism", "SCRAM-SHA-512", text="pa55 word\n", bootstrap=cluster.bootstrap
        )
        assert added.returncode == 0, added.stderr
        listed = ketch("user", "list", "--json", bootstrap=cluster.bootstrap)
        assert '"carol"' in listed.stdout and "SCRAM-SHA-512" in listed.stdout and "pa55" not in listed.stdout
        granted = ketch(
            "acl",
            "add",
            "--principal",
            "User:carol",
            "--operation",
            "ALL",
            "--topic",
            "carol-",
            "--prefixed",
            bootstrap=cluster.bootstrap,
        )
        assert granted.returncode == 0, granted.stderr
    finally:
        for key in env:
            os.environ.pop(key, None)
    certificate = cluster.client_security("carols-laptop").client_kwargs()  # a principal with no ACL
    carol = {**certificate, "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}
    carol |= {"sasl_plain_username": "carol", "sasl_plain_password": "pa55 word"}

    async def scenario() -> None:
        async with aio.Admin(cluster.bootstrap, **carol) as admin:
            await admin.create_topics([NewTopic("carol-events", 1, 3)])
            assert await admin.list_topics() == ["carol-events"]
        async with aio.Producer(cluster.bootstrap, **carol) as producer:
            await producer.send_and_wait("carol-events", b"hello")
        async with aio.Consumer(
            bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest", fetch_max_wait_ms=100, **carol
        ) as consumer:
            await consumer.assign([TopicPartition("carol-events", 0)])
            got: list[bytes | None] = []
            deadline = time.monotonic() + 20
            while not got and time.monotonic() < deadline:
                for records in (await consumer.poll(timeout_ms=300)).values():
                    got += [r.value for r in records]
            assert got == [b"hello"]
        async with aio.Admin(cluster.bootstrap, **certificate) as admin:  # the certificate alone: no ACL
            assert await admin.list_topics() == []
        started = time.monotonic()
        with pytest.raises(AuthenticationFailedError, match=r"SASL_AUTHENTICATION_FAILED.*authentication failed"):
            async with aio.Admin(cluster.bootstrap, **(carol | {"sasl_plain_password": "guess"})) as admin:
                await admin.list_topics()
        assert time.monotonic() - started < 10

    run(scenario())
