"""CreateAcls, DescribeAcls and DeleteAcls as a broker answers them.

Reads come from this broker's metadata image; changes are forwarded to the active controller
(coordinator/metadata/acl_changes.py decides them) and answered once this broker's own image
holds them, like IncrementalAlterConfigs (node/config_admin.py): an ACL created through a broker
is enforced by that broker when the call returns. Other brokers enforce it when their images
reach the same metadata offset (milliseconds, as in Kafka).

Rules:
- A node without the authorizer (``authorizer_enabled`` false) answers SECURITY_DISABLED, as
  Kafka does without an authorizer: ACLs it would not enforce are not taken.
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

    async def _forward(self, method: str, request: object, results: object) -> tuple[int | None, str]:
        """Send to the controller and copy its results into ``results``; or the error for them all."""
        if not self.enabled:
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
