"""Kafka's topic, config and cluster admin APIs on the Kafka listener, translated to ketch.v1.

Each handler makes the ``ketch.v1`` request of the same API (node/topic_admin.py forwards topic
changes to the active controller and answers once this broker's image holds them;
node/config_admin.py answers configs) and answers the kio response of the client's version.

Rules:
- CreateTopics v2-7: ``num_partitions`` / ``replication_factor`` -1 take the broker defaults,
  ``configs`` are the topic's overrides, ``validate_only`` checks without creating. Manual replica
  assignments are refused per topic (INVALID_REQUEST: Ketch places replicas itself). v5+ answers
  the topic's partitions and replication factor as created (DescribeTopics after the create);
  its per-config entries are left empty (DescribeConfigs has them with their sources). The
  request's timeout is not used: a create is answered once this broker's image holds it.
- DeleteTopics v1-5 (by name; v6's topic ids are not served). CreatePartitions v0-3: manual
  assignments refused per topic, as for CreateTopics.
- DescribeConfigs v1-4: topics (type 2) and brokers (type 4; "" is the cluster-wide default,
  a node id only on that broker, as node/config_admin.py says); ``configuration_keys`` filters
  here. Sources are Kafka's numbers. Synonyms and documentation are not given (empty, null).
- IncrementalAlterConfigs v0-1: SET (0) and DELETE (1). APPEND (2) and SUBTRACT (3), which only
  list-valued configs use, are INVALID_REQUEST for that resource: no Ketch config is a list.
- AlterConfigs v0-2 (not in the issue's list, but aiokafka's and kafka-python's alter_configs
  send it): Kafka's whole-resource form. The resource's own layer (a topic's overrides, the
  cluster-wide or one broker's dynamic configs) becomes exactly the request's keys: those given are
  set (a null value deletes), the others of that layer are deleted. It is DescribeConfigs then
  IncrementalAlterConfigs, so the caller needs DESCRIBE_CONFIGS too, and a change made between
  the two by someone else may be kept or lost (Kafka's own AlterConfigs is one step).
- DescribeCluster v0-1: the brokers and cluster id of Metadata on this listener; the controller
  id is the active controller's when it is one of those brokers, else the lowest broker id (as
  KRaft answers a random broker: clients send controller-bound requests to it). Endpoint type 2
  (controllers, KIP-919) is UNSUPPORTED_ENDPOINT_TYPE. Authorized operations are never computed
  (Kafka's "not requested").
"""

from __future__ import annotations

import uuid
from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.kafka.answers import Refused, call
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, kafka_error, nested

MANUAL_ASSIGNMENT = "manual replica assignments are not supported: Ketch places replicas (leave assignments empty)"
SET, DELETE = 0, 1
TOPIC = 2
BROKERS_ENDPOINT = 1
UNSUPPORTED_ENDPOINT_TYPE = 114


NO_ANSWER = (int(ErrorCode.UNKNOWN_SERVER_ERROR), "the broker gave no answer for this one")


def _refused_all(answer: Any, names: list[str]) -> dict[str, tuple[int, str]]:
    if isinstance(answer, Refused):
        return {n: (answer.code, answer.message) for n in names}
    return {t.name: (int(t.error_code), t.error_message) for t in answer.topics}


def _nth(results: Any, index: int) -> tuple[int, str, list[Any]]:
    """The ``index``th per-resource result of a config answer (one per resource, in order)."""
    if index >= len(results):
        return NO_ANSWER[0], NO_ANSWER[1], []
    got = results[index]
    return int(got.error_code), got.error_message, list(getattr(got, "entries", ()))


# -- Topics ----------------------------------------------------------------------------


async def create_topics(request: Any, ctx: KafkaContext) -> Any:
    manual = {t.name for t in request.topics if t.assignments}
    forwarded = pb.CreateTopicsRequest(validate_only=bool(request.validate_only))
    for t in request.topics:
        if t.name not in manual:
            forwarded.topics.add(
                name=t.name,
                num_partitions=t.num_partitions,
                replication_factor=t.replication_factor,
                configs={c.name: c.value for c in t.configs if c.value is not None},  # null: the default
            )
    results: dict[str, tuple[int, str]] = {n: (ErrorCode.INVALID_REQUEST, MANUAL_ASSIGNMENT) for n in manual}
    if forwarded.topics:
        results.update(_refused_all(await call(ctx, "CreateTopics", forwarded), [t.name for t in forwarded.topics]))
    created = {}
    if ctx.api_version >= 5 and not request.validate_only:
        ok = [n for n, (code, _) in results.items() if not code]
        if ok:
            described = await call(ctx, "DescribeTopics", pb.DescribeTopicsRequest(names=ok))
            if not isinstance(described, Refused):
                created = {d.name: d for d in described.topics if not d.error_code}
    result = nested(ctx.response_type, "CreatableTopicResult")
    out = []
    for t in request.topics:
        code, message = results.get(t.name, NO_ANSWER)
        d = created.get(t.name)
        extra: dict[str, Any] = {}
        if d is not None:
            extra = {"num_partitions": len(d.partitions), "replication_factor": d.replication_factor}
            extra["topic_id"] = _uuid(d.topic_id)
        out.append(
            build(result, name=t.name, error_code=kafka_error(code), error_message=message or None, configs=(), **extra)
        )
    return build(ctx.response_type, topics=tuple(out))


def _controller_broker(answer: pb.MetadataResponse) -> int:
    """The active controller if it is a broker here, else a broker (KRaft's answer): a client sends
    controller-bound requests to that id, and only brokers are reachable on this listener."""
    ids = [b.node_id for b in answer.brokers]
    return answer.controller_id if answer.controller_id in ids else min(ids, default=-1)


def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        return uuid.UUID(int=0)


async def delete_topics(request: Any, ctx: KafkaContext) -> Any:
    names = list(request.topic_names or ())
    results = _refused_all(await call(ctx, "DeleteTopics", pb.DeleteTopicsRequest(names=names)), names)
    entry = nested(ctx.response_type, "DeletableTopicResult")
    out = []
    for n in names:
        code, message = results.get(n, NO_ANSWER)
        out.append(build(entry, name=n, error_code=kafka_error(code), error_message=message or None))
    return build(ctx.response_type, responses=tuple(out))


async def create_partitions(request: Any, ctx: KafkaContext) -> Any:
    manual = {t.name for t in request.topics if t.assignments}
    forwarded = pb.CreatePartitionsRequest(validate_only=bool(request.validate_only))
    for t in request.topics:
        if t.name not in manual:
            forwarded.topics.add(name=t.name, count=t.count)
    results: dict[str, tuple[int, str]] = {n: (ErrorCode.INVALID_REQUEST, MANUAL_ASSIGNMENT) for n in manual}
    if forwarded.topics:
        names = [t.name for t in forwarded.topics]
        results.update(_refused_all(await call(ctx, "CreatePartitions", forwarded), names))
    entry = nested(ctx.response_type, "CreatePartitionsTopicResult")
    out = []
    for t in request.topics:
        code, message = results.get(t.name, NO_ANSWER)
        out.append(build(entry, name=t.name, error_code=kafka_error(code), error_message=message or None))
    return build(ctx.response_type, results=tuple(out))


# -- Configs --------------------------------------------------------------------------


async def describe_configs(request: Any, ctx: KafkaContext) -> Any:
    resources = [pb.ConfigResource(type=r.resource_type, name=r.resource_name) for r in request.resources]
    answer = await call(ctx, "DescribeConfigs", pb.DescribeConfigsRequest(resources=resources))
    result_type = nested(ctx.response_type, "DescribeConfigsResult")
    entry_type = nested(ctx.response_type, "DescribeConfigsResourceResult")
    out = []
    for i, r in enumerate(request.resources):
        code, message, entries = (
            (answer.code, answer.message, []) if isinstance(answer, Refused) else _nth(answer.results, i)
        )
        keys = set(r.configuration_keys) if r.configuration_keys is not None else None
        configs = tuple(
            build(
                entry_type,
                name=e.name,
                value=e.value,
                read_only=e.read_only,
                config_source=int(e.source),
                is_sensitive=False,
                synonyms=(),
                documentation=None,
            )
            for e in entries
            if keys is None or e.name in keys
        )
        out.append(
            build(
                result_type,
                error_code=kafka_error(code),
                error_message=message or None,
                resource_type=r.resource_type,
                resource_name=r.resource_name,
                configs=() if code else configs,
            )
        )
    return build(ctx.response_type, results=tuple(out))


async def incremental_alter_configs(request: Any, ctx: KafkaContext) -> Any:
    results: dict[int, tuple[int, str]] = {}
    forwarded = pb.IncrementalAlterConfigsRequest(validate_only=bool(request.validate_only))
    sent: list[int] = []  # indexes of the request's resources that were forwarded, in order
    for i, r in enumerate(request.resources):
        bad = [c.name for c in r.configs if c.config_operation not in (SET, DELETE)]
        if bad:
            results[i] = (
                ErrorCode.INVALID_REQUEST,
                f"APPEND and SUBTRACT are for list configs, and no Ketch config is a list ({', '.join(bad)}); use SET",
            )
            continue
        item = forwarded.resources.add(resource=pb.ConfigResource(type=r.resource_type, name=r.resource_name))
        for c in r.configs:
            op = pb.ALTER_CONFIG_SET if c.config_operation == SET else pb.ALTER_CONFIG_DELETE
            item.configs.add(name=c.name, op=op, value=c.value or "")
        sent.append(i)
    return await _alter(ctx, request.resources, forwarded, sent, results)


async def alter_configs(request: Any, ctx: KafkaContext) -> Any:
    """AlterConfigs, the older whole-resource form (aiokafka's and kafka-python's alter_configs)."""
    resources = [pb.ConfigResource(type=r.resource_type, name=r.resource_name) for r in request.resources]
    described = await call(ctx, "DescribeConfigs", pb.DescribeConfigsRequest(resources=resources))
    results: dict[int, tuple[int, str]] = {}
    forwarded = pb.IncrementalAlterConfigsRequest(validate_only=bool(request.validate_only))
    sent: list[int] = []
    for i, r in enumerate(request.resources):
        code, message, entries = (
            (described.code, described.message, []) if isinstance(described, Refused) else _nth(described.results, i)
        )
        if code:
            results[i] = (code, message)
            continue
        given = {c.name: c.value for c in r.configs}
        own = _own_layer(r.resource_type, r.resource_name)
        item = forwarded.resources.add(resource=pb.ConfigResource(type=r.resource_type, name=r.resource_name))
        for name, value in given.items():
            op = pb.ALTER_CONFIG_DELETE if value is None else pb.ALTER_CONFIG_SET
            item.configs.add(name=name, op=op, value=value or "")
        for e in entries:  # what the request leaves out of this resource's own layer goes
            if int(e.source) == own and e.name not in given:
                item.configs.add(name=e.name, op=pb.ALTER_CONFIG_DELETE)
        sent.append(i)
    return await _alter(ctx, request.resources, forwarded, sent, results)


def _own_layer(resource_type: int, name: str) -> int:
    """The config source a resource's own settings have (what AlterConfigs replaces)."""
    if resource_type == TOPIC:
        return pb.DYNAMIC_TOPIC_CONFIG
    return pb.DYNAMIC_DEFAULT_BROKER_CONFIG if name == "" else pb.DYNAMIC_BROKER_CONFIG


async def _alter(
    ctx: KafkaContext,
    resources: Any,
    forwarded: pb.IncrementalAlterConfigsRequest,
    sent: list[int],
    results: dict[int, tuple[int, str]],
) -> Any:
    """Forward the resources ``sent`` (their indexes in ``resources``) and answer every resource."""
    if sent:
        answer = await call(ctx, "IncrementalAlterConfigs", forwarded)
        for n, i in enumerate(sent):
            results[i] = (answer.code, answer.message) if isinstance(answer, Refused) else _nth(answer.results, n)[:2]
    entry = nested(ctx.response_type, "AlterConfigsResourceResponse")
    return build(
        ctx.response_type,
        responses=tuple(
            build(
                entry,
                error_code=kafka_error(results[i][0]),
                error_message=results[i][1] or None,
                resource_type=r.resource_type,
                resource_name=r.resource_name,
            )
            for i, r in enumerate(resources)
        ),
    )


# -- Cluster ----------------------------------------------------------------------------


async def describe_cluster(request: Any, ctx: KafkaContext) -> Any:
    endpoint_type = int(getattr(request, "endpoint_type", BROKERS_ENDPOINT))
    if endpoint_type != BROKERS_ENDPOINT:
        return build(
            ctx.response_type,
            error_code=kafka_error(UNSUPPORTED_ENDPOINT_TYPE),
            error_message=f"endpoint type {endpoint_type} is not served: Ketch answers brokers (1) only",
            endpoint_type=endpoint_type,
            cluster_id="",
            brokers=(),
        )
    answer = await call(ctx, "Metadata", pb.MetadataRequest(topics=[]))
    if isinstance(answer, Refused):
        return build(
            ctx.response_type,
            error_code=kafka_error(answer.code),
            error_message=answer.message,
            cluster_id="",
            brokers=(),
        )
    broker = nested(ctx.response_type, "DescribeClusterBroker")
    return build(
        ctx.response_type,
        error_code=kafka_error(0),
        error_message=None,
        endpoint_type=BROKERS_ENDPOINT,
        cluster_id=answer.cluster_id,
        controller_id=_controller_broker(answer),
        brokers=tuple(
            build(broker, broker_id=b.node_id, host=b.host, port=b.port, rack=b.rack or None) for b in answer.brokers
        ),
    )


APIS = [
    Api(19, "CreateTopics", 2, 7, create_topics),
    Api(20, "DeleteTopics", 1, 5, delete_topics),
    Api(37, "CreatePartitions", 0, 3, create_partitions),
    Api(32, "DescribeConfigs", 1, 4, describe_configs),
    Api(44, "IncrementalAlterConfigs", 0, 1, incremental_alter_configs),
    Api(33, "AlterConfigs", 0, 2, alter_configs),
    Api(60, "DescribeCluster", 0, 1, describe_cluster),
]
