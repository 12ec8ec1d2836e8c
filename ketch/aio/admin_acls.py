"""The Admin's ACL calls (Kafka's ``createAcls``, ``describeAcls``, ``deleteAcls``; kafka-acls.sh).

A mixin of ``Admin`` (admin.py), using its connection. Rules:
- ``create_acls([AclBinding, ...])`` stores each ACL (an equal one already stored is kept, not
  doubled); any broker takes the request, forwards it to the active controller and answers once
  its own metadata holds the ACLs. Then the first failed one raises its typed error naming it
  (INVALID_REQUEST for a binding the node refuses; SECURITY_DISABLED when the nodes run without
  the authorizer; CLUSTER_AUTHORIZATION_FAILED without ALTER on the cluster).
- ``describe_acls(AclBindingFilter())`` lists the ACLs the filter matches (all, by default).
- ``delete_acls([AclBindingFilter, ...])`` removes every ACL any filter matches and returns them.
"""

from __future__ import annotations

from collections.abc import Sequence

from ketch.acl import AclBinding, AclBindingFilter
from ketch.aio.connection import Connection
from ketch.api.v1 import ketch_pb2
from ketch.errors import error_for

__all__ = ["AclAdmin"]


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
