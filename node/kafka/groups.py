"""Kafka's consumer-group APIs on the Kafka listener, translated to the ketch.v1 group calls.

Each handler takes the kio request of the client's version, makes the ``ketch.v1`` request of
the same API, runs it with ``ctx.call`` (node/group_service.py, the group coordinator) and
answers the kio response of that version. The group protocol is the same (Kafka's classic one);
metadata and assignment bytes pass through unchanged.

Rules:
- FindCoordinator v0-4: key type 0 is a group, 1 a transactional id; v4 carries several keys and
  answers each on its own. The address is the coordinator's on this (the Kafka) listener.
- JoinGroup v0-7: v0 has no rebalance timeout, the session timeout is used (Kafka's rule). A new
  member gets its id at once on every version: the servicer does not implement KIP-394's
  MEMBER_ID_REQUIRED round trip, which a broker may skip (clients take the id either way).
- Static membership (KIP-345, ``group_instance_id``) is not implemented: the field is read and
  ignored, such a member is a dynamic one (a restart rebalances), answers carry a null instance id.
- LeaveGroup v3+ names several members: one call each; a group-level error (coordinator, group
  authorization) is the top-level error code, a member's own (UNKNOWN_MEMBER_ID) is in its entry.
- OffsetCommit v2-9 and OffsetFetch v1-8: a request-level error answers every partition of an
  OffsetCommit; OffsetFetch puts it in the top-level error code (v2+; v1 has none, so in each
  partition). UNSTABLE_OFFSET_COMMIT (a transaction holds the offset) is per partition only.
  OffsetCommit's retention time (v2-4) is ignored: offsets are kept as long as the group is.
- OffsetFetch's ``require_stable`` (v7+, KIP-447; what a read_committed consumer sends) is
  honoured: with it, a partition a transaction holds pending answers UNSTABLE_OFFSET_COMMIT
  (retriable); without it (and on v1-6, whose clients do not know that code) the committed
  offset is answered as it is, as Kafka does. A topic the caller may not DESCRIBE is then
  answered -1 (the listing is filtered by node/access.py) rather than TOPIC_AUTHORIZATION_FAILED.
- ListGroups v0-4 (v4 filters by state here, ignoring case as Kafka does). While an offsets
  partition the broker leads is loading, the error is COORDINATOR_LOAD_IN_PROGRESS and the groups
  loaded so far come with it, as from Kafka's broker. DescribeGroups v0-5:
  each member's metadata (its subscription for the group's protocol) and assignment are the bytes
  the members sent, which Kafka's tools decode; an unknown group is state Dead with no error, as
  in Kafka. DeleteGroups v0-2: per group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.kafka.answers import Refused, call, ms
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, kafka_error, nested

# Errors about the group as a whole (the coordinator, its authorization, its id), not one member.
GROUP_LEVEL = frozenset(
    {
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
        ErrorCode.COORDINATOR_LOAD_IN_PROGRESS,
        ErrorCode.GROUP_AUTHORIZATION_FAILED,
        ErrorCode.INVALID_GROUP_ID,
        ErrorCode.INVALID_REQUEST,
    }
)


def status_of(answer: Any) -> tuple[int, str]:
    """(code, message) of a group call: the refusal, or the answer's ``status``."""
    if isinstance(answer, Refused):
        return answer.code, answer.message
    return int(answer.status.error_code), answer.status.error_message


# -- FindCoordinator ------------------------------------------------------------


async def find_coordinator(request: Any, ctx: KafkaContext) -> Any:
    key_type = int(getattr(request, "key_type", 0))
    keys = tuple(request.coordinator_keys) if ctx.api_version >= 4 else (request.key,)
    found = [await _coordinator(ctx, key, key_type) for key in keys]
    if ctx.api_version < 4:
        return build(ctx.response_type, **found[0])
    entry = nested(ctx.response_type, "Coordinator")
    return build(
        ctx.response_type, coordinators=tuple(build(entry, key=k, **f) for k, f in zip(keys, found, strict=True))
    )


async def _coordinator(ctx: KafkaContext, key: str, key_type: int) -> dict[str, Any]:
    answer = await call(ctx, "FindCoordinator", pb.FindCoordinatorRequest(group_id=key, key_type=key_type))
    code, message = status_of(answer)
    if code:
        return {"error_code": kafka_error(code), "error_message": message, "node_id": -1, "host": "", "port": -1}
    return {
        "error_code": kafka_error(0),
        "error_message": None,
        "node_id": answer.node_id,
        "host": answer.host,
        "port": answer.port,
    }


# -- Membership -------------------------------------------------------------------


async def join_group(request: Any, ctx: KafkaContext) -> Any:
    session_ms = ms(request.session_timeout)
    rebalance_ms = ms(request.rebalance_timeout) if ctx.api_version >= 1 else session_ms
    answer = await call(
        ctx,
        "JoinGroup",
        pb.JoinGroupRequest(
            group_id=request.group_id,
            member_id=request.member_id,
            protocol_type=request.protocol_type,
            protocols=[pb.GroupProtocol(name=p.name, metadata=p.metadata) for p in request.protocols],
            session_timeout_ms=session_ms,
            rebalance_timeout_ms=rebalance_ms,
            client_id=ctx.client_id or "",
        ),
    )
    code, _ = status_of(answer)
    if code:
        return build(
            ctx.response_type,
            error_code=kafka_error(code),
            generation_id=-1,
            protocol_name="" if ctx.api_version < 7 else None,
            leader="",
            member_id=request.member_id,
            members=(),
        )
    member = nested(ctx.response_type, "JoinGroupResponseMember")
    return build(
        ctx.response_type,
        error_code=kafka_error(0),
        generation_id=answer.generation,
        protocol_type=answer.protocol_type or None,
        protocol_name=answer.protocol,
        leader=answer.leader,
        member_id=answer.member_id,
        members=tuple(build(member, member_id=m.member_id, metadata=m.metadata) for m in answer.members),
    )


async def sync_group(request: Any, ctx: KafkaContext) -> Any:
    answer = await call(
        ctx,
        "SyncGroup",
        pb.SyncGroupRequest(
            group_id=request.group_id,
            member_id=request.member_id,
            generation=request.generation_id,
            assignments={a.member_id: a.assignment for a in request.assignments},
        ),
    )
    code, _ = status_of(answer)
    if code:
        return build(ctx.response_type, error_code=kafka_error(code), assignment=b"")
    return build(
        ctx.response_type,
        error_code=kafka_error(0),
        protocol_type=answer.protocol_type or None,
        protocol_name=answer.protocol or None,
        assignment=answer.assignment,
    )


async def heartbeat(request: Any, ctx: KafkaContext) -> Any:
    answer = await call(
        ctx,
        "Heartbeat",
        pb.HeartbeatRequest(group_id=request.group_id, member_id=request.member_id, generation=request.generation_id),
    )
    return build(ctx.response_type, error_code=kafka_error(status_of(answer)[0]))


async def leave_group(request: Any, ctx: KafkaContext) -> Any:
    if ctx.api_version < 3:
        answer = await _leave(ctx, request.group_id, request.member_id)
        return build(ctx.response_type, error_code=kafka_error(status_of(answer)[0]))
    result = nested(ctx.response_type, "MemberResponse")
    top, members = 0, []
    for m in request.members:
        code, _ = status_of(await _leave(ctx, request.group_id, m.member_id))
        if code in GROUP_LEVEL:
            top = top or code
            continue
        members.append(
            build(result, member_id=m.member_id, group_instance_id=m.group_instance_id, error_code=kafka_error(code))
        )
    return build(ctx.response_type, error_code=kafka_error(top), members=() if top else tuple(members))


async def _leave(ctx: KafkaContext, group_id: str, member_id: str) -> Any:
    return await call(ctx, "LeaveGroup", pb.LeaveGroupRequest(group_id=group_id, member_id=member_id))


# -- Offsets ------------------------------------------------------------------------


def committed_offsets(request: Any) -> list[pb.CommittedPartitionOffset]:
    """The offsets of an OffsetCommit or TxnOffsetCommit request (both name them the same way)."""
    return [
        pb.CommittedPartitionOffset(
            topic=t.name,
            partition=p.partition_index,
            offset=p.committed_offset,
            leader_epoch=getattr(p, "committed_leader_epoch", -1),
            metadata=p.committed_metadata or "",
        )
        for t in request.topics
        for p in t.partitions
    ]


async def offset_commit(request: Any, ctx: KafkaContext) -> Any:
    offsets = committed_offsets(request)
    answer = await call(
        ctx,
        "OffsetCommit",
        pb.OffsetCommitRequest(
            group_id=request.group_id,
            member_id=request.member_id,
            generation=request.generation_id_or_member_epoch,
            offsets=offsets,
        ),
    )
    return build(ctx.response_type, topics=commit_answers(ctx.response_type, "OffsetCommit", request.topics, answer))


def commit_answers(
    response_type: type[Any], api: str, topics: Any, answer: Any, translate: Callable[[int], int] = int
) -> tuple[Any, ...]:
    """Per topic and partition of an OffsetCommit or TxnOffsetCommit: its code, or the request's
    (each through ``translate``, the version's view of a code)."""
    code, _ = status_of(answer)
    codes = {} if code else {(o.topic, o.partition): int(o.error_code) for o in answer.offsets}
    topic_type = nested(response_type, f"{api}ResponseTopic")
    partition_type = nested(response_type, f"{api}ResponsePartition")
    return tuple(
        build(
            topic_type,
            name=t.name,
            partitions=tuple(
                build(
                    partition_type,
                    partition_index=p.partition_index,
                    error_code=kafka_error(translate(code or codes.get((t.name, p.partition_index), 0))),
                )
                for p in t.partitions
            ),
        )
        for t in topics
    )


async def offset_fetch(request: Any, ctx: KafkaContext) -> Any:
    if ctx.api_version < 8:
        stable = bool(getattr(request, "require_stable", False))
        code, topics = await _fetch_offsets(ctx, request.group_id, request.topics, "", stable)
        if ctx.api_version < 2:  # no top-level error code: each partition carries it
            return build(ctx.response_type, topics=topics if not code else _with_error(ctx, request.topics, code, ""))
        return build(ctx.response_type, error_code=kafka_error(code), topics=() if code else topics)
    group_type = nested(ctx.response_type, "OffsetFetchResponseGroup")
    groups = []
    for g in request.groups:
        code, topics = await _fetch_offsets(ctx, g.group_id, g.topics, "s", bool(request.require_stable))
        groups.append(
            build(group_type, group_id=g.group_id, error_code=kafka_error(code), topics=() if code else topics)
        )
    return build(ctx.response_type, groups=tuple(groups))


async def _fetch_offsets(
    ctx: KafkaContext, group_id: str, topics: Any, plural: str, stable: bool
) -> tuple[int, tuple[Any, ...]]:
    """(group-level code, the topics' answers); ``topics`` None asks for every committed offset.

    Named partitions with ``stable`` are asked by name (a pending transactional offset answers
    UNSTABLE_OFFSET_COMMIT); without it the group's committed offsets are asked as they are (the
    ketch.v1 call without partitions) and the named ones picked, -1 where none is committed."""
    wanted = [(t.name, p) for t in topics or () for p in t.partition_indexes or ()]
    asked = [pb.TopicPartitionRef(topic=t, partition=p) for t, p in wanted] if stable else []
    answer = await call(ctx, "OffsetFetch", pb.OffsetFetchRequest(group_id=group_id, partitions=asked))
    code, _ = status_of(answer)
    if code and code != ErrorCode.UNSTABLE_OFFSET_COMMIT:
        return code, ()
    offsets = {(o.topic, o.partition): o for o in answer.offsets}
    if wanted and not stable:
        none = pb.CommittedPartitionOffset(offset=-1, leader_epoch=-1)
        offsets = {tp: offsets.get(tp, none) for tp in wanted}
    by_topic: dict[str, list[Any]] = {}
    partition_type = nested(ctx.response_type, f"OffsetFetchResponsePartition{plural}")
    for (topic, partition), o in offsets.items():
        by_topic.setdefault(topic, []).append(
            build(
                partition_type,
                partition_index=partition,
                committed_offset=o.offset,
                committed_leader_epoch=o.leader_epoch,
                metadata=o.metadata,
                error_code=kafka_error(o.error_code),
            )
        )
    topic_type = nested(ctx.response_type, f"OffsetFetchResponseTopic{plural}")
    return 0, tuple(build(topic_type, name=name, partitions=tuple(ps)) for name, ps in by_topic.items())


def _with_error(ctx: KafkaContext, topics: Any, code: int, plural: str) -> tuple[Any, ...]:
    partition_type = nested(ctx.response_type, f"OffsetFetchResponsePartition{plural}")
    topic_type = nested(ctx.response_type, f"OffsetFetchResponseTopic{plural}")
    return tuple(
        build(
            topic_type,
            name=t.name,
            partitions=tuple(
                build(partition_type, partition_index=p, committed_offset=-1, metadata="", error_code=kafka_error(code))
                for p in t.partition_indexes or ()
            ),
        )
        for t in topics or ()
    )


# -- Group administration -------------------------------------------------------------


async def list_groups(request: Any, ctx: KafkaContext) -> Any:
    answer = await call(ctx, "ListGroups", pb.ListGroupsRequest())
    code, _ = status_of(answer)
    groups = () if isinstance(answer, Refused) else answer.groups  # LOAD_IN_PROGRESS: those loaded so far
    states = {state.lower() for state in getattr(request, "states_filter", ()) or ()}
    listed = nested(ctx.response_type, "ListedGroup")
    return build(
        ctx.response_type,
        error_code=kafka_error(code),
        groups=tuple(
            build(listed, group_id=g.group_id, protocol_type=g.protocol_type, group_state=g.state)
            for g in groups
            if not states or g.state.lower() in states
        ),
    )


async def describe_groups(request: Any, ctx: KafkaContext) -> Any:
    group_ids = list(request.groups or ())
    answer = await call(ctx, "DescribeGroups", pb.DescribeGroupsRequest(group_ids=group_ids))
    described = nested(ctx.response_type, "DescribedGroup")
    member_type = nested(ctx.response_type, "DescribedGroupMember")
    if isinstance(answer, Refused):
        refused = kafka_error(answer.code)
        groups = tuple(
            build(described, group_id=g, error_code=refused, error_message=answer.message, members=())
            for g in group_ids
        )
        return build(ctx.response_type, groups=groups)
    return build(
        ctx.response_type,
        groups=tuple(
            build(
                described,
                error_code=kafka_error(g.error_code),
                error_message=g.error_message or None,
                group_id=g.group_id,
                group_state=g.state,
                protocol_type=g.protocol_type,
                protocol_data=g.protocol,
                members=tuple(
                    build(
                        member_type,
                        member_id=m.member_id,
                        client_id=m.client_id,
                        client_host=m.client_host,
                        member_metadata=m.member_metadata,
                        member_assignment=m.member_assignment,
                    )
                    for m in g.members
                ),
            )
            for g in answer.groups
        ),
    )


async def delete_groups(request: Any, ctx: KafkaContext) -> Any:
    group_ids = list(request.groups_names or ())
    answer = await call(ctx, "DeleteGroups", pb.DeleteGroupsRequest(group_ids=group_ids))
    result = nested(ctx.response_type, "DeletableGroupResult")
    if isinstance(answer, Refused):
        codes = {g: answer.code for g in group_ids}
    else:
        codes = {r.group_id: int(r.error_code) for r in answer.results}
    return build(
        ctx.response_type,
        results=tuple(build(result, group_id=g, error_code=kafka_error(codes.get(g, 0))) for g in group_ids),
    )


APIS = [
    Api(10, "FindCoordinator", 0, 4, find_coordinator),
    Api(11, "JoinGroup", 0, 7, join_group),
    Api(14, "SyncGroup", 0, 5, sync_group),
    Api(12, "Heartbeat", 0, 4, heartbeat),
    Api(13, "LeaveGroup", 0, 5, leave_group),
    Api(8, "OffsetCommit", 2, 9, offset_commit),
    Api(9, "OffsetFetch", 1, 8, offset_fetch),
    Api(16, "ListGroups", 0, 4, list_groups),
    Api(15, "DescribeGroups", 0, 5, describe_groups),
    Api(42, "DeleteGroups", 0, 2, delete_groups),
]
