"""The Admin's ACL calls (Kafka's ``createAcls``, ``describeAcls``, ``deleteAcls``; kafka-acls.sh).

A mixin of ``Admin`` (admin.py), using its connection. Rules:
- ``create_acls([AclBinding, ...])`` stores each ACL (an equal one already stored is kept, not
  doubled); any broker takes the request, forwards it to the active controller and answers once
  its own metadata holds the ACLs. Then the first failed one raises its typed error naming it
  (INVALID_REQUEST for a binding the node refuses; SECURITY_DISABLED when the nodes run without
  the authorizer; CLUSTER_AUTHORIZATION_FAILED without ALTER on the cluster).
- ``describe_acls(AclBindingFilter())`` lists the ACLs the filter matches (all, by default).
- ``delete_acls([AclBindingFilter, ...])`` removes every ACL any filter matches and returns them.
- ``alter_user_scram_credentials([ScramUpsertion | ScramDeletion, ...])`` sets or removes users'
  SCRAM credentials (Kafka's KIP-554): the keys are derived here from the password (scramp's
  ``make_auth_info``, a random salt), so the password never leaves this process; the first
  failed change raises its typed error. ``describe_user_scram_credentials()`` lists each user's
  mechanisms and iteration counts (never a key).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import scramp

from ketch.acl import AclBinding, AclBindingFilter
from ketch.aio.connection import Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import error_for

__all__ = ["AclAdmin", "ScramDeletion", "ScramUpsertion"]


@dataclass(frozen=True)
class ScramUpsertion:
    user: str
    password: str = field(repr=False)
    mechanism: str = "SCRAM-SHA-256"
    iterations: int = 4096


@dataclass(frozen=True)
class ScramDeletion:
    user: str
    mechanism: str = "SCRAM-SHA-256"


class AclAdmin:
    _conn: Connection

    async def create_acls(self, acls: Sequence[AclBinding]) -> None:
        request = ketch_pb2.CreateAclsRequest(creations=[acl.to_pb() for acl in acls])
        response = await self._conn.call_any("CreateAcls", request)
        assert isinstance(response, ketch_pb2.CreateAclsResponse)
        for acl, result in zip(acls, response.results, strict=True):
            if result.error_code:
                raise error_for(result.error_code, f"{acl}: {result.error_message}")

    async def describe_acls(self, acl_filter: AclBindingFilter | None = None) -> list[AclBinding]:
        request = ketch_pb2.DescribeAclsRequest(filter=(acl_filter or AclBindingFilter()).to_pb())
        response = await self._conn.call_any("DescribeAcls", request)
        assert isinstance(response, ketch_pb2.DescribeAclsResponse)
        if response.error_code:
            raise error_for(response.error_code, response.error_message)
        return [AclBinding.from_pb(acl) for acl in response.acls]

    async def delete_acls(self, filters: Sequence[AclBindingFilter]) -> list[AclBinding]:
        request = ketch_pb2.DeleteAclsRequest(filters=[f.to_pb() for f in filters])
        response = await self._conn.call_any("DeleteAcls", request)
        assert isinstance(response, ketch_pb2.DeleteAclsResponse)
        deleted: list[AclBinding] = []
        for f, result in zip(filters, response.results, strict=True):
            if result.error_code:
                raise error_for(result.error_code, f"{f}: {result.error_message}")
            deleted += [AclBinding.from_pb(acl) for acl in result.matching]
        return deleted

    async def alter_user_scram_credentials(self, alterations: Sequence[ScramUpsertion | ScramDeletion]) -> None:
        request = ketch_pb2.AlterUserScramCredentialsRequest()
        order: list[ScramUpsertion | ScramDeletion] = []
        for change in alterations:
            if isinstance(change, ScramDeletion):
                request.deletions.add(name=change.user, mechanism=change.mechanism)
                order.insert(len(request.deletions) - 1, change)
                continue
            try:
                mechanism = scramp.ScramMechanism(change.mechanism)
            except scramp.ScramException as exc:
                raise ValueError(f"mechanism {change.mechanism!r}: {exc}") from None
            salt, stored_key, server_key, iterations = mechanism.make_auth_info(
                change.password, iteration_count=change.iterations
            )
            request.upsertions.add(
                name=change.user,
                mechanism=change.mechanism,
                salt=salt,
                stored_key=stored_key,
                server_key=server_key,
                iterations=iterations,
            )
            order.append(change)
        response = await self._conn.call_any("AlterUserScramCredentials", request)
        assert isinstance(response, ketch_pb2.AlterUserScramCredentialsResponse)
        for change, result in zip(order, response.results, strict=True):
            if result.error_code:
                raise error_for(result.error_code, f"user {change.user!r}: {result.error_message}")

    async def describe_user_scram_credentials(self, users: Sequence[str] = ()) -> dict[str, list[tuple[str, int]]]:
        """Each user's (mechanism, iterations)."""
        request = ketch_pb2.DescribeUserScramCredentialsRequest(users=list(users))
        response = await self._conn.call_any("DescribeUserScramCredentials", request)
        assert isinstance(response, ketch_pb2.DescribeUserScramCredentialsResponse)
        if response.error_code:
            raise error_for(response.error_code, response.error_message)
        found: dict[str, list[tuple[str, int]]] = {}
        for cred in response.credentials:
            found.setdefault(cred.name, []).append((cred.mechanism, cred.iterations))
        return found
