"""ACLs without a cluster: Kafka's decision rule, the controller's commands, replay and snapshots,
principal mapping, and that every RPC of every service has an access rule."""

from __future__ import annotations

import pytest
from grpc_health.v1 import health_pb2

from coordinator.metadata import security_changes
from coordinator.metadata.acls import AclBinding as Acl
from coordinator.metadata.acls import Authorizer
from coordinator.metadata.delta import replay_batch
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.snapshot import decode_snapshot, encode_snapshot
from ketch.acl import (
    ALL,
    ALLOW,
    ALTER,
    ALTER_CONFIGS,
    CLUSTER,
    CLUSTER_NAME,
    DENY,
    DESCRIBE,
    DESCRIBE_CONFIGS,
    GROUP,
    LITERAL,
    MATCH,
    PREFIXED,
    READ,
    TOPIC,
    TRANSACTIONAL_ID,
    WRITE,
    AclBinding,
    AclBindingFilter,
)
from ketch.api.v1 import controller_pb2, ketch_pb2, raft_pb2
from ketch.errors import ErrorCode
from node.access import RULES, methods_of
from node.config import ConfigError
from node.principal import map_subject, parse_rules


def allow(principal: str, op: int, kind: int, name: str, pattern: int = LITERAL) -> Acl:
    return Acl(kind, name, pattern, principal, op, ALLOW)


def deny(principal: str, op: int, kind: int, name: str, pattern: int = LITERAL) -> Acl:
    return Acl(kind, name, pattern, principal, op, DENY)


def test_kafkas_decision_rule() -> None:
    acls = [
        allow("User:alice", READ, TOPIC, "orders"),
        allow("User:alice", WRITE, TOPIC, "logs-", PREFIXED),
        deny("User:alice", WRITE, TOPIC, "logs-secret"),
        allow("User:*", READ, TOPIC, "public"),
        allow("User:bob", ALL, GROUP, "*"),
        allow("User:carol", ALTER_CONFIGS, TOPIC, "orders"),
        deny("User:mallory", ALL, TOPIC, "*"),
        allow("User:mallory", READ, TOPIC, "orders"),
    ]
    a = Authorizer(acls, frozenset({"User:admin"}))
    assert a.authorize("User:alice", READ, TOPIC, "orders")
    assert a.authorize("User:alice", DESCRIBE, TOPIC, "orders")  # READ implies DESCRIBE
    assert not a.authorize("User:alice", WRITE, TOPIC, "orders")
    assert a.authorize("User:alice", WRITE, TOPIC, "logs-app")  # prefixed
    assert not a.authorize("User:alice", WRITE, TOPIC, "logs-secret")  # deny wins
    assert not a.authorize("User:alice", WRITE, TOPIC, "log")
    assert a.authorize("User:dave", READ, TOPIC, "public")  # User:*
    assert not a.authorize("User:dave", READ, TOPIC, "orders")  # no ACL of his: denied
    assert a.authorize("User:bob", DELETE_ANY, GROUP, "any-group")  # ALL on a literal *
    assert a.authorize("User:carol", DESCRIBE_CONFIGS, TOPIC, "orders")  # ALTER_CONFIGS implies it
    assert not a.authorize("User:carol", DESCRIBE, TOPIC, "orders")
    assert not a.authorize("User:mallory", READ, TOPIC, "orders")  # DENY ALL beats the ALLOW
    assert a.authorize("User:admin", ALTER, CLUSTER, CLUSTER_NAME)  # super user
    assert not a.authorize("User:alice", WRITE, TRANSACTIONAL_ID, "tx")  # no ACL at all: denied
    lenient = Authorizer(acls, frozenset(), allow_everyone_if_no_acl_found=True)
    assert lenient.authorize("User:alice", WRITE, TRANSACTIONAL_ID, "tx")  # ... unless no ACL exists for it
    assert not lenient.authorize("User:alice", READ, GROUP, "g")  # bob's ACL on * exists: the rule applies


DELETE_ANY = 6  # Kafka's DELETE


def test_create_is_idempotent_and_refuses_bad_bindings_alone() -> None:
    good = allow("User:alice", READ, TOPIC, "orders")
    result = security_changes.create({}, [good, good, Acl(TOPIC, "", LITERAL, "User:a", READ, ALLOW)], ["a", "b", "c"])
    assert len(result.records) == 1
    assert [code for code, _ in result.response] == [ErrorCode.NONE, ErrorCode.NONE, ErrorCode.INVALID_REQUEST]
    image = replay_batch(MetadataImage(), 5, result.records)
    assert list(image.acls.values()) == [good]
    assert security_changes.create(image.acls, [good], ["d"]).records == []  # already there
    bad = [
        Acl(9, "x", LITERAL, "User:a", READ, ALLOW),
        Acl(CLUSTER, "other", LITERAL, "User:a", ALTER, ALLOW),
        Acl(TOPIC, "*", PREFIXED, "User:a", READ, ALLOW),
        Acl(TOPIC, "x", LITERAL, "alice", READ, ALLOW),
        Acl(TOPIC, "x", LITERAL, "User:a", 99, ALLOW),
        Acl(TOPIC, "x", LITERAL, "User:a", READ, ALLOW, host="10.0.0.1"),
    ]
    codes = security_changes.create({}, bad, [str(i) for i in range(len(bad))]).response
    assert all(code == ErrorCode.INVALID_REQUEST for code, _ in codes), codes


def test_delete_filters_replay_and_snapshot() -> None:
    acls = [
        allow("User:alice", READ, TOPIC, "orders"),
        allow("User:alice", READ, TOPIC, "ord", PREFIXED),
        allow("User:bob", READ, TOPIC, "*"),
        allow("User:bob", READ, GROUP, "g"),
    ]
    image = replay_batch(MetadataImage(), 3, security_changes.create({}, acls, ["1", "2", "3", "4"]).records)
    assert decode_snapshot(encode_snapshot(image)) == image
    match = Acl(TOPIC, "orders", MATCH, "", 0, 0)
    result = security_changes.delete(image.acls, [match])
    assert sorted(a.principal + a.resource_name for a in result.response[0]) == [
        "User:alice" + "ord",
        "User:alice" + "orders",
        "User:bob" + "*",
    ]
    after = replay_batch(image, 4, result.records)
    assert list(after.acls.values()) == [acls[3]]
    by_principal = security_changes.delete(after.acls, [Acl(0, "", 0, "User:bob", 0, 0)])
    assert replay_batch(after, 5, by_principal.records).acls == {}


def test_client_bindings_use_kafkas_names_and_refuse_unknown_ones() -> None:
    binding = AclBinding("topic", "orders", "User:alice", "read", pattern_type="prefixed")
    wire = binding.to_pb()
    assert (wire.resource_type, wire.operation, wire.pattern_type, wire.permission_type) == (
        TOPIC,
        READ,
        PREFIXED,
        ALLOW,
    )
    assert AclBinding.from_pb(wire) == AclBinding("TOPIC", "orders", "User:alice", "READ", "ALLOW", "PREFIXED")
    assert AclBindingFilter(pattern_type="MATCH").to_pb().pattern_type == MATCH
    with pytest.raises(ValueError, match="operation 'READS' is not one of"):
        AclBinding("TOPIC", "orders", "User:alice", "READS").to_pb()


def test_principal_mapping_rules_are_kafkas() -> None:
    rules = parse_rules(r"RULE:^CN=([^,]+),OU=ops$/ops-$1/L, RULE:^CN=([^,]+)$/$1/,DEFAULT")
    assert map_subject(rules, "CN=Alice,OU=ops") == "ops-alice"
    assert map_subject(rules, "CN=bob") == "bob"
    assert map_subject(rules, "CN=carol,O=Example") == "CN=carol,O=Example"  # DEFAULT
    assert map_subject(parse_rules("RULE:^CN=(.*)$/$1/U"), "CN=dave") == "DAVE"
    assert map_subject(parse_rules(r"RULE:^CN=a\/b$/slash/"), "CN=a/b") == "slash"
    assert map_subject(parse_rules("DEFAULT"), "CN=x") == "CN=x"
    for bad in ("RULE:^CN=(.*$/$1/", "NOPE", "RULE:x/y"):
        with pytest.raises(ConfigError, match="ssl_principal_mapping_rules"):
            parse_rules(bad)


def test_every_method_of_every_service_has_an_access_rule() -> None:
    services = [
        ketch_pb2.DESCRIPTOR.services_by_name["Ketch"],
        controller_pb2.DESCRIPTOR.services_by_name["KetchController"],
        raft_pb2.DESCRIPTOR.services_by_name["KetchRaft"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
    ]
    methods = methods_of(services)
    missing = [m for m in methods if m not in RULES]
    assert not missing, f"RPCs without an access rule (refused by default): {missing}"
    assert len(methods) > 45


def test_listing_calls_are_filtered_not_refused() -> None:
    from node.access import FILTERS, KETCH, Check

    acls = [allow("User:alice", READ, TOPIC, "orders"), allow("User:alice", READ, GROUP, "billing")]
    alice = Check("User:alice", Authorizer(acls, frozenset()))
    groups = ketch_pb2.ListGroupsResponse(groups=[ketch_pb2.GroupListing(group_id=g) for g in ("billing", "other")])
    FILTERS[KETCH + "ListGroups"](ketch_pb2.ListGroupsRequest(), groups, alice)
    assert [g.group_id for g in groups.groups] == ["billing"]
    ops = Check("User:ops", Authorizer([allow("User:ops", DESCRIBE, CLUSTER, CLUSTER_NAME)], frozenset()))
    every = ketch_pb2.ListGroupsResponse(groups=[ketch_pb2.GroupListing(group_id=g) for g in ("billing", "other")])
    FILTERS[KETCH + "ListGroups"](ketch_pb2.ListGroupsRequest(), every, ops)  # DESCRIBE on the cluster: all
    assert len(every.groups) == 2
    offsets = ketch_pb2.OffsetFetchResponse(
        offsets=[ketch_pb2.CommittedPartitionOffset(topic=t, partition=0, offset=5) for t in ("orders", "secret")]
    )
    FILTERS[KETCH + "OffsetFetch"](ketch_pb2.OffsetFetchRequest(group_id="billing"), offsets, alice)
    assert [o.topic for o in offsets.offsets] == ["orders"]
    metadata = ketch_pb2.MetadataResponse(topics=[ketch_pb2.TopicMetadata(name=t) for t in ("orders", "secret", "x")])
    FILTERS[KETCH + "Metadata"](ketch_pb2.MetadataRequest(topics=["secret"]), metadata, alice)
    assert [(t.name, t.error_code) for t in metadata.topics] == [
        ("orders", 0),
        ("secret", ErrorCode.TOPIC_AUTHORIZATION_FAILED),  # named in the request: an error, not silence
    ]
