"""Consumer groups and transactions through the Kafka listener (node/kafka/groups.py, txn.py, sasl.py).

Real processes: one single-node cluster with the Kafka listener for the module (three nodes take
15-20 s to start on the shared machine; routing across nodes is the real-client tests' part),
aiokafka as the real
client (its group protocol, commits, transactional producer and read_committed consumer), and raw
kio requests (tests/kafka_handlers.py) for the versions aiokafka does not send. Then the
translation rules that differ by version, on a fake service, and the SASL exchange over a real
``SaslSessions``.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import time
from collections.abc import Iterator
from typing import Any

import aiokafka
import pytest
import scramp
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import ProducerFenced
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest as FindCoordinatorV4
from kio.schema.leave_group.v3.request import LeaveGroupRequest as LeaveGroupV3
from kio.schema.leave_group.v3.request import MemberIdentity
from kio.schema.offset_fetch.v8.request import OffsetFetchRequest as OffsetFetchV8
from kio.schema.offset_fetch.v8.request import OffsetFetchRequestGroup, OffsetFetchRequestTopics
from kio.schema.sasl_handshake.v1.request import SaslHandshakeRequest as SaslHandshakeV1

from coordinator.metadata.image import MetadataImage
from coordinator.metadata.scram import ScramCredential
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.cluster import LocalCluster
from node.kafka import groups, sasl, txn
from node.sasl import SaslSessions
from tests.harness import running_cluster
from tests.kafka_clients import aiokafka_create_topics
from tests.kafka_handlers import FakeService, by_name, handle, kafka_call, make

ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]
GROUP_API = by_name(groups.APIS)
TXN_API = by_name(txn.APIS)
SASL_API = by_name(sasl.APIS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("kafka-groups"), 1, ARGS, kafka=True) as c:
        asyncio.run(aiokafka_create_topics(c.kafka_bootstrap, [NewTopic("shared", 4, 1), NewTopic("txn", 1, 1)]))
        yield c


async def _produce(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> None:
    producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send_and_wait(topic, value, partition=i % partitions)
    finally:
        await producer.stop()


def _consumer(bootstrap: str, group: str, *topics: str, **options: Any) -> aiokafka.AIOKafkaConsumer:
    return aiokafka.AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        heartbeat_interval_ms=100,
        session_timeout_ms=3000,
        **options,
    )


async def _drain(consumer: aiokafka.AIOKafkaConsumer, want: int, timeout_s: float = 15.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=200)
        got += [m.value for messages in batches.values() for m in messages if m.value is not None]
    return got


# -- Through the real listener ---------------------------------------------------------


async def _fetched(cluster: LocalCluster, version: int) -> tuple[int, int]:
    """(offset, error) of txn-0 for txn-group by OffsetFetch ``version`` (v7: require_stable)."""
    module = importlib.import_module(f"kio.schema.offset_fetch.v{version}.request")
    topic = make(module.OffsetFetchRequestTopic, name="txn", partition_indexes=(0,))
    stable = {"require_stable": True} if version >= 7 else {}
    answer = await kafka_call(
        cluster.kafka_address(1), make(module.OffsetFetchRequest, group_id="txn-group", topics=(topic,), **stable)
    )
    ((partition,),) = [t.partitions for t in answer.topics]
    return partition.committed_offset, int(partition.error_code)


def test_two_consumers_share_the_partitions_and_a_restarted_one_resumes_from_the_commit(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        bootstrap = cluster.kafka_bootstrap
        first = [f"a{i}".encode() for i in range(40)]
        await _produce(bootstrap, "shared", first, 4)
        one, two = _consumer(bootstrap, "sharing", "shared"), _consumer(bootstrap, "sharing", "shared")
        await one.start()
        await two.start()
        try:
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:  # until both hold partitions and all 40 were read
                for c in (one, two):
                    batches = await c.getmany(timeout_ms=100)
                    got += [m.value for ms in batches.values() for m in ms if m.value is not None]
                if one.assignment() and two.assignment() and len(set(got)) == 40:
                    break
            a, b = one.assignment(), two.assignment()
            assert a and b and not a & b, (a, b)
            assert {tp.partition for tp in a | b} == {0, 1, 2, 3}
            assert set(got) == set(first)
            await one.commit()
            await two.commit()
        finally:
            await one.stop()
            await two.stop()
        await _produce(bootstrap, "shared", [f"b{i}".encode() for i in range(8)], 4)
        again = _consumer(bootstrap, "sharing", "shared")
        await again.start()
        try:
            resumed = await _drain(again, 8)
            await asyncio.sleep(0.3)
            resumed += await _drain(again, 1, timeout_s=0.3)  # nothing more: the 40 were committed
        finally:
            await again.stop()
        assert sorted(resumed) == sorted(f"b{i}".encode() for i in range(8))

    asyncio.run(scenario())


def test_one_producer_commits_aborts_and_commits_and_read_committed_sees_only_the_committed(
    cluster: LocalCluster,
) -> None:
    """aiokafka sends EndTxn below v5 (transaction version 1): its epoch stays, and one producer
    session runs any number of transactions (coordinator/transactions/coordinator.py, TV1)."""

    async def scenario() -> None:
        bootstrap = cluster.kafka_bootstrap
        producer = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="kafka-tx")
        await producer.start()
        try:
            async with producer.transaction():  # 1: commit
                for i in range(3):
                    await producer.send_and_wait("txn", f"kept{i}".encode())
                # consume-transform-produce: the group's offset commits with the transaction
                await producer.send_offsets_to_transaction({aiokafka.TopicPartition("txn", 0): 42}, "txn-group")
                # pending in the transaction: unstable for require_stable (v7), not yet committed for v3
                assert await _fetched(cluster, 7) == (-1, ErrorCode.UNSTABLE_OFFSET_COMMIT)
                assert await _fetched(cluster, 3) == (-1, 0)
            await producer.begin_transaction()  # 2: abort, at the same epoch
            for i in range(2):
                await producer.send_and_wait("txn", f"dropped{i}".encode())
            await producer.send_offsets_to_transaction({aiokafka.TopicPartition("txn", 0): 99}, "txn-group")
            await producer.abort_transaction()
            async with producer.transaction():  # 3: commit again
                for i in range(3, 5):
                    await producer.send_and_wait("txn", f"kept{i}".encode())
                await producer.send_offsets_to_transaction({aiokafka.TopicPartition("txn", 0): 45}, "txn-group")
        finally:
            await producer.stop()
        seen = {}
        for isolation in ("read_committed", "read_uncommitted"):
            reader = aiokafka.AIOKafkaConsumer(
                "txn", bootstrap_servers=bootstrap, isolation_level=isolation, auto_offset_reset="earliest"
            )
            await reader.start()
            try:
                seen[isolation] = await _drain(reader, 7 if isolation == "read_uncommitted" else 5, timeout_s=10)
                seen[isolation] += await _drain(reader, 1, timeout_s=0.5)
            finally:
                await reader.stop()
        assert seen["read_committed"] == [b"kept0", b"kept1", b"kept2", b"kept3", b"kept4"]
        assert seen["read_uncommitted"] == [b"kept0", b"kept1", b"kept2", b"dropped0", b"dropped1", b"kept3", b"kept4"]
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            offsets = await admin.list_consumer_group_offsets("txn-group")
        finally:
            await admin.close()
        assert offsets[aiokafka.TopicPartition("txn", 0)].offset == 45  # 42, then 99 aborted, then 45

    asyncio.run(scenario())


def test_a_fenced_kafka_producer_gets_the_fencing_code_its_version_knows(cluster: LocalCluster) -> None:
    """A newer session of the id fences the older one; aiokafka's EndTxn v0 gets
    INVALID_PRODUCER_EPOCH, which it knows as ProducerFenced (not PRODUCER_FENCED, KIP-588)."""

    async def scenario() -> None:
        bootstrap = cluster.kafka_bootstrap
        old = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="kafka-tx-fenced")
        await old.start()
        try:
            await old.begin_transaction()
            await old.send_and_wait("txn", b"zombie")
            new = aiokafka.AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id="kafka-tx-fenced")
            await new.start()  # InitProducerId aborts the old session's transaction with a bump
            await new.stop()
            with pytest.raises(ProducerFenced):
                await old.commit_transaction()
        finally:
            await old.stop()

    asyncio.run(scenario())


def test_batched_versions_find_coordinators_fetch_offsets_and_leave(cluster: LocalCluster) -> None:
    """The versions aiokafka does not send: FindCoordinator v4, OffsetFetch v8, LeaveGroup v3."""

    async def scenario() -> None:
        bootstrap = cluster.kafka_bootstrap
        any_node = cluster.kafka_address(1)
        found = await kafka_call(any_node, make(FindCoordinatorV4, key_type=0, coordinator_keys=("vg-a", "vg-b")))
        assert [c.key for c in found.coordinators] == ["vg-a", "vg-b"]
        kafka_ports = {cluster.kafka_address(n) for n in cluster.nodes}
        for c in found.coordinators:
            assert c.error_code == 0 and f"{c.host}:{c.port}" in kafka_ports  # the Kafka listener's address
        member = _consumer(bootstrap, "vg-a", "shared")
        await member.start()
        try:
            await _drain(member, 1)
            await member.commit({aiokafka.TopicPartition("shared", 1): 5})
            coordinator = next(f"{c.host}:{c.port}" for c in found.coordinators if c.key == "vg-a")
            fetched = await kafka_call(
                coordinator,
                make(
                    OffsetFetchV8,
                    groups=(
                        make(
                            OffsetFetchRequestGroup,
                            group_id="vg-a",
                            topics=(make(OffsetFetchRequestTopics, name="shared", partition_indexes=(1,)),),
                        ),
                    ),
                    require_stable=True,
                ),
            )
            (group,) = fetched.groups
            assert group.group_id == "vg-a" and group.error_code == 0
            assert [(t.name, p.partition_index, p.committed_offset) for t in group.topics for p in t.partitions] == [
                ("shared", 1, 5)
            ]
            left = await kafka_call(
                coordinator,
                make(
                    LeaveGroupV3,
                    group_id="vg-a",
                    members=(
                        MemberIdentity(member_id=member._coordinator.member_id),
                        MemberIdentity(member_id="nobody"),
                    ),
                ),
            )
            assert left.error_code == 0
            assert {m.member_id: int(m.error_code) for m in left.members} == {
                member._coordinator.member_id: 0,
                "nobody": ErrorCode.UNKNOWN_MEMBER_ID,
            }
        finally:
            await member.stop()

    asyncio.run(scenario())


def test_a_plaintext_kafka_listener_offers_no_sasl_mechanism(cluster: LocalCluster) -> None:
    """Passwords travel over TLS only: the plaintext listener's service has no SASL sessions."""
    answer = asyncio.run(kafka_call(cluster.kafka_address(1), make(SaslHandshakeV1, mechanism="SCRAM-SHA-256")))
    assert (int(answer.error_code), answer.mechanisms) == (ErrorCode.UNSUPPORTED_SASL_MECHANISM, ())


# -- Translation rules by version (fake service) -----------------------------------------


def _joined(request: pb.JoinGroupRequest) -> pb.JoinGroupResponse:
    return pb.JoinGroupResponse(generation=1, protocol="range", leader="m-1", member_id="m-1")


def test_join_group_v0_rebalances_within_the_session_timeout_and_v1_within_its_own() -> None:
    fields: dict[str, Any] = {
        "group_id": "g",
        "session_timeout": datetime.timedelta(seconds=10),
        "member_id": "",
        "protocol_type": "consumer",
        "protocols": (),
    }

    async def run() -> None:
        service = FakeService({"JoinGroup": _joined})
        await handle(GROUP_API("JoinGroup"), 0, service, **fields)
        await handle(GROUP_API("JoinGroup"), 1, service, rebalance_timeout=datetime.timedelta(seconds=60), **fields)
        answer = await handle(
            GROUP_API("JoinGroup"), 7, service, rebalance_timeout=datetime.timedelta(seconds=60), **fields
        )
        assert [r.rebalance_timeout_ms for r in service.requests("JoinGroup")] == [10_000, 60_000, 60_000]
        assert [r.client_id for r in service.requests("JoinGroup")] == ["test-client"] * 3
        assert answer.member_id == "m-1" and answer.generation_id == 1 and answer.protocol_name == "range"

    asyncio.run(run())


def test_offset_fetch_puts_a_group_error_where_each_version_has_room_for_it() -> None:
    not_coordinator = pb.OffsetFetchResponse(status=pb.GroupStatus(error_code="NOT_COORDINATOR"))
    topic_v1 = GROUP_API("OffsetFetch")

    async def run() -> None:
        from kio.schema.offset_fetch.v1.request import OffsetFetchRequestTopic

        service = FakeService({"OffsetFetch": not_coordinator})
        topics = (make(OffsetFetchRequestTopic, name="t", partition_indexes=(0, 1)),)
        v1 = await handle(topic_v1, 1, service, group_id="g", topics=topics)
        assert [int(p.error_code) for t in v1.topics for p in t.partitions] == [ErrorCode.NOT_COORDINATOR] * 2
        v3 = await handle(topic_v1, 3, service, group_id="g", topics=topics)
        assert int(v3.error_code) == ErrorCode.NOT_COORDINATOR and v3.topics == ()
        group = make(OffsetFetchRequestGroup, group_id="g", topics=None)
        v8 = await handle(topic_v1, 8, service, groups=(group,))
        assert [(g.group_id, int(g.error_code)) for g in v8.groups] == [("g", ErrorCode.NOT_COORDINATOR)]

    asyncio.run(run())


def test_offset_fetch_without_require_stable_answers_the_committed_offsets_as_they_are() -> None:
    from kio.schema.offset_fetch.v3.request import OffsetFetchRequestTopic as TopicV3
    from kio.schema.offset_fetch.v7.request import OffsetFetchRequestTopic as TopicV7

    committed = pb.OffsetFetchResponse(
        offsets=[
            pb.CommittedPartitionOffset(topic="t", partition=0, offset=5, leader_epoch=2),
            pb.CommittedPartitionOffset(topic="other", partition=9, offset=1),
        ]
    )

    async def run() -> None:
        service = FakeService({"OffsetFetch": committed})
        topics = (make(TopicV3, name="t", partition_indexes=(0, 1)),)
        v3 = await handle(GROUP_API("OffsetFetch"), 3, service, group_id="g", topics=topics)
        assert list(service.requests("OffsetFetch")[0].partitions) == []  # the group's offsets as they are
        assert [(t.name, p.partition_index, p.committed_offset) for t in v3.topics for p in t.partitions] == [
            ("t", 0, 5),
            ("t", 1, -1),
        ]
        stable = (make(TopicV7, name="t", partition_indexes=(0,)),)
        await handle(GROUP_API("OffsetFetch"), 7, service, group_id="g", topics=stable, require_stable=True)
        assert [(p.topic, p.partition) for p in service.requests("OffsetFetch")[1].partitions] == [("t", 0)]

    asyncio.run(run())


def test_leave_group_v3_answers_a_group_level_error_once_and_member_errors_per_member() -> None:
    def left(request: pb.LeaveGroupRequest) -> pb.LeaveGroupResponse:
        code = "UNKNOWN_MEMBER_ID" if request.member_id == "gone" else "NONE"
        return pb.LeaveGroupResponse(status=pb.GroupStatus(error_code=code))

    moved = pb.LeaveGroupResponse(status=pb.GroupStatus(error_code="NOT_COORDINATOR"))
    members = (make(MemberIdentity, member_id="here"), make(MemberIdentity, member_id="gone"))

    async def run() -> None:
        per_member = await handle(
            GROUP_API("LeaveGroup"), 3, FakeService({"LeaveGroup": left}), group_id="g", members=members
        )
        assert int(per_member.error_code) == 0
        assert [(m.member_id, int(m.error_code)) for m in per_member.members] == [
            ("here", 0),
            ("gone", ErrorCode.UNKNOWN_MEMBER_ID),
        ]
        group_level = await handle(
            GROUP_API("LeaveGroup"), 3, FakeService({"LeaveGroup": moved}), group_id="g", members=members
        )
        assert (int(group_level.error_code), group_level.members) == (ErrorCode.NOT_COORDINATOR, ())
        v0 = await handle(GROUP_API("LeaveGroup"), 0, FakeService({"LeaveGroup": moved}), group_id="g", member_id="m")
        assert int(v0.error_code) == ErrorCode.NOT_COORDINATOR

    asyncio.run(run())


def test_list_groups_v4_filters_by_state_ignoring_case() -> None:
    listing = pb.ListGroupsResponse(
        groups=[pb.GroupListing(group_id="a", state="Stable"), pb.GroupListing(group_id="b", state="Empty")]
    )

    async def run() -> None:
        service = FakeService({"ListGroups": listing})
        v4 = await handle(GROUP_API("ListGroups"), 4, service, states_filter=("stable",))
        assert [(g.group_id, g.group_state) for g in v4.groups] == [("a", "Stable")]
        v3 = await handle(GROUP_API("ListGroups"), 3, service)
        assert [g.group_id for g in v3.groups] == ["a", "b"]

    asyncio.run(run())


def test_end_txn_v5_answers_the_bumped_epoch_and_old_versions_get_the_fencing_code_they_know() -> None:
    fields: dict[str, Any] = {"transactional_id": "t", "producer_id": 7, "producer_epoch": 3, "committed": True}

    async def run() -> None:
        ok = FakeService({"EndTxn": pb.EndTxnResponse(producer_id=7, producer_epoch=4)})
        v5 = await handle(TXN_API("EndTxn"), 5, ok, **fields)
        assert (v5.producer_id, v5.producer_epoch) == (7, 4)
        assert ok.requests("EndTxn")[0].commit
        for version in range(5):  # below v5: transaction version 1 (the epoch stays)
            await handle(TXN_API("EndTxn"), version, ok, **fields)
        assert [r.transaction_version for r in ok.requests("EndTxn")] == [2, 1, 1, 1, 1, 1]
        fenced = FakeService({"EndTxn": pb.EndTxnResponse(error_code="PRODUCER_FENCED")})
        assert (
            int((await handle(TXN_API("EndTxn"), 1, fenced, **fields)).error_code) == ErrorCode.INVALID_PRODUCER_EPOCH
        )
        assert int((await handle(TXN_API("EndTxn"), 2, fenced, **fields)).error_code) == ErrorCode.PRODUCER_FENCED

    asyncio.run(run())


# -- SASL over a real SaslSessions ---------------------------------------------------------


def _sessions(password: str) -> SaslSessions:
    mechanism = scramp.ScramMechanism("SCRAM-SHA-256")
    salt, stored, server, iterations = mechanism.make_auth_info(password, iteration_count=4096)
    credential = ScramCredential("alice", "SCRAM-SHA-256", salt, stored, server, iterations)
    image = MetadataImage(scram_credentials={("alice", "SCRAM-SHA-256"): credential})
    return SaslSessions(frozenset({"SCRAM-SHA-256"}), image=lambda: image)


async def _login(sessions: SaslSessions, password: str, state: dict[str, object]) -> list[int]:
    service = FakeService({"SaslAuthenticate": sessions.authenticate})
    handshake = await handle(SASL_API("SaslHandshake"), 1, service, state=state, mechanism="SCRAM-SHA-256")
    assert handshake.mechanisms == ("SCRAM-SHA-256",)
    client = scramp.ScramClient(["SCRAM-SHA-256"], "alice", password)
    first = await handle(
        SASL_API("SaslAuthenticate"), 2, service, state=state, auth_bytes=client.get_client_first().encode()
    )
    client.set_server_first(first.auth_bytes.decode())
    final = await handle(
        SASL_API("SaslAuthenticate"), 2, service, state=state, auth_bytes=client.get_client_final().encode()
    )
    if final.error_code == 0:
        client.set_server_final(final.auth_bytes.decode())  # the node proved it holds alice's key
    return [int(handshake.error_code), int(first.error_code), int(final.error_code)]


def test_sasl_scram_login_sets_the_principal_and_a_wrong_password_does_not() -> None:
    async def run() -> None:
        state: dict[str, object] = {}
        assert await _login(_sessions("secret"), "secret", state) == [0, 0, 0]
        assert state["principal"] == "User:alice"
        refused: dict[str, object] = {}
        assert await _login(_sessions("secret"), "wrong", refused) == [0, 0, ErrorCode.SASL_AUTHENTICATION_FAILED]
        assert "principal" not in refused
        early = await handle(SASL_API("SaslAuthenticate"), 0, FakeService(), state={}, auth_bytes=b"n,,n=alice,r=x")
        assert int(early.error_code) == sasl.ILLEGAL_SASL_STATE
        unknown = FakeService({"SaslAuthenticate": _sessions("secret").authenticate})
        refused_mechanism = await handle(SASL_API("SaslHandshake"), 1, unknown, state={}, mechanism="PLAIN")
        assert int(refused_mechanism.error_code) == ErrorCode.UNSUPPORTED_SASL_MECHANISM

    asyncio.run(run())


def test_scram_user_unescapes_the_saslname() -> None:
    assert sasl.scram_user(b"n,,n=a=2Cb=3Dc,r=nonce") == "a,b=c"
    with pytest.raises(ValueError):
        sasl.scram_user(b"garbage")
