"""Authorization of every gRPC call a node serves: what each call needs, checked before it runs.

With ``authorizer_enabled`` the node's servers get ``AccessControl.interceptor``; without it,
nothing here runs (no cost). The decision is Kafka's (coordinator/metadata/acls.py
``Authorizer``) over the ACLs of the node's current metadata image; the caller is
node/principal.py's principal.

Rules:
- Every method of every service has an entry in ``RULES`` (a test checks it); a method without
  one is refused (fail closed). The standard health service needs nothing (probes).
- A rule names what the request needs, as Kafka's KafkaApis does per API: Produce WRITE on each
  topic (and on the transactional id), Fetch READ on each topic, or CLUSTER_ACTION on the cluster
  for a follower's fetch (``replica_id`` set); group calls READ on the group (OffsetCommit also
  READ on each topic), creating topics CREATE on the cluster or on each topic, configs
  DESCRIBE_CONFIGS / ALTER_CONFIGS, reassignments, elections, voters and ACL changes ALTER on the
  cluster, and so on (the table below). Node-to-node calls (Raft, the controller's broker-facing
  calls, transaction markers and verification) need CLUSTER_ACTION on the cluster, which super
  users have: the nodes' own principals belong in ``super_users``.
- A refused call ends with gRPC PERMISSION_DENIED and details ``CODE: why`` where CODE is
  TOPIC_, GROUP_, CLUSTER_ or TRANSACTIONAL_ID_AUTHORIZATION_FAILED; the client raises the matching
  typed error (not retriable). Nothing of the request ran. A stream of requests (FetchStream) has
  each request decided as its unary twin's (Fetch) would be; the first refused one ends the call
  that way, and nothing of it ran.
- Listing calls are filtered instead of refused (Kafka): Metadata and DescribeTopics drop the
  topics the caller may not DESCRIBE (a topic named in the request gets
  TOPIC_AUTHORIZATION_FAILED instead), ListGroups and ListTransactions drop what the caller may not
  DESCRIBE (DESCRIBE on the cluster lists every group), and OffsetFetch answers only the topics
  the caller may DESCRIBE. Metadata's auto-creation is turned off for a caller without CREATE.
- One decision for every listener: ``AccessControl.decide`` (keyed by the full gRPC method name,
  for a principal) and ``AccessControl.filter`` serve gRPC's interceptor and the Kafka listener
  (node/kafka/server.py), whose principal comes from its connection.
- InitProducerId without a transactional id (an idempotent producer) needs IDEMPOTENT_WRITE on the
  cluster or WRITE on some topic (KIP-679's rule).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from coordinator.metadata.acls import Authorizer
from coordinator.metadata.image import MetadataImage
from ketch import acl as A
from ketch.errors import ErrorCode
from node.config import NodeConfig
from node.principal import parse_rules, principal_of
from node.sasl import SaslSessions

log = logging.getLogger("ketch.access")

TOPIC_FAILED = ErrorCode.TOPIC_AUTHORIZATION_FAILED
GROUP_FAILED = ErrorCode.GROUP_AUTHORIZATION_FAILED
CLUSTER_FAILED = ErrorCode.CLUSTER_AUTHORIZATION_FAILED
TXN_FAILED = ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
FAILED_BY_TYPE = {
    A.TOPIC: TOPIC_FAILED,
    A.GROUP: GROUP_FAILED,
    A.CLUSTER: CLUSTER_FAILED,
    A.TRANSACTIONAL_ID: TXN_FAILED,
}
CONFIG_TOPIC, CONFIG_BROKER = 2, 4  # ConfigResource types


@dataclass(frozen=True)
class Denied:
    code: ErrorCode
    why: str


class Check:
    """The decision for one call's principal over one image."""

    def __init__(self, principal: str, authorizer: Authorizer) -> None:
        self.principal = principal
        self.authorizer = authorizer

    def allowed(self, operation: int, resource_type: int, name: str) -> bool:
        return self.authorizer.authorize(self.principal, operation, resource_type, name)

    def need(self, operation: int, resource_type: int, names: Iterable[str]) -> Denied | None:
        for name in names:
            if not self.allowed(operation, resource_type, name):
                kind = A.name_of(A.RESOURCE_TYPES, resource_type).lower().replace("_", " ")
                return Denied(
                    FAILED_BY_TYPE[resource_type],
                    f"{self.principal} may not {A.name_of(A.OPERATIONS, operation)} {kind} {name!r} "
                    "(ketch acl add ... grants it)",
                )
        return None

    def cluster(self, operation: int) -> Denied | None:
        return self.need(operation, A.CLUSTER, [A.CLUSTER_NAME])

    def first(self, *denials: Denied | None) -> Denied | None:
        return next((d for d in denials if d is not None), None)

    def any_allowed(self, operation: int, resource_type: int) -> bool:
        """Some ALLOW of ``operation`` on some resource of the type (KIP-679's authorizeByResourceType)."""
        if self.principal in self.authorizer.super_users:
            return True
        return any(
            acl.permission_type == A.ALLOW
            and acl.principal in (self.principal, "User:*")
            and acl.operation in (operation, A.ALL)
            for acl in self.authorizer.acls_of_type(resource_type)
        )


Rule = Callable[[Any, Check], "Denied | None"]


def _topics(items: Iterable[Any], field: str = "topic") -> list[str]:
    return sorted({getattr(item, field) for item in items})


def _produce(r: Any, c: Check) -> Denied | None:
    txn = c.need(A.WRITE, A.TRANSACTIONAL_ID, [r.transactional_id]) if r.transactional_id else None
    return c.first(txn, c.need(A.WRITE, A.TOPIC, _topics(r.partitions)))


def _fetch(r: Any, c: Check) -> Denied | None:
    if r.HasField("replica_id"):  # a follower's fetch
        return c.cluster(A.CLUSTER_ACTION)
    return c.need(A.READ, A.TOPIC, _topics(r.partitions))


def _create_topics(r: Any, c: Check) -> Denied | None:
    if c.allowed(A.CREATE, A.CLUSTER, A.CLUSTER_NAME):
        return None
    return c.need(A.CREATE, A.TOPIC, [t.name for t in r.topics])


def _init_producer_id(r: Any, c: Check) -> Denied | None:
    if r.transactional_id:
        return c.need(A.WRITE, A.TRANSACTIONAL_ID, [r.transactional_id])
    if c.allowed(A.IDEMPOTENT_WRITE, A.CLUSTER, A.CLUSTER_NAME) or c.any_allowed(A.WRITE, A.TOPIC):
        return None
    return Denied(CLUSTER_FAILED, f"{c.principal} may not write to any topic, so it gets no producer id")


def _add_partitions_to_txn(r: Any, c: Check) -> Denied | None:
    if r.verify_only:  # a partition leader verifying (KIP-890): node to node
        return c.cluster(A.CLUSTER_ACTION)
    return c.first(
        c.need(A.WRITE, A.TRANSACTIONAL_ID, [r.transactional_id]), c.need(A.WRITE, A.TOPIC, _topics(r.partitions))
    )


def _find_coordinator(r: Any, c: Check) -> Denied | None:
    if r.key_type == 1:
        return c.need(A.DESCRIBE, A.TRANSACTIONAL_ID, [r.group_id])
    return c.need(A.DESCRIBE, A.GROUP, [r.group_id])


def _config_resources(resources: Iterable[Any], operation: int, c: Check) -> Denied | None:
    for resource in resources:
        topic = resource.type == CONFIG_TOPIC
        denied = c.need(operation, A.TOPIC, [resource.name]) if topic else c.cluster(operation)
        if denied:
            return denied
    return None


def _group(op: int) -> Rule:
    return lambda r, c: c.need(op, A.GROUP, [r.group_id])


def _cluster(op: int) -> Rule:
    return lambda r, c: c.cluster(op)


def _nothing(r: Any, c: Check) -> Denied | None:
    return None


KETCH, CONTROLLER, RAFT = "/ketch.v1.Ketch/", "/ketch.v1.KetchController/", "/ketch.v1.KetchRaft/"
RULES: dict[str, Rule] = {
    KETCH + "Produce": _produce,
    KETCH + "Fetch": _fetch,
    KETCH + "FetchStream": _fetch,  # each request, as Fetch's
    KETCH + "Metadata": _nothing,  # filtered (FILTERS)
    KETCH + "ListOffsets": lambda r, c: c.need(A.DESCRIBE, A.TOPIC, _topics(r.partitions)),
    KETCH + "OffsetForLeaderEpoch": lambda r, c: c.need(A.DESCRIBE, A.TOPIC, _topics(r.partitions)),
    KETCH + "CreateTopics": _create_topics,
    KETCH + "DeleteTopics": lambda r, c: c.need(A.DELETE, A.TOPIC, r.names),
    KETCH + "DescribeTopics": _nothing,  # filtered
    KETCH + "InitProducerId": _init_producer_id,
    KETCH + "AddPartitionsToTxn": _add_partitions_to_txn,
    KETCH + "AddOffsetsToTxn": lambda r, c: c.first(
        c.need(A.WRITE, A.TRANSACTIONAL_ID, [r.transactional_id]), c.need(A.READ, A.GROUP, [r.group_id])
    ),
    KETCH + "EndTxn": lambda r, c: c.need(A.WRITE, A.TRANSACTIONAL_ID, [r.transactional_id]),
    KETCH + "TxnOffsetCommit": lambda r, c: c.first(
        c.need(A.WRITE, A.TRANSACTIONAL_ID, [r.transactional_id]),
        c.need(A.READ, A.GROUP, [r.group_id]),
        c.need(A.READ, A.TOPIC, _topics(r.offsets)),
    ),
    KETCH + "WriteTxnMarkers": _cluster(A.CLUSTER_ACTION),
    KETCH + "ListTransactions": _nothing,  # filtered
    KETCH + "DescribeTransactions": lambda r, c: c.need(A.DESCRIBE, A.TRANSACTIONAL_ID, r.transactional_ids),
    KETCH + "FindCoordinator": _find_coordinator,
    KETCH + "JoinGroup": _group(A.READ),
    KETCH + "SyncGroup": _group(A.READ),
    KETCH + "Heartbeat": _group(A.READ),
    KETCH + "LeaveGroup": _group(A.READ),
    KETCH + "OffsetCommit": lambda r, c: c.first(
        c.need(A.READ, A.GROUP, [r.group_id]), c.need(A.READ, A.TOPIC, _topics(r.offsets))
    ),
    KETCH + "OffsetFetch": lambda r, c: c.first(
        c.need(A.DESCRIBE, A.GROUP, [r.group_id]), c.need(A.DESCRIBE, A.TOPIC, _topics(r.partitions))
    ),
    KETCH + "ListGroups": _nothing,  # filtered
    KETCH + "DescribeGroups": lambda r, c: c.need(A.DESCRIBE, A.GROUP, r.group_ids),
    KETCH + "DeleteGroups": lambda r, c: c.need(A.DELETE, A.GROUP, r.group_ids),
    KETCH + "ResetGroupOffsets": lambda r, c: c.first(
        c.need(A.READ, A.GROUP, [r.group_id]), c.need(A.READ, A.TOPIC, _topics(r.offsets))
    ),
    KETCH + "DescribeConfigs": lambda r, c: _config_resources(r.resources, A.DESCRIBE_CONFIGS, c),
    KETCH + "IncrementalAlterConfigs": lambda r, c: _config_resources(
        [x.resource for x in r.resources], A.ALTER_CONFIGS, c
    ),
    KETCH + "CreatePartitions": lambda r, c: c.need(A.ALTER, A.TOPIC, [t.name for t in r.topics]),
    KETCH + "AlterPartitionReassignments": _cluster(A.ALTER),
    KETCH + "ListPartitionReassignments": _cluster(A.DESCRIBE),
    KETCH + "CreateAcls": _cluster(A.ALTER),
    KETCH + "DescribeAcls": _cluster(A.DESCRIBE),
    KETCH + "DeleteAcls": _cluster(A.ALTER),
    KETCH + "AlterUserScramCredentials": _cluster(A.ALTER),
    KETCH + "DescribeUserScramCredentials": _cluster(A.DESCRIBE),
    KETCH + "SaslAuthenticate": _nothing,  # anyone may log in
    CONTROLLER + "DescribeQuorum": _cluster(A.DESCRIBE),
    CONTROLLER + "ElectLeaders": _cluster(A.ALTER),
    CONTROLLER + "AddRaftVoter": _cluster(A.ALTER),
    CONTROLLER + "RemoveRaftVoter": _cluster(A.ALTER),
    RAFT + "Step": _cluster(A.CLUSTER_ACTION),
    "/grpc.health.v1.Health/Check": _nothing,
    "/grpc.health.v1.Health/Watch": _nothing,
    "/grpc.health.v1.Health/List": _nothing,
}
# The controller's other calls are made by brokers (registration, heartbeats, ISR changes, the
# metadata stream, forwarded admin commands): node to node.
for _name in (
    "RegisterBroker",
    "BrokerHeartbeat",
    "ControlledShutdown",
    "AlterPartition",
    "CreateTopics",
    "DeleteTopics",
    "IncrementalAlterConfigs",
    "CreatePartitions",
    "AlterPartitionReassignments",
    "FetchMetadata",
    "AllocateProducerIds",
    "CreateAcls",
    "DeleteAcls",
    "AlterUserScramCredentials",
):
    RULES[CONTROLLER + _name] = _cluster(A.CLUSTER_ACTION)


def _filter_topics(request: Any, response: Any, c: Check) -> None:
    named = set(request.topics if hasattr(request, "topics") else request.names)
    keep = []
    for topic in response.topics:
        if c.allowed(A.DESCRIBE, A.TOPIC, topic.name):
            keep.append(topic)
        elif topic.name in named:
            denied = c.need(A.DESCRIBE, A.TOPIC, [topic.name])
            assert denied is not None
            cut = type(topic)(name=topic.name, error_code=int(denied.code), error_message=denied.why)
            keep.append(cut)
    del response.topics[:]
    response.topics.extend(keep)


def _filter_list(
    field: str, key: str, resource_type: int, operation: int = A.DESCRIBE, all_by_cluster: bool = False
) -> Callable[[Any, Any, Check], None]:
    """Keep the items of ``response.<field>`` whose ``<key>`` the caller may ``operation``; with
    ``all_by_cluster``, DESCRIBE on the cluster keeps them all (Kafka's ListGroups)."""

    def apply(request: Any, response: Any, c: Check) -> None:
        if all_by_cluster and c.allowed(A.DESCRIBE, A.CLUSTER, A.CLUSTER_NAME):
            return
        items = getattr(response, field)
        keep = [item for item in items if c.allowed(operation, resource_type, getattr(item, key))]
        del items[:]
        items.extend(keep)

    return apply


FILTERS: dict[str, Callable[[Any, Any, Check], None]] = {
    KETCH + "Metadata": _filter_topics,
    KETCH + "DescribeTopics": _filter_topics,
    KETCH + "ListGroups": _filter_list("groups", "group_id", A.GROUP, all_by_cluster=True),
    KETCH + "OffsetFetch": _filter_list("offsets", "topic", A.TOPIC),  # all of a group's: only visible topics
    KETCH + "ListTransactions": _filter_list("transactions", "transactional_id", A.TRANSACTIONAL_ID),
}


class AccessControl:
    """The authorizer of one node: its settings, and the image whose ACLs it enforces."""

    def __init__(self, config: NodeConfig, sessions: SaslSessions | None = None) -> None:
        self.sessions = sessions
        self.super_users = frozenset(p.strip() for p in config.super_users.split(";") if p.strip())
        self.allow_if_none = config.allow_everyone_if_no_acl_found
        self.rules = parse_rules(config.ssl_principal_mapping_rules)
        self.image: Callable[[], MetadataImage] = MetadataImage
        self._cached: tuple[object, Authorizer] | None = None

    def authorizer(self) -> Authorizer:
        acls = self.image().acls
        if self._cached is None or self._cached[0] is not acls:
            self._cached = (acls, Authorizer(acls.values(), self.super_users, self.allow_if_none))
        return self._cached[1]

    def decide(self, method: str, request: Any, principal: str | None) -> tuple[Check | None, Denied | None]:
        """The rule of ``method`` (a full gRPC method name) for ``principal`` (None: a dead SASL
        session) over ``request``: the check, and the denial if any. Turns Metadata's auto-creation
        off for a caller without CREATE. gRPC's interceptor and the Kafka listener both call it."""
        if principal is None:
            return None, Denied(ErrorCode.SASL_AUTHENTICATION_FAILED, "session unknown or expired; log in again")
        check = Check(principal, self.authorizer())
        rule = RULES.get(method)
        if rule is None:
            return check, Denied(CLUSTER_FAILED, f"{method} has no access rule; refused")
        if (
            method == KETCH + "Metadata"
            and request.allow_auto_topic_creation
            and not (
                check.allowed(A.CREATE, A.CLUSTER, A.CLUSTER_NAME)
                or check.need(A.CREATE, A.TOPIC, request.topics) is None
            )
        ):
            request.allow_auto_topic_creation = False
        return check, rule(request, check)

    @staticmethod
    def filter(method: str, request: Any, response: Any, check: Check) -> None:
        """Drop from a listing answer what the caller may not see (``FILTERS``); others unchanged."""
        post = FILTERS.get(method)
        if post is not None:
            post(request, response, check)

    def interceptor(self) -> grpc.aio.ServerInterceptor:
        return _Interceptor(self)


async def _deny(context: Any, denied: Denied | None, check: Check | None) -> None:
    """End the call: UNAUTHENTICATED for a dead SASL session, else PERMISSION_DENIED ``CODE: why``."""
    assert denied is not None
    status = grpc.StatusCode.UNAUTHENTICATED if check is None else grpc.StatusCode.PERMISSION_DENIED
    log.info("refused to %s: %s", check.principal if check else "a dead session", denied.why)
    await context.abort(status, f"{denied.code.name}: {denied.why}")


class _Interceptor(grpc.aio.ServerInterceptor):
    def __init__(self, access: AccessControl) -> None:
        self.access = access

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            return handler
        post = FILTERS.get(method)
        access = self.access

        async def admit(request: Any, context: Any) -> Check:
            """The caller's check for ``request``, or the call ended (``_deny``) if it is refused."""
            check, denied = access.decide(method, request, principal_of(context, access.rules, access.sessions))
            if check is None or denied is not None:
                await _deny(context, denied, check)
            assert check is not None
            return check

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Any) -> Any:
                check = await admit(request, context)
                response = await inner(request, context)
                if post is not None:
                    post(request, response, check)
                return response

            return grpc.unary_unary_rpc_method_handler(unary, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request: Any, context: Any) -> Any:
                await admit(request, context)
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream, handler.request_deserializer, handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_both = handler.stream_stream

            async def checked(requests: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
                async for request in requests:  # each request is decided as its unary twin's would be
                    await admit(request, context)
                    yield request

            async def both(requests: AsyncIterator[Any], context: Any) -> Any:
                async for item in inner_both(checked(requests, context), context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(
                both, handler.request_deserializer, handler.response_serializer
            )
        return handler  # no client-streaming methods exist; RULES_COVER_EVERY_METHOD keeps it so


def methods_of(services: Sequence[Any]) -> list[str]:
    """Every full method name of the services' descriptors (for the coverage test)."""
    return [f"/{s.full_name}/{m.name}" for s in services for m in s.methods]
