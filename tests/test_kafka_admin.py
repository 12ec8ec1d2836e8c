"""Topic, config, cluster and group administration through the Kafka listener (node/kafka/admin.py).

Real processes: one single-node cluster with the Kafka listener for the module; aiokafka's
``AIOKafkaAdminClient`` as the real client where it has the call, raw kio requests
(tests/kafka_handlers.py) for IncrementalAlterConfigs, DescribeCluster and DeleteGroups, which
aiokafka does not send. Then every handler of node/kafka (groups, admin, transactions, SASL) at
every version it declares, on a fake service: its answer must be the version's response and
encode.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiokafka
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment, ConsumerProtocolMemberMetadata
from aiokafka.errors import InvalidPartitionsError
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from kio.schema.create_topics.v5.request import CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig
from kio.schema.create_topics.v5.request import CreateTopicsRequest as CreateTopicsV5
from kio.schema.delete_groups.v1.request import DeleteGroupsRequest as DeleteGroupsV1
from kio.schema.describe_cluster.v1.request import DescribeClusterRequest as DescribeClusterV1
from kio.schema.describe_configs.v4.request import DescribeConfigsRequest as DescribeConfigsV4
from kio.schema.describe_configs.v4.request import DescribeConfigsResource
from kio.schema.incremental_alter_configs.v1.request import AlterableConfig, AlterConfigsResource
from kio.schema.incremental_alter_configs.v1.request import IncrementalAlterConfigsRequest as AlterV1

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from node.cluster import LocalCluster
from node.kafka import admin, groups, sasl, txn
from node.kafka.context import Api
from tests.harness import running_cluster
from tests.kafka_handlers import FakeService, by_name, context, encode, handle, kafka_call, make, request_type

ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]
TOPIC, SET, APPEND, DELETE = 2, 0, 2, 1
ADMIN_API = by_name(admin.APIS)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with running_cluster(tmp_path_factory.mktemp("kafka-admin"), 1, ARGS, kafka=True) as c:
        yield c


async def _admin(cluster: LocalCluster) -> AIOKafkaAdminClient:
    client = AIOKafkaAdminClient(bootstrap_servers=cluster.kafka_bootstrap)
    await client.start()
    return client


def _errors(answer: Any) -> dict[str, int]:
    return {name: code for name, code, *_ in answer.topic_errors}


async def _partitions(client: AIOKafkaAdminClient, topic: str) -> int:
    (described,) = await client.describe_topics([topic])
    return len(described["partitions"])


async def _topic_config(address: str, topic: str, key: str) -> tuple[str, int]:
    answer = await kafka_call(
        address,
        make(
            DescribeConfigsV4,
            resources=(
                make(DescribeConfigsResource, resource_type=TOPIC, resource_name=topic, configuration_keys=(key,)),
            ),
        ),
    )
    (result,) = answer.results
    assert result.error_code == 0, result
    (entry,) = result.configs
    return entry.value, int(entry.config_source)


def test_topics_are_created_with_defaults_and_configs_grown_and_deleted(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        client = await _admin(cluster)
        try:
            created = await client.create_topics([NewTopic("admin-a", 3, 1, topic_configs={"retention.ms": "123456"})])
            assert _errors(created) == {"admin-a": 0}
            defaults = make(
                CreatableTopic,
                name="admin-defaults",
                num_partitions=-1,
                replication_factor=-1,
                assignments=(),
                configs=(),
            )
            # aiokafka refuses -1 itself; v5 answers what the broker's defaults made of it
            (made,) = (await kafka_call(cluster.kafka_address(1), make(CreateTopicsV5, topics=(defaults,)))).topics
            assert (made.name, int(made.error_code), made.num_partitions, made.replication_factor) == (
                "admin-defaults",
                0,
                1,
                1,
            )
            checked = await client.create_topics([NewTopic("admin-dry", 2, 1)], validate_only=True)
            assert _errors(checked) == {"admin-dry": 0}
            again = await client.create_topics([NewTopic("admin-a", 3, 1)])
            assert _errors(again) == {"admin-a": ErrorCode.TOPIC_ALREADY_EXISTS}
            topics = set(await client.list_topics())
            assert {"admin-a", "admin-defaults"} <= topics and "admin-dry" not in topics
            assert await _partitions(client, "admin-a") == 3
            assert await _partitions(client, "admin-defaults") == 1  # the node's default_partitions
            grown = await client.create_partitions({"admin-a": NewPartitions(5)})
            assert [(name, code) for name, code, _ in grown.topic_errors] == [("admin-a", 0)]
            assert await _partitions(client, "admin-a") == 5
            with pytest.raises(InvalidPartitionsError, match="never removed"):
                await client.create_partitions({"admin-a": NewPartitions(2)})
            (described,) = await client.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "admin-a")])
            (resource,) = described.resources
            entries = {entry[0]: (entry[1], entry[3]) for entry in resource[4]}
            assert entries["retention.ms"] == ("123456", 1)  # DYNAMIC_TOPIC_CONFIG
            # AlterConfigs (aiokafka's alter_configs) replaces the topic's overrides as a whole
            (altered,) = (
                await client.alter_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, "admin-a", configs={"retention.bytes": "1000000"})]
                )
            )[0].resources
            assert altered[0] == 0, altered
            address = cluster.kafka_address(1)
            assert await _topic_config(address, "admin-a", "retention.bytes") == ("1000000", 1)
            assert (await _topic_config(address, "admin-a", "retention.ms"))[1] != 1  # no override any more
            deleted = await client.delete_topics(["admin-defaults", "admin-none"])
            assert dict(deleted.topic_error_codes) == {
                "admin-defaults": 0,
                "admin-none": ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            }
            assert "admin-defaults" not in await client.list_topics()
        finally:
            await client.close()

    asyncio.run(scenario())


def test_incremental_alter_configs_sets_and_deletes_and_refuses_list_operations(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        client = await _admin(cluster)
        try:
            assert _errors(await client.create_topics([NewTopic("admin-configs", 1, 1)])) == {"admin-configs": 0}
        finally:
            await client.close()
        address = cluster.kafka_address(1)

        def alter(operation: int, value: str | None) -> Any:
            return make(
                AlterConfigsResource,
                resource_type=TOPIC,
                resource_name="admin-configs",
                configs=(make(AlterableConfig, name="retention.ms", config_operation=operation, value=value),),
            )

        answer = await kafka_call(address, make(AlterV1, resources=(alter(SET, "777000"),), validate_only=False))
        assert [int(r.error_code) for r in answer.responses] == [0]
        assert await _topic_config(address, "admin-configs", "retention.ms") == ("777000", 1)
        answer = await kafka_call(
            address, make(AlterV1, resources=(alter(APPEND, "1"), alter(DELETE, None)), validate_only=False)
        )
        assert [int(r.error_code) for r in answer.responses] == [ErrorCode.INVALID_REQUEST, 0]
        assert "APPEND" in (answer.responses[0].error_message or "")
        value, source = await _topic_config(address, "admin-configs", "retention.ms")
        assert value != "777000" and source != 1  # back to the broker's value

    asyncio.run(scenario())


def test_describe_cluster_answers_the_kafka_listener_and_refuses_controller_endpoints(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        address = cluster.kafka_address(1)
        answer = await kafka_call(address, make(DescribeClusterV1, include_cluster_authorized_operations=False))
        assert answer.error_code == 0 and answer.cluster_id == cluster.cluster_id
        assert [(b.broker_id, f"{b.host}:{b.port}") for b in answer.brokers] == [(1, address)]
        assert answer.controller_id == 1
        controllers = await kafka_call(
            address, make(DescribeClusterV1, include_cluster_authorized_operations=False, endpoint_type=2)
        )
        assert int(controllers.error_code) == 114  # UNSUPPORTED_ENDPOINT_TYPE

    asyncio.run(scenario())


def test_groups_are_listed_described_and_deleted_only_when_empty(cluster: LocalCluster) -> None:
    async def scenario() -> None:
        client = await _admin(cluster)
        consumer = aiokafka.AIOKafkaConsumer(
            "admin-groups",
            bootstrap_servers=cluster.kafka_bootstrap,
            group_id="admin-group",
            client_id="admin-test-consumer",
            heartbeat_interval_ms=100,
            session_timeout_ms=3000,
        )
        address = cluster.kafka_address(1)
        delete = make(DeleteGroupsV1, groups_names=("admin-group",))
        try:
            assert _errors(await client.create_topics([NewTopic("admin-groups", 2, 1)])) == {"admin-groups": 0}
            await consumer.start()
            await consumer.getmany(timeout_ms=300)
            assert ("admin-group", "consumer") in await client.list_consumer_groups()
            (described,) = await client.describe_consumer_groups(["admin-group"])
            (group,) = described.groups
            error, group_id, state, protocol_type, protocol, members = group[:6]
            assert (error, group_id, state, protocol_type, protocol) == (
                0,
                "admin-group",
                "Stable",
                "consumer",
                "roundrobin",
            )
            ((_, client_id, _, subscription, assignment),) = members
            assert client_id == "admin-test-consumer"
            # the members' own bytes, as Kafka's tools decode them
            assert ConsumerProtocolMemberMetadata.decode(subscription).subscription == ["admin-groups"]
            assert sorted(ConsumerProtocolMemberAssignment.decode(assignment).partitions()) == [
                aiokafka.TopicPartition("admin-groups", 0),
                aiokafka.TopicPartition("admin-groups", 1),
            ]
            busy = await kafka_call(address, delete)
            assert [(r.group_id, int(r.error_code)) for r in busy.results] == [
                ("admin-group", ErrorCode.NON_EMPTY_GROUP)
            ]
            await consumer.stop()
            gone = await kafka_call(address, delete)
            assert [(r.group_id, int(r.error_code)) for r in gone.results] == [("admin-group", 0)]
            assert "admin-group" not in [g for g, _ in await client.list_consumer_groups()]
        finally:
            await consumer.stop()
            await client.close()

    asyncio.run(scenario())


# -- Translation rules (fake service) ------------------------------------------------------------


def test_create_topics_passes_the_defaults_on_refuses_manual_assignments_and_answers_v5_counts() -> None:
    described = pb.DescribeTopicsResponse(
        topics=[pb.TopicDescription(name="t", replication_factor=3, partitions=[pb.PartitionMetadata()] * 4)]
    )

    async def run() -> None:
        service = FakeService(
            {
                "CreateTopics": lambda r: pb.CreateTopicsResponse(
                    topics=[pb.TopicResult(name=t.name) for t in r.topics]
                ),
                "DescribeTopics": described,
            }
        )
        manual = make(CreatableReplicaAssignment, partition_index=0, broker_ids=(1,))
        defaults = (
            make(CreatableTopicConfig, name="retention.ms", value=None),
            make(CreatableTopicConfig, name="a", value="1"),
        )
        topics = (
            make(CreatableTopic, name="t", num_partitions=-1, replication_factor=-1, assignments=(), configs=defaults),
            make(CreatableTopic, name="m", num_partitions=-1, replication_factor=-1, assignments=(manual,), configs=()),
        )
        answer = await handle(ADMIN_API("CreateTopics"), 5, service, topics=topics, validate_only=False)
        (forwarded,) = service.requests("CreateTopics")
        assert [(t.name, t.num_partitions, t.replication_factor) for t in forwarded.topics] == [("t", -1, -1)]
        assert dict(forwarded.topics[0].configs) == {"a": "1"}  # a null value: the broker's default
        by_name = {t.name: t for t in answer.topics}
        assert (int(by_name["t"].error_code), by_name["t"].num_partitions, by_name["t"].replication_factor) == (0, 4, 3)
        assert int(by_name["m"].error_code) == ErrorCode.INVALID_REQUEST

    asyncio.run(run())


def test_describe_cluster_names_a_broker_as_controller_when_the_controller_is_not_one() -> None:
    brokers = [pb.BrokerInfo(node_id=3, host="b3", port=9), pb.BrokerInfo(node_id=2, host="b2", port=9)]

    async def run(controller: int) -> int:
        service = FakeService(
            {"Metadata": pb.MetadataResponse(cluster_id="c", controller_id=controller, brokers=brokers)}
        )
        answer = await handle(ADMIN_API("DescribeCluster"), 1, service, include_cluster_authorized_operations=False)
        return int(answer.controller_id)

    assert asyncio.run(run(3)) == 3  # a combined node: the active controller is a broker
    assert asyncio.run(run(9)) == 2  # a dedicated controller: not reachable here, a broker instead


ALL_APIS = [*groups.APIS, *admin.APIS, *txn.APIS, *sasl.APIS]


async def _refuse(method: str, request: Any) -> Any:
    raise KetchError(f"{method} refused", code=ErrorCode.CLUSTER_AUTHORIZATION_FAILED)


VERSIONS = [(api, v) for api in ALL_APIS for v in range(api.min_version, api.max_version + 1)]


@pytest.mark.parametrize(("api", "version"), VERSIONS, ids=[f"{a.name}-v{v}" for a, v in VERSIONS])
@settings(max_examples=2, deadline=None, database=None, phases=[Phase.generate])
@given(data=st.data())
def test_every_version_declared_answers_that_version_encodable(api: Api, version: int, data: st.DataObject) -> None:
    """Any request kio can decode, answered (defaults) and refused: the version's response, encodable."""
    request = data.draw(st.from_type(request_type(api, version)))

    async def answer(service: Any) -> Any:
        return await api.handler(request, context(api, version, service))

    for service in (FakeService(), _refuse):
        response = asyncio.run(answer(service))
        assert type(response) is context(api, version, service).response_type
        encode(response)
