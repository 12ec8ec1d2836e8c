"""The consumer-group RPCs of ketch.v1.Ketch: protobuf in, GroupManager calls, protobuf out.

A mixin of ``KetchService`` (node/service.py), as thin as the rest of it:
requests become calls of the pure coordinator through ``GroupManager``
(node/group_coordinator.py), which persists and orders them.

Rules:
- Request-level errors (NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS,
  INVALID_GROUP_ID, ...) go in the response's ``status``; per-partition
  commit errors in each partition's ``error_code``; per-group ones in each
  group's entry (DescribeGroups, DeleteGroups). Unexpected errors become
  UNKNOWN_SERVER_ERROR, logged, and the node keeps serving.
- A new member's id is ``<client id>-<random hex>``, drawn here (the pure
  core takes ids as arguments).
- JoinGroup and SyncGroup may wait for the other members: up to the
  request's rebalance timeout (or session timeout) plus 5 s.
- TxnOffsetCommit (KIP-98/447) goes through ``GroupManager.txn_offset_commit``
  (a transactional batch of the producer, KIP-890-verified when it starts
  the transaction on the offsets partition); its per-partition errors are
  OffsetCommit's, its request-level ones also INVALID_PRODUCER_EPOCH and
  CONCURRENT_TRANSACTIONS (retry).
- OffsetFetch asks for stable offsets (``require_stable``, what a
  read_committed Kafka consumer sends) whenever it names its partitions, as
  a consumer positioning itself does: a partition a transaction holds
  pending answers offset -1 with UNSTABLE_OFFSET_COMMIT (retriable) in its
  ``error_code`` and in the status, so the consumer retries rather than
  taking -1 for "nothing committed". A request naming no partitions (the
  admin's listing) gets the committed offsets as they are: a
  consume-transform-produce group almost always has a transaction open.
- ListGroups answers the groups of every offsets partition this broker leads and has loaded.
  While one it leads is still loading (just after it took the leadership over), the status is
  COORDINATOR_LOAD_IN_PROGRESS, with the groups loaded so far, as Kafka's broker answers: a
  listing that silently left out the loading partition's groups would look complete. The admin
  client retries that broker (``Admin.list_consumer_groups``). A broker that has not yet seen its
  new leadership cannot know; it lists what it leads, as Kafka's does.
- Inputs are checked before they reach the coordinator: timeouts must be
  positive, offsets >= -1, partitions >= 0 (INVALID_REQUEST otherwise).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable
from typing import Any

from coordinator.groups import (
    AdminResponse,
    CommitResponse,
    GroupCoordinator,
    GroupDescription,
    GroupResult,
    OffsetCommit,
)
from ketch.api.v1 import ketch_pb2 as pb
from ketch.assignors.base import TopicPartition
from ketch.errors import ErrorCode, KetchError
from node.group_coordinator import GroupManager
from node.metrics import NodeMetrics, timed
from node.topic_admin import error_fields
from node.txn_coordinator import TransactionManager

WAIT_MARGIN_S = 5.0


def _status(exc: Exception | None = None, code: int = 0, message: str = "") -> pb.GroupStatus:
    if exc is not None:
        code, message = error_fields(exc)
    name = ErrorCode(code).name
    return pb.GroupStatus(error_code=name, error_message=message or (name if code else ""))


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise KetchError(message, code=ErrorCode.INVALID_REQUEST)


def _tp(topic: str, partition: int) -> TopicPartition:
    _check(bool(topic) and partition >= 0, f"partition {topic!r}-{partition} needs a topic and a partition >= 0")
    return TopicPartition(topic, partition)


def _offsets(requested: Iterable[pb.CommittedPartitionOffset]) -> dict[TopicPartition, OffsetCommit]:
    """The offsets of an OffsetCommit or TxnOffsetCommit request, checked."""
    offsets: dict[TopicPartition, OffsetCommit] = {}
    for o in requested:
        _check(o.offset >= 0, f"offset {o.offset} for {o.topic}-{o.partition} must be >= 0")
        offsets[_tp(o.topic, o.partition)] = OffsetCommit(o.offset, o.leader_epoch, o.metadata)
    return offsets


def _commit_answers(out: Any, requested: Iterable[pb.CommittedPartitionOffset], committed: CommitResponse) -> None:
    for o in requested:
        code = committed.errors.get(TopicPartition(o.topic, o.partition), 0)
        out.add(topic=o.topic, partition=o.partition, offset=o.offset, error_code=code)


class GroupHandlers:
    groups: GroupManager
    transactions: TransactionManager
    metrics: NodeMetrics
    listener: str  # the listener this servicer serves (node/listeners.py)

    @timed("FindCoordinator")
    async def FindCoordinator(self, request: pb.FindCoordinatorRequest, context: Any) -> pb.FindCoordinatorResponse:
        try:
            if request.key_type not in (0, 1):
                raise KetchError(
                    f"FindCoordinator key_type {request.key_type} is not known; 0 is a group, 1 a transactional id",
                    code=ErrorCode.INVALID_REQUEST,
                )
            manager = self.groups if request.key_type == 0 else self.transactions
            coordinator = await manager.find_coordinator(request.group_id)
            address = coordinator.endpoint(self.listener)
            if address is None:  # never another listener's address (node/listeners.py)
                raise KetchError(
                    f"the coordinator of {request.group_id!r}, broker {coordinator.broker_id}, has no listener "
                    f"{self.listener}, the one this request came in on",
                    code=ErrorCode.COORDINATOR_NOT_AVAILABLE,
                )
        except Exception as exc:
            return pb.FindCoordinatorResponse(status=_status(exc), node_id=-1)
        host, port = address
        return pb.FindCoordinatorResponse(status=_status(), node_id=coordinator.broker_id, host=host, port=port)

    @timed("JoinGroup")
    async def JoinGroup(self, request: pb.JoinGroupRequest, context: Any) -> pb.JoinGroupResponse:
        try:
            _check(request.session_timeout_ms > 0, "session_timeout_ms must be > 0")
            _check(request.rebalance_timeout_ms >= 0, "rebalance_timeout_ms must be >= 0")
            protocols = [(p.name, bytes(p.metadata)) for p in request.protocols]
            new_id = f"{request.client_id or 'member'}-{uuid.uuid4().hex}"
            peer = context.peer() if context is not None else ""
            now = self.groups.clock_ms()
            wait_s = max(request.rebalance_timeout_ms, request.session_timeout_ms) / 1000 + WAIT_MARGIN_S
            joined = await self.groups.call(
                request.group_id,
                lambda c, rid: c.join_group(
                    request.group_id,
                    request.member_id,
                    request.protocol_type,
                    protocols,
                    session_timeout_ms=request.session_timeout_ms,
                    rebalance_timeout_ms=request.rebalance_timeout_ms,
                    request_id=rid,
                    now_ms=now,
                    new_member_id=new_id,
                    client_id=request.client_id,
                    client_host=peer,
                ),
                wait_s,
            )
        except Exception as exc:
            return pb.JoinGroupResponse(status=_status(exc), generation=-1, member_id=request.member_id)
        return pb.JoinGroupResponse(
            status=_status(code=joined.error),
            generation=joined.generation,
            protocol_type=joined.protocol_type,
            protocol=joined.protocol,
            leader=joined.leader,
            member_id=joined.member_id,
            members=[pb.GroupMember(member_id=m, metadata=meta) for m, meta in joined.members],
        )

    @timed("SyncGroup")
    async def SyncGroup(self, request: pb.SyncGroupRequest, context: Any) -> pb.SyncGroupResponse:
        try:
            assignments = {member: bytes(data) for member, data in request.assignments.items()}
            now = self.groups.clock_ms()
            synced = await self.groups.call(
                request.group_id,
                lambda c, rid: c.sync_group(
                    request.group_id, request.member_id, request.generation, assignments, request_id=rid, now_ms=now
                ),
                self._sync_wait_s(request.group_id, request.member_id),
            )
        except Exception as exc:
            return pb.SyncGroupResponse(status=_status(exc))
        return pb.SyncGroupResponse(
            status=_status(code=synced.error),
            protocol_type=synced.protocol_type,
            protocol=synced.protocol,
            assignment=synced.assignment,
        )

    def _sync_wait_s(self, group_id: str, member_id: str) -> float:
        """The member's rebalance timeout (the leader has that long to sync), plus a margin."""
        try:
            _, coordinator = self.groups.loaded(group_id)
        except KetchError:
            return WAIT_MARGIN_S
        group = coordinator.groups.get(group_id)
        member = group.members.get(member_id) if group is not None else None
        return (member.rebalance_timeout_ms / 1000 if member is not None else 0) + WAIT_MARGIN_S

    @timed("Heartbeat")
    async def Heartbeat(self, request: pb.HeartbeatRequest, context: Any) -> pb.HeartbeatResponse:
        try:
            now = self.groups.clock_ms()
            beat = await self.groups.read(
                request.group_id,
                lambda c: c.heartbeat(request.group_id, request.member_id, request.generation, now_ms=now),
            )
        except Exception as exc:
            return pb.HeartbeatResponse(status=_status(exc))
        return pb.HeartbeatResponse(status=_status(code=beat.error))

    @timed("LeaveGroup")
    async def LeaveGroup(self, request: pb.LeaveGroupRequest, context: Any) -> pb.LeaveGroupResponse:
        try:
            now = self.groups.clock_ms()
            left = await self.groups.call(
                request.group_id,
                lambda c, rid: c.leave_group(request.group_id, request.member_id, now_ms=now),
                WAIT_MARGIN_S,
            )
        except Exception as exc:
            return pb.LeaveGroupResponse(status=_status(exc))
        return pb.LeaveGroupResponse(status=_status(code=left.error))

    @timed("OffsetCommit")
    async def OffsetCommit(self, request: pb.OffsetCommitRequest, context: Any) -> pb.OffsetCommitResponse:
        response = pb.OffsetCommitResponse()
        try:
            offsets = _offsets(request.offsets)
            now, wall = self.groups.clock_ms(), self.groups.wall_ms()
            committed: CommitResponse = await self.groups.call(
                request.group_id,
                lambda c, rid: c.commit_offsets(
                    request.group_id, request.member_id, request.generation, offsets, now_ms=now, timestamp_ms=wall
                ),
                WAIT_MARGIN_S,
            )
        except Exception as exc:
            response.status.CopyFrom(_status(exc))
            return response
        response.status.CopyFrom(_status())
        _commit_answers(response.offsets, request.offsets, committed)
        return response

    @timed("TxnOffsetCommit")
    async def TxnOffsetCommit(self, request: pb.TxnOffsetCommitRequest, context: Any) -> pb.TxnOffsetCommitResponse:
        response = pb.TxnOffsetCommitResponse()
        try:
            _check(bool(request.transactional_id), "transactional_id must not be empty")
            offsets = _offsets(request.offsets)
            committed = await self.groups.txn_offset_commit(
                request.transactional_id,
                request.group_id,
                request.member_id,
                request.generation,
                request.producer_id,
                request.producer_epoch,
                offsets,
            )
        except Exception as exc:
            response.status.CopyFrom(_status(exc))
            return response
        response.status.CopyFrom(_status())
        _commit_answers(response.offsets, request.offsets, committed)
        return response

    @timed("OffsetFetch")
    async def OffsetFetch(self, request: pb.OffsetFetchRequest, context: Any) -> pb.OffsetFetchResponse:
        response = pb.OffsetFetchResponse()
        try:
            wanted = [_tp(p.topic, p.partition) for p in request.partitions] or None
            fetched = await self.groups.read(
                request.group_id, lambda c: c.fetch_offsets(request.group_id, wanted, require_stable=wanted is not None)
            )
        except Exception as exc:
            response.status.CopyFrom(_status(exc))
            return response
        response.status.CopyFrom(_status(code=fetched.error))
        for tp, committed in sorted(fetched.offsets.items()):
            response.offsets.add(
                topic=tp.topic,
                partition=tp.partition,
                offset=committed.offset,
                leader_epoch=committed.leader_epoch,
                metadata=committed.metadata,
                commit_timestamp_ms=committed.commit_timestamp_ms,
                error_code=fetched.errors.get(tp, 0),
            )
        return response

    @timed("ListGroups")
    async def ListGroups(self, request: pb.ListGroupsRequest, context: Any) -> pb.ListGroupsResponse:
        response = pb.ListGroupsResponse(status=_status())
        loading = []
        for loaded in list(self.groups.partitions.values()):
            if loaded.coordinator is None:
                loading.append(loaded.index)
                continue
            for g in loaded.coordinator.list_groups():
                response.groups.add(group_id=g.group_id, protocol_type=g.protocol_type, state=str(g.state))
        if loading:
            partitions = ", ".join(f"{self.groups.topic}-{index}" for index in sorted(loading))
            message = f"still loading {partitions}: the groups listed are those loaded so far; retry"
            response.status.CopyFrom(_status(code=ErrorCode.COORDINATOR_LOAD_IN_PROGRESS, message=message))
        return response

    @timed("DescribeGroups")
    async def DescribeGroups(self, request: pb.DescribeGroupsRequest, context: Any) -> pb.DescribeGroupsResponse:
        response = pb.DescribeGroupsResponse()
        for group_id in request.group_ids:
            out = response.groups.add(group_id=group_id)
            try:
                d = await self.groups.read(group_id, functools.partial(_describe, group_id))
            except Exception as exc:
                out.error_code, out.error_message = error_fields(exc)
                continue
            out.state, out.protocol_type, out.protocol = str(d.state), d.protocol_type, d.protocol
            out.generation, out.leader = d.generation, d.leader
            for m in d.members:
                member = out.members.add(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    client_host=m.client_host,
                    member_metadata=m.metadata,
                    member_assignment=m.assignment,
                )
                for tp in m.partitions or ():
                    member.assignment.add(topic=tp.topic, partition=tp.partition)
        return response

    @timed("DeleteGroups")
    async def DeleteGroups(self, request: pb.DeleteGroupsRequest, context: Any) -> pb.DeleteGroupsResponse:
        response = pb.DeleteGroupsResponse()
        for group_id in request.group_ids:
            out = response.results.add(group_id=group_id)
            try:
                deleted = await self.groups.call(group_id, functools.partial(_delete, group_id), WAIT_MARGIN_S)
                if deleted.error:
                    out.error_code, out.error_message = error_fields(
                        KetchError(_explain(ErrorCode(deleted.error), group_id), code=ErrorCode(deleted.error))
                    )
            except Exception as exc:
                out.error_code, out.error_message = error_fields(exc)
        return response

    @timed("ResetGroupOffsets")
    async def ResetGroupOffsets(
        self, request: pb.ResetGroupOffsetsRequest, context: Any
    ) -> pb.ResetGroupOffsetsResponse:
        try:
            new: dict[TopicPartition, int | None] = {}
            for o in request.offsets:
                _check(o.offset >= -1, f"offset {o.offset} for {o.topic}-{o.partition} must be >= 0, or -1 to delete")
                new[_tp(o.topic, o.partition)] = o.offset if o.offset >= 0 else None
            wall = self.groups.wall_ms()
            reset = await self.groups.call(
                request.group_id,
                lambda c, rid: c.reset_offsets(request.group_id, new, timestamp_ms=wall),
                WAIT_MARGIN_S,
            )
        except Exception as exc:
            return pb.ResetGroupOffsetsResponse(status=_status(exc))
        message = _explain(ErrorCode(reset.error), request.group_id) if reset.error else ""
        return pb.ResetGroupOffsetsResponse(status=_status(code=reset.error, message=message))


def _describe(group_id: str, c: GroupCoordinator) -> GroupDescription:
    return c.describe_group(group_id)


def _delete(group_id: str, c: GroupCoordinator, request_id: int) -> GroupResult[AdminResponse]:
    return c.delete_group(group_id)


def _explain(code: ErrorCode, group_id: str) -> str:
    if code is ErrorCode.NON_EMPTY_GROUP:
        return f"group {group_id!r} has active members; stop its consumers first"
    if code is ErrorCode.GROUP_ID_NOT_FOUND:
        return f"group {group_id!r} does not exist"
    return code.name
