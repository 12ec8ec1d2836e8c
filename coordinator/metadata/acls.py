"""ACLs: the bindings kept in the metadata log, the controller's create and delete commands, and
Kafka's rule for deciding a request (its StandardAuthorizer's semantics).

An ACL says: ``principal`` is allowed (or denied) ``operation`` on the resources of
``resource_type`` named ``resource_name`` (LITERAL: exactly that name, or every resource when the
name is ``*``; PREFIXED: every name starting with it). The numbers are Kafka's, so its tools'
vocabulary maps one to one (``ketch acl``, ``Admin.create_acls``).

Rules of the decision (``Authorizer.authorize``):
- A super user (``super_users``, Kafka's ``super.users``) is allowed everything.
- A DENY that matches wins over any ALLOW.
- An ALLOW matches when its operation is the one asked, or ALL, or one that implies it: READ,
  WRITE, DELETE and ALTER each imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS (Kafka's).
  A DENY matches only the operation it names, or ALL.
- A principal matches itself and ``User:*``; a resource matches a LITERAL binding of its own
  name or of ``*``, and a PREFIXED binding whose name starts it.
- Nothing matches: denied, unless ``allow_everyone_if_no_acl_found`` and no ACL at all exists for
  the resource (Kafka's ``allow.everyone.if.no.acl.found``).

Rules of the commands (security_changes.py):
- Each ACL has an id (a random uuid) in the log; creating an ACL equal to an existing one
  writes nothing and succeeds (Kafka's idempotent CreateAcls). A creation that is not valid
  (an unknown code, ANY in a binding, an empty name, a principal not ``TYPE:NAME``, a cluster
  resource not named ``kafka-cluster``) fails alone with INVALID_REQUEST; the others commit.
- A filter deletes every ACL it matches (0 or Kafka's ANY in a number and ``""`` in a string
  match anything; pattern MATCH selects the ACLs that apply to the literal name given).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from ketch.acl import (  # Kafka's codes, shared with the client (ketch/acl.py)
    ALL,
    ALLOW,
    ANY,
    CLUSTER,
    CLUSTER_NAME,
    DENY,
    IMPLIED,
    MATCH,
    OPERATIONS,
    PATTERN_TYPES,
    PERMISSIONS,
    PREFIXED,
    RESOURCE_TYPES,
    WILDCARD,
    name_of,
)
from ketch.api.v1 import ketch_pb2
from ketch.api.v1 import metadata_pb2 as mpb

ANONYMOUS = "User:ANONYMOUS"


@dataclass(frozen=True, slots=True)
class AclBinding:
    resource_type: int
    resource_name: str
    pattern_type: int
    principal: str
    operation: int
    permission_type: int
    host: str = WILDCARD

    @classmethod
    def from_pb(cls, m: ketch_pb2.AclBinding | mpb.AccessControlEntryRecord) -> AclBinding:
        return cls(
            m.resource_type, m.resource_name, m.pattern_type, m.principal, m.operation, m.permission_type, m.host
        )

    def to_pb(self) -> ketch_pb2.AclBinding:
        return ketch_pb2.AclBinding(
            resource_type=self.resource_type,
            resource_name=self.resource_name,
            pattern_type=self.pattern_type,
            principal=self.principal,
            host=self.host,
            operation=self.operation,
            permission_type=self.permission_type,
        )

    def record(self, acl_id: str) -> mpb.MetadataRecord:
        return mpb.MetadataRecord(
            acl=mpb.AccessControlEntryRecord(
                id=acl_id,
                resource_type=self.resource_type,
                resource_name=self.resource_name,
                pattern_type=self.pattern_type,
                principal=self.principal,
                host=self.host,
                operation=self.operation,
                permission_type=self.permission_type,
            )
        )

    def describe(self) -> str:
        kind = name_of(RESOURCE_TYPES, self.resource_type)
        pattern = name_of(PATTERN_TYPES, self.pattern_type)
        return (
            f"{name_of(PERMISSIONS, self.permission_type)} {self.principal} "
            f"{name_of(OPERATIONS, self.operation)} on {kind} {self.resource_name!r} ({pattern})"
        )


def invalid(binding: AclBinding) -> str | None:
    """Why ``binding`` cannot be stored, or None."""
    if binding.resource_type not in RESOURCE_TYPES.values():
        return f"resource type {binding.resource_type} is not TOPIC 2, GROUP 3, CLUSTER 4 or TRANSACTIONAL_ID 5"
    if binding.pattern_type not in PATTERN_TYPES.values():
        return f"pattern type {binding.pattern_type} is not LITERAL 3 or PREFIXED 4"
    if binding.operation not in OPERATIONS.values():
        return f"operation {binding.operation} is not one of Kafka's ({', '.join(OPERATIONS)})"
    if binding.permission_type not in PERMISSIONS.values():
        return f"permission type {binding.permission_type} is not DENY 2 or ALLOW 3"
    if not binding.resource_name:
        return "an ACL needs a resource name (* for every resource of the type)"
    if binding.resource_type == CLUSTER and binding.resource_name != CLUSTER_NAME:
        return f"the cluster resource is named {CLUSTER_NAME!r}, not {binding.resource_name!r}"
    if binding.pattern_type == PREFIXED and binding.resource_name == WILDCARD:
        return "a PREFIXED ACL cannot use the name *: a LITERAL * already means every resource"
    kind, sep, name = binding.principal.partition(":")
    if not sep or not kind or not name:
        return f"principal {binding.principal!r} is not TYPE:NAME (User:alice, User:*)"
    if binding.host != WILDCARD:
        return f"host {binding.host!r}: Ketch ACLs apply from every host; use *"
    return None


def _matches_filter(acl: AclBinding, f: AclBinding) -> bool:
    def same(value: int, wanted: int) -> bool:
        return wanted in (0, ANY) or value == wanted

    if not (same(acl.resource_type, f.resource_type) and same(acl.operation, f.operation)):
        return False
    if not same(acl.permission_type, f.permission_type):
        return False
    if f.principal and acl.principal != f.principal:
        return False
    if f.host and f.host != WILDCARD and acl.host != f.host:
        return False
    if f.pattern_type == MATCH:
        return bool(f.resource_name) and applies_to(acl, f.resource_name)
    if not same(acl.pattern_type, f.pattern_type):
        return False
    return not f.resource_name or acl.resource_name == f.resource_name


def applies_to(acl: AclBinding, name: str) -> bool:
    """The ACL's resource pattern covers the resource called ``name``."""
    if acl.pattern_type == PREFIXED:
        return name.startswith(acl.resource_name)
    return acl.resource_name in (name, WILDCARD)


def select(acls: Mapping[str, AclBinding], f: AclBinding) -> list[tuple[str, AclBinding]]:
    """The (id, ACL) pairs ``f`` matches, in a stable order."""
    found = [(acl_id, acl) for acl_id, acl in acls.items() if _matches_filter(acl, f)]
    return sorted(found, key=lambda pair: (pair[1].resource_type, pair[1].resource_name, pair[1].principal, pair[0]))


# -- the decision --


class Authorizer:
    """Kafka's decision over one set of ACLs (module rules); build one per metadata image."""

    def __init__(
        self, acls: Iterable[AclBinding], super_users: frozenset[str], allow_everyone_if_no_acl_found: bool = False
    ) -> None:
        self.super_users = super_users
        self.allow_if_none = allow_everyone_if_no_acl_found
        self._by_type: dict[int, list[AclBinding]] = {}
        for acl in acls:
            self._by_type.setdefault(acl.resource_type, []).append(acl)

    def acls_of_type(self, resource_type: int) -> Sequence[AclBinding]:
        return self._by_type.get(resource_type, ())

    def authorize(self, principal: str, operation: int, resource_type: int, name: str) -> bool:
        if principal in self.super_users:
            return True
        candidates = [acl for acl in self._by_type.get(resource_type, ()) if applies_to(acl, name)]
        if not candidates:
            return self.allow_if_none
        principals = (principal, "User:*")
        mine = [acl for acl in candidates if acl.principal in principals]
        if any(acl.permission_type == DENY and acl.operation in (operation, ALL) for acl in mine):
            return False
        return any(
            acl.permission_type == ALLOW
            and (acl.operation in (operation, ALL) or operation in IMPLIED.get(acl.operation, ()))
            for acl in mine
        )
