"""The Kafka listener on three real nodes (one ``LocalCluster`` with ``kafka=True`` for the module).

aiokafka, a real Kafka client, produces with acks=all and idempotence and consumes back through
the Kafka port (and Ketch's own gRPC consumer reads the same records: the batches are stored
unchanged); Metadata names the three brokers by their Kafka addresses; ListOffsets answers
earliest, latest and by time. With a raw socket: unsupported versions get UNSUPPORTED_VERSION
(or a close where the answer cannot say it), an oversized frame closes only its connection,
pipelined requests are answered in order and Produce acks=0 gets no answer. The authorizer is
on (everyone allowed where no ACL exists) so that an ACL denying the anonymous Kafka caller
shows ``ctx.call`` going through node/access.py.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import TopicAuthorizationFailedError
from kio.schema.api_versions.v3.request import ApiVersionsRequest
from kio.schema.fetch.v12.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.list_offsets.v7.request import ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic
from kio.schema.metadata.v12.request import MetadataRequest, MetadataRequestTopic
from kio.schema.offset_for_leader_epoch.v4.request import (
    OffsetForLeaderEpochRequest,
    OffsetForLeaderPartition,
    OffsetForLeaderTopic,
)
from kio.schema.produce.v9.request import PartitionProduceData, ProduceRequest, TopicProduceData
from kio.static.primitive import Records

import ketch
from ketch import AclBinding, Admin, NewTopic
from ketch.records import build_batch
from node.cluster import LAYOUT, LocalCluster
from tests.harness import running_cluster
from tests.kafka_raw import RawConnection, make, raw_frame, request_frame

MAX_REQUEST_BYTES = 2 * 1024 * 1024
API_VERSIONS = make(ApiVersionsRequest, client_software_name="raw", client_software_version="1")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    root: Path = tmp_path_factory.mktemp("kafka-listener")
    args = [
        "--default-replication-factor=3",
        "--min-insync-replicas=2",
        f"--max-request-bytes={MAX_REQUEST_BYTES}",
        "--authorizer-enabled=true",
        "--allow-everyone-if-no-acl-found=true",
    ]
    with running_cluster(root, 3, args, kafka=True) as c:
        with Admin(bootstrap_servers=c.bootstrap) as admin:
            admin.create_topics(
                [NewTopic("orders", 3), NewTopic("pipeline", 1), NewTopic("secret", 1), NewTopic("epochs", 1)]
            )
            admin.create_acls([AclBinding("TOPIC", "secret", "User:ANONYMOUS", "WRITE", "DENY")])
        yield c


def kafka_addresses(cluster: LocalCluster) -> dict[int, str]:
    return {node_id: cluster.kafka_address(node_id) for node_id in cluster.nodes}


def leader_address(cluster: LocalCluster, topic: str, partition: int = 0) -> str:
    conn = RawConnection(cluster.kafka_address(1))
    try:
        answer = conn.call(
            make(
                MetadataRequest,
                topics=(make(MetadataRequestTopic, topic_id=None, name=topic),),
                allow_auto_topic_creation=False,
                include_topic_authorized_operations=False,
            )
        )
    finally:
        conn.close()
    (found,) = answer.topics
    assert found.topic_id != uuid.UUID(int=0) and found.error_code == 0  # the image's topic id
    leader = next(p.leader_id for p in found.partitions if p.partition_index == partition)
    return kafka_addresses(cluster)[leader]


def test_metadata_names_every_broker_by_its_kafka_address(cluster: LocalCluster) -> None:
    layout = json.loads((cluster.root / LAYOUT).read_text())
    assert layout["kafka_bootstrap"] == ",".join(kafka_addresses(cluster).values())
    assert all(node.listeners["KAFKA"] == cluster.kafka_address(i) for i, node in cluster.nodes.items())

    async def brokers() -> set[tuple[int, str]]:
        client = AIOKafkaClient(bootstrap_servers=cluster.kafka_address(2))
        await client.bootstrap()
        try:
            return {(b.nodeId, f"{b.host}:{b.port}") for b in client.cluster.brokers()}
        finally:
            await client.close()

    assert asyncio.run(brokers()) == set(kafka_addresses(cluster).items())


def test_aiokafka_produces_with_acks_all_and_consumes_back(cluster: LocalCluster) -> None:
    sent = [(f"key-{i % 7}".encode(), f"value-{i}".encode()) for i in range(60)]

    async def produce_and_consume() -> tuple[list[Any], list[Any], dict[str, Any]]:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.kafka_bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            acks = await asyncio.gather(*[await producer.send("orders", value, key=key) for key, value in sent])
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(bootstrap_servers=cluster.kafka_bootstrap, isolation_level="read_committed")
        await consumer.start()
        try:
            partitions = [TopicPartition("orders", p) for p in range(3)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            got: list[Any] = []
            deadline = time.monotonic() + 10
            while len(got) < len(sent) and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(records)
            first = min(got, key=lambda r: r.timestamp)
            offsets = {
                "end": await consumer.end_offsets(partitions),
                "start": await consumer.beginning_offsets(partitions),
                "by_time": await consumer.offsets_for_times(
                    {TopicPartition("orders", first.partition): first.timestamp}
                ),
                "first": first,
            }
        finally:
            await consumer.stop()
        return acks, got, offsets

    acks, got, offsets = asyncio.run(produce_and_consume())
    stored = {(r.partition, r.offset): (r.key, r.value) for r in got}
    assert sorted(stored.values()) == sorted(sent)
    assert {(a.partition, a.offset) for a in acks} == set(stored)  # every acknowledged offset holds its record
    assert sum(offsets["end"].values()) == len(sent) and set(offsets["start"].values()) == {0}
    first = offsets["first"]
    found = offsets["by_time"][TopicPartition("orders", first.partition)]
    assert found.offset <= first.offset and found.timestamp <= first.timestamp

    # The batches are stored as the Kafka client framed them: Ketch's own client reads them over gRPC.
    with ketch.Consumer("orders", bootstrap_servers=cluster.bootstrap, auto_offset_reset="earliest") as consumer:
        seen: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 10
        while len(seen) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend((r.key, r.value) for r in records)
    assert sorted(seen) == sorted(sent)


def test_unsupported_versions_get_unsupported_version(cluster: LocalCluster) -> None:
    conn = RawConnection(cluster.kafka_address(1))
    try:
        conn.send(raw_frame(18, 9, 41))  # ApiVersions v9: the v0 answer, the error and the list
        correlation_id, answer = conn.read_response(18, 0)
        assert correlation_id == 41 and answer.error_code == 35
        assert (0, 3, 9) in {(k.api_key, k.min_version, k.max_version) for k in answer.api_keys}
        conn.send(raw_frame(1, 13, 42))  # Fetch v13 (topic ids): its error code says it
        correlation_id, fetch = conn.read_response(1, 13)
        assert correlation_id == 42 and fetch.error_code == 35
        conn.send(raw_frame(999, 0, 43))  # an unknown API key
        assert conn.read_frame() == b"\0\0\0\x2b\0\x23"
        assert conn.call(API_VERSIONS, 44).error_code == 0  # the connection is still served
        conn.send(raw_frame(3, 0, 45))  # Metadata v0: no error code to say it, so the connection closes
        assert conn.closed_by_server()
    finally:
        conn.close()


def test_an_oversized_frame_closes_only_its_connection(cluster: LocalCluster) -> None:
    bystander = RawConnection(cluster.kafka_address(3))
    offender = RawConnection(cluster.kafka_address(3))
    try:
        assert bystander.call(API_VERSIONS, 1).error_code == 0
        offender.send((MAX_REQUEST_BYTES + 1).to_bytes(4, "big") + b"\0" * 1000)
        assert offender.closed_by_server()
        assert bystander.call(API_VERSIONS, 2).error_code == 0
    finally:
        offender.close()
        bystander.close()
    assert f"frame size {MAX_REQUEST_BYTES + 1} is outside 8..{MAX_REQUEST_BYTES}" in cluster.nodes[3].log_text()


def list_latest(conn: RawConnection, topic: str, correlation_id: int) -> int:
    answer = conn.call(
        make(
            ListOffsetsRequest,
            replica_id=-1,
            isolation_level=0,
            topics=(
                make(
                    ListOffsetsTopic,
                    name=topic,
                    partitions=(make(ListOffsetsPartition, partition_index=0, timestamp=-1),),
                ),
            ),
        ),
        correlation_id,
    )
    partition = answer.topics[0].partitions[0]
    assert partition.error_code == 0
    return int(partition.offset)


def offset_for_leader_epoch(conn: RawConnection, topic: str, epoch: int, current: int = -1) -> tuple[int, int, int]:
    answer = conn.call(
        make(
            OffsetForLeaderEpochRequest,
            replica_id=-1,
            topics=(
                make(
                    OffsetForLeaderTopic,
                    topic=topic,
                    partitions=(
                        make(OffsetForLeaderPartition, partition=0, current_leader_epoch=current, leader_epoch=epoch),
                    ),
                ),
            ),
        )
    )
    (partition,) = answer.topics[0].partitions
    return int(partition.error_code), int(partition.leader_epoch), int(partition.end_offset)


def test_offset_for_leader_epoch_answers_from_the_leaders_epochs(cluster: LocalCluster) -> None:
    """KIP-320 through the Kafka listener: where an epoch ends on the leader; stale or unknown
    current epochs and a non-leader are refused with Kafka's codes."""
    leader = leader_address(cluster, "epochs")
    conn = RawConnection(leader)
    try:
        with ketch.Producer(bootstrap_servers=cluster.bootstrap, acks="all") as producer:
            for i in range(5):
                producer.send("epochs", value=b"%d" % i, partition=0)
            producer.flush()
        end = list_latest(conn, "epochs", 1)
        assert end == 5
        # The topic's first leader holds epoch 0 (or a later one after an election): ask well past it.
        error, epoch, offset = offset_for_leader_epoch(conn, "epochs", 1000)
        assert (error, offset) == (0, 5) and epoch >= 0
        assert offset_for_leader_epoch(conn, "epochs", epoch, current=epoch) == (0, epoch, 5)
        assert offset_for_leader_epoch(conn, "epochs", epoch, current=epoch + 1)[0] == 75  # UNKNOWN_LEADER_EPOCH
        if epoch > 0:
            assert offset_for_leader_epoch(conn, "epochs", epoch, current=epoch - 1)[0] == 74  # FENCED_LEADER_EPOCH
        assert offset_for_leader_epoch(conn, "epochs", -5)[1:] == (-1, -1)  # no epoch <= -5 in the log
    finally:
        conn.close()
    follower = next(a for a in kafka_addresses(cluster).values() if a != leader)
    conn = RawConnection(follower)
    try:
        assert offset_for_leader_epoch(conn, "epochs", 0)[0] == 6  # NOT_LEADER_OR_FOLLOWER
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order_and_acks_0_gets_no_answer(cluster: LocalCluster) -> None:
    conn = RawConnection(leader_address(cluster, "pipeline"))
    try:
        end = list_latest(conn, "pipeline", 1)
        fetch = make(
            FetchRequest,
            cluster_id=None,
            max_wait=timedelta(milliseconds=800),
            min_bytes=1,
            isolation_level=0,
            topics=(
                make(
                    FetchTopic,
                    topic="pipeline",
                    partitions=(make(FetchPartition, partition=0, fetch_offset=end, partition_max_bytes=1 << 20),),
                ),
            ),
            forgotten_topics_data=(),
        )
        produce = make(
            ProduceRequest,
            transactional_id=None,
            acks=0,
            timeout=timedelta(seconds=5),
            topic_data=(
                make(
                    TopicProduceData,
                    name="pipeline",
                    partition_data=(make(PartitionProduceData, index=0, records=Records(build_batch([(b"k", b"v")]))),),
                ),
            ),
        )
        # A long poll on an idle partition, then ApiVersions (ready at once): answered in that order.
        started = time.monotonic()
        conn.send(request_frame(fetch, 2) + request_frame(API_VERSIONS, 3))
        correlation_id, fetched = conn.read_response(1, 12)
        assert correlation_id == 2 and time.monotonic() - started >= 0.7
        (partition,) = fetched.responses[0].partitions
        assert partition.error_code == 0 and not partition.records and fetched.session_id == 0
        correlation_id, versions = conn.read_response(18, 3)
        assert correlation_id == 3 and versions.error_code == 0
        # Produce acks=0, then ApiVersions: the next answer is the ApiVersions one, and the record is stored.
        conn.send(request_frame(produce, 4) + request_frame(API_VERSIONS, 5))
        correlation_id, versions = conn.read_response(18, 3)
        assert correlation_id == 5 and versions.error_code == 0
        deadline = time.monotonic() + 5
        while list_latest(conn, "pipeline", 6) != end + 1:  # the high watermark follows the replicas
            assert time.monotonic() < deadline, "the acks=0 record did not become visible"
            time.sleep(0.05)
    finally:
        conn.close()


def test_a_failed_acks_0_produce_closes_its_connection(cluster: LocalCluster) -> None:
    conn = RawConnection(cluster.kafka_address(1))
    try:
        produce = make(
            ProduceRequest,
            transactional_id=None,
            acks=0,
            timeout=timedelta(seconds=5),
            topic_data=(
                make(
                    TopicProduceData,
                    name="pipeline",
                    partition_data=(make(PartitionProduceData, index=7, records=Records(build_batch([(b"k", b"v")]))),),
                ),
            ),
        )
        conn.send(request_frame(produce, 1))  # partition 7 does not exist: the producer must hear of it
        assert conn.closed_by_server()
    finally:
        conn.close()


def test_the_authorizer_decides_for_the_anonymous_kafka_caller(cluster: LocalCluster) -> None:
    async def produce_to_secret() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.kafka_bootstrap, acks=1)
        await producer.start()
        try:
            await producer.send_and_wait("secret", b"nope")
        finally:
            await producer.stop()

    with pytest.raises(TopicAuthorizationFailedError):
        asyncio.run(produce_to_secret())
