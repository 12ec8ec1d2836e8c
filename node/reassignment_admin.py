"""Partition reassignments as a broker answers them (AlterPartitionReassignments, ListPartitionReassignments).

Like topic administration (node/topic_admin.py): a change is forwarded to
the active controller, and the answer waits until this broker's own image
holds the entry that carries it, so ``--status`` through the same broker
shows the move at once; the list is answered from this broker's image
(``reassignment.ongoing``). The rules of a move are
coordinator/metadata/reassignment.py's.

Rules:
- Each partition gets its own result (error code and message); a failure to
  reach the controller, or a controller-wide refusal, is every partition's.
- A move that completed at once (it added no replica) is not listed.
"""

from __future__ import annotations

from typing import Any

from coordinator.metadata.reassignment import ongoing
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.topic_admin import VISIBILITY_TIMEOUT_S, TopicAdmin, error_fields


async def alter(
    admin: TopicAdmin, request: pb.AlterPartitionReassignmentsRequest
) -> pb.AlterPartitionReassignmentsResponse:
    out = pb.AlterPartitionReassignmentsResponse()

    def fail_all(code: Any, message: str) -> pb.AlterPartitionReassignmentsResponse:
        for p in request.partitions:
            out.results.add(topic=p.topic, partition=p.partition, error_code=code, error_message=message)
        return out

    try:
        answer: Any = await admin.controllers.call(lambda stub: stub.AlterPartitionReassignments, request)
    except Exception as exc:
        return fail_all(*error_fields(exc))
    status = answer.status
    if status.error_code != ErrorCode.NONE:
        return fail_all(status.error_code, status.error_message)
    if not await admin.follower.wait_for(status.metadata_offset, VISIBILITY_TIMEOUT_S):
        return fail_all(
            ErrorCode.REQUEST_TIMED_OUT,
            f"the controller took the request (offset {status.metadata_offset}) but this broker's metadata "
            f"did not reach it within {VISIBILITY_TIMEOUT_S}s",
        )
    out.results.extend(answer.results)
    return out


def list_ongoing(
    admin: TopicAdmin, request: pb.ListPartitionReassignmentsRequest
) -> pb.ListPartitionReassignmentsResponse:
    out = pb.ListPartitionReassignmentsResponse()
    for topic, index, p in ongoing(admin.broker.image, request.topics):
        out.reassignments.add(
            topic=topic,
            partition=index,
            replicas=list(p.replicas),
            adding_replicas=list(p.adding),
            removing_replicas=list(p.removing),
        )
    return out
