"""ACLs as a client names them: Kafka's resource types, pattern types, operations and permissions.

``AclBinding`` is one ACL (``Admin.create_acls``); ``AclBindingFilter`` selects ACLs
(``Admin.describe_acls``, ``Admin.delete_acls``): a field left None matches anything, and the
pattern type MATCH selects every ACL that applies to the resource name given (a LITERAL of that
name or of ``*``, a PREFIXED whose name starts it). Names are Kafka's (``"TOPIC"``, ``"READ"``,
``"ALLOW"``, ``"PREFIXED"``); on the wire they are Kafka's numbers, kept here once for the client
and the node (coordinator/metadata/acls.py decides with them).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ketch.api.v1 import ketch_pb2

# Kafka's ResourceType
TOPIC, GROUP, CLUSTER, TRANSACTIONAL_ID = 2, 3, 4, 5
RESOURCE_TYPES = {"TOPIC": TOPIC, "GROUP": GROUP, "CLUSTER": CLUSTER, "TRANSACTIONAL_ID": TRANSACTIONAL_ID}
CLUSTER_NAME = "kafka-cluster"
# Kafka's PatternType
ANY, MATCH, LITERAL, PREFIXED = 1, 2, 3, 4
PATTERN_TYPES = {"LITERAL": LITERAL, "PREFIXED": PREFIXED}
WILDCARD = "*"
# Kafka's AclOperation
ALL, READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE = 2, 3, 4, 5, 6, 7, 8
CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE = 9, 10, 11, 12
OPERATIONS = {
    "ALL": ALL,
    "READ": READ,
    "WRITE": WRITE,
    "CREATE": CREATE,
    "DELETE": DELETE,
    "ALTER": ALTER,
    "DESCRIBE": DESCRIBE,
    "CLUSTER_ACTION": CLUSTER_ACTION,
    "DESCRIBE_CONFIGS": DESCRIBE_CONFIGS,
    "ALTER_CONFIGS": ALTER_CONFIGS,
    "IDEMPOTENT_WRITE": IDEMPOTENT_WRITE,
}
# Kafka's AclPermissionType
DENY, ALLOW = 2, 3
PERMISSIONS = {"DENY": DENY, "ALLOW": ALLOW}
# What an ALLOW of the key also allows.
IMPLIED = {
    READ: {DESCRIBE},
    WRITE: {DESCRIBE},
    DELETE: {DESCRIBE},
    ALTER: {DESCRIBE},
    ALTER_CONFIGS: {DESCRIBE_CONFIGS},
}


def name_of(table: Mapping[str, int], code: int) -> str:
    return next((name for name, value in table.items() if value == code), str(code))


def code_of(table: Mapping[str, int], name: str | None, what: str, allow: tuple[str, ...] = ()) -> int:
    """Kafka's number for ``name`` (None: 0, meaning any); ValueError naming the choices."""
    if name is None:
        return 0
    key = name.upper().replace("-", "_")
    extra = {"ANY": ANY, "MATCH": MATCH}
    if key in table:
        return table[key]
    if key in allow:
        return extra[key]
    raise ValueError(f"{what} {name!r} is not one of {', '.join([*table, *allow])}")


@dataclass(frozen=True)
class AclBinding:
    resource_type: str  # TOPIC, GROUP, CLUSTER (name "kafka-cluster") or TRANSACTIONAL_ID
    resource_name: str  # a name, or * for every resource of the type
    principal: str  # User:NAME, or User:* for everyone
    operation: str  # READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, ... or ALL
    permission_type: str = "ALLOW"  # or DENY
    pattern_type: str = "LITERAL"  # or PREFIXED
    host: str = WILDCARD

    def to_pb(self) -> ketch_pb2.AclBinding:
        return ketch_pb2.AclBinding(
            resource_type=code_of(RESOURCE_TYPES, self.resource_type, "resource type"),
            resource_name=self.resource_name,
            pattern_type=code_of(PATTERN_TYPES, self.pattern_type, "pattern type"),
            principal=self.principal,
            host=self.host,
            operation=code_of(OPERATIONS, self.operation, "operation"),
            permission_type=code_of(PERMISSIONS, self.permission_type, "permission type"),
        )

    @classmethod
    def from_pb(cls, m: ketch_pb2.AclBinding) -> AclBinding:
        return cls(
            name_of(RESOURCE_TYPES, m.resource_type),
            m.resource_name,
            m.principal,
            name_of(OPERATIONS, m.operation),
            name_of(PERMISSIONS, m.permission_type),
            name_of(PATTERN_TYPES, m.pattern_type),
            m.host,
        )


@dataclass(frozen=True)
class AclBindingFilter:
    resource_type: str | None = None
    resource_name: str | None = None
    principal: str | None = None
    operation: str | None = None
    permission_type: str | None = None
    pattern_type: str | None = None  # LITERAL, PREFIXED, MATCH or None (any)

    def to_pb(self) -> ketch_pb2.AclBinding:
        return ketch_pb2.AclBinding(
            resource_type=code_of(RESOURCE_TYPES, self.resource_type, "resource type", ("ANY",)),
            resource_name=self.resource_name or "",
            pattern_type=code_of(PATTERN_TYPES, self.pattern_type, "pattern type", ("ANY", "MATCH")),
            principal=self.principal or "",
            operation=code_of(OPERATIONS, self.operation, "operation", ("ANY",)),
            permission_type=code_of(PERMISSIONS, self.permission_type, "permission type", ("ANY",)),
        )
