"""CreateAcls, DescribeAcls and DeleteAcls, and the SCRAM users' calls, as a broker answers them.

Reads come from this broker's metadata image; changes are forwarded to the active controller
(coordinator/metadata/security_changes.py decides them) and answered once this broker's own image
holds them, like IncrementalAlterConfigs (node/config_admin.py): an ACL created through a broker
is enforced by that broker when the call returns. Other brokers enforce it when their images
reach the same metadata offset (milliseconds, as in Kafka).

Rules:
- A node without the authorizer (``authorizer_enabled`` false) answers SECURITY_DISABLED to the
  ACL calls, as Kafka does without an authorizer: ACLs it would not enforce are not taken. The
  SCRAM users' calls (AlterUserScramCredentials, DescribeUserScramCredentials) work either way;
  a description never includes salts or keys.
- Each creation and each delete filter gets its own result; a forwarded change that the
  controller could not take fails them all with that error; one committed but not yet visible
  here after ``VISIBILITY_TIMEOUT_S`` is REQUEST_TIMED_OUT (it is committed).
"""

from __future__ import annotations

from coordinator.metadata.acls import AclBinding, select
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.broker import Broker
from node.controller_client import ControllerClient
from node.metadata_follower import MetadataFollower
from node.topic_admin import VISIBILITY_TIMEOUT_S, error_fields

DISABLED = "this node runs without an authorizer (authorizer_enabled=false): ACLs are neither stored nor enforced"


class AclAdmin:
    def __init__(self, broker: Broker, controllers: ControllerClient, follower: MetadataFollower) -> None:
        self.broker = broker
        self.controllers = controllers
        self.follower = follower

    @property
    def enabled(self) -> bool:
        return self.broker.config.authorizer_enabled

    def describe(self, request: pb.DescribeAclsRequest) -> pb.DescribeAclsResponse:
        if not self.enabled:
            return pb.DescribeAclsResponse(error_code=pb.SECURITY_DISABLED, error_message=DISABLED)
        found = select(self.broker.image.acls, AclBinding.from_pb(request.filter))
        return pb.DescribeAclsResponse(acls=[acl.to_pb() for _, acl in found])

    async def create(self, request: pb.CreateAclsRequest) -> pb.CreateAclsResponse:
        out = pb.CreateAclsResponse()
        code, message = await self._forward("CreateAcls", request, out.results)
        if code is not None:
            for _ in request.creations:
                out.results.add(error_code=code, error_message=message)
        return out

    async def delete(self, request: pb.DeleteAclsRequest) -> pb.DeleteAclsResponse:
        out = pb.DeleteAclsResponse()
        code, message = await self._forward("DeleteAcls", request, out.results)
        if code is not None:
            for _ in request.filters:
                out.results.add(error_code=code, error_message=message)
        return out

    async def alter_users(self, request: pb.AlterUserScramCredentialsRequest) -> pb.AlterUserScramCredentialsResponse:
        out = pb.AlterUserScramCredentialsResponse()
        code, message = await self._forward("AlterUserScramCredentials", request, out.results, needs_authorizer=False)
        if code is not None:
            for name in [d.name for d in request.deletions] + [u.name for u in request.upsertions]:
                out.results.add(user=name, error_code=code, error_message=message)
        return out

    def describe_users(
        self, request: pb.DescribeUserScramCredentialsRequest
    ) -> pb.DescribeUserScramCredentialsResponse:
        wanted = set(request.users)
        out = pb.DescribeUserScramCredentialsResponse()
        for (name, mechanism), cred in sorted(self.broker.image.scram_credentials.items()):
            if not wanted or name in wanted:
                out.credentials.add(name=name, mechanism=mechanism, iterations=cred.iterations)
        return out

    async def _forward(
        self, method: str, request: object, results: object, needs_authorizer: bool = True
    ) -> tuple[int | None, str]:
        """Send to the controller and copy its results into ``results``; or the error for them all."""
        if needs_authorizer and not self.enabled:
            return ErrorCode.SECURITY_DISABLED, DISABLED
        try:
            answer = await self.controllers.call(lambda stub: getattr(stub, method), request)
        except Exception as exc:
            return error_fields(exc)
        status = answer.status
        if status.error_code:
            return status.error_code, status.error_message
        if not await self.follower.wait_for(status.metadata_offset, VISIBILITY_TIMEOUT_S):
            return ErrorCode.REQUEST_TIMED_OUT, (
                f"committed at metadata offset {status.metadata_offset}, not yet visible on broker "
                f"{self.broker.node_id} after {VISIBILITY_TIMEOUT_S}s"
            )
        results.extend(answer.results)  # type: ignore[attr-defined]
        return None, ""
