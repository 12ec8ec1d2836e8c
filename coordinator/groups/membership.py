"""Group membership: JoinGroup, SyncGroup, Heartbeat, LeaveGroup and timeouts (Kafka's classic protocol).

Rules, by request:

JoinGroup
- A member id of "" is a new member: it gets the driver-supplied id, joins,
  and the group prepares a rebalance. A non-empty id must be a member
  (else UNKNOWN_MEMBER_ID).
- Protocol type and protocols must be non-empty, and while the group has
  other members the type must match and a protocol must be common to all
  (else INCONSISTENT_GROUP_PROTOCOL).
- PreparingRebalance: the join is parked (a newer join of the same member
  supersedes it). CompletingRebalance: a known member with unchanged
  protocols gets the current generation's answer at once; changed protocols
  start a new rebalance. Stable: the same, except that a join from the
  leader always rebalances (it may have seen new topic metadata).
- The join phase completes when every member has rejoined (and, for a group
  coming out of Empty, ``initial_rebalance_delay_ms`` has passed), or at the
  rebalance timeout (the largest member's), when members that did not rejoin
  are removed. Completing bumps the generation, selects the protocol, keeps
  the leader if it rejoined (else the first member), answers every parked
  join (the leader also gets every member's metadata) and moves to
  CompletingRebalance — or to Empty, writing the group record, if nobody is left.

SyncGroup
- Must be a member (UNKNOWN_MEMBER_ID) of the current generation
  (ILLEGAL_GENERATION); during PreparingRebalance: REBALANCE_IN_PROGRESS.
- CompletingRebalance: parked until the leader's sync, which stores every
  member's assignment (missing ones are empty), writes the group record,
  moves to Stable and answers every parked sync. Stable: answered at once.

Heartbeat: refreshes the session of a known member; REBALANCE_IN_PROGRESS
during PreparingRebalance (rejoin), ILLEGAL_GENERATION for another generation.

LeaveGroup and timeouts remove a member; its parked requests are answered
UNKNOWN_MEMBER_ID, and a Stable or CompletingRebalance group rebalances.
- Session: a member with no parked request and no heartbeat, join, sync or
  commit within its session timeout is removed (``tick``).
- Sync: members that have not sent SyncGroup within the rebalance timeout
  after the join phase completed are removed (``tick``).
Entering PreparingRebalance from CompletingRebalance answers parked syncs
with REBALANCE_IN_PROGRESS.
"""

from __future__ import annotations

from collections.abc import Mapping

from coordinator.groups.records import GroupMetadataKey, GroupRecord
from coordinator.groups.results import Effects, GroupConfig, JoinResponse, SyncResponse
from coordinator.groups.state import Group, GroupState, Member
from ketch.errors import ErrorCode

PREPARING = GroupState.PREPARING_REBALANCE
COMPLETING = GroupState.COMPLETING_REBALANCE
STABLE = GroupState.STABLE


def join(
    group: Group, candidate: Member, protocol_type: str, request_id: int, now_ms: int, config: GroupConfig, fx: Effects
) -> None:
    """``candidate``: the member as the request describes it, with its id (a new member's is already chosen)."""
    if group.state is GroupState.DEAD:
        fx.reply(request_id, JoinResponse(ErrorCode.COORDINATOR_NOT_AVAILABLE))
        return
    member = group.members.get(candidate.member_id)
    new = member is None
    if not group.supports(protocol_type, candidate.protocols, candidate.member_id):
        fx.reply(request_id, JoinResponse(ErrorCode.INCONSISTENT_GROUP_PROTOCOL))
        return
    if member is None:
        if not group.members:
            group.protocol_type = protocol_type
        group.members[candidate.member_id] = member = candidate
    member.last_heartbeat_ms = now_ms
    changed = member.protocols != candidate.protocols
    current_answer = group.state is COMPLETING or (group.state is STABLE and member.member_id != group.leader)
    if not new and not changed and current_answer:
        fx.reply(request_id, _join_answer(group, member))
        return
    if not new:  # a rebalance is coming: take the request's view of the member
        member.client_id, member.client_host = candidate.client_id, candidate.client_host
        member.session_timeout_ms = candidate.session_timeout_ms
        member.rebalance_timeout_ms = candidate.rebalance_timeout_ms
        member.protocols = candidate.protocols
    _park_join(member, request_id, fx)
    if group.state is not PREPARING:
        prepare_rebalance(group, now_ms, config, fx)
    maybe_complete_join(group, now_ms, fx)


def sync(
    group: Group,
    member_id: str,
    generation: int,
    assignments: Mapping[str, bytes],
    request_id: int,
    now_ms: int,
    fx: Effects,
) -> None:
    member = _current_member(group, member_id, generation)
    if isinstance(member, ErrorCode) or group.state is PREPARING:
        fx.reply(request_id, SyncResponse(member if isinstance(member, ErrorCode) else ErrorCode.REBALANCE_IN_PROGRESS))
        return
    member.last_heartbeat_ms = now_ms
    group.pending_sync.discard(member_id)
    if group.state is STABLE:
        fx.reply(request_id, _sync_answer(group, member))
        return
    if member.sync_request is not None:
        fx.reply(member.sync_request, SyncResponse(ErrorCode.REBALANCE_IN_PROGRESS))
    member.sync_request = request_id
    if member_id == group.leader:
        for m in group.members.values():
            m.assignment = assignments.get(m.member_id, b"")
        group.transition_to(STABLE)
        fx.records.append(GroupRecord(GroupMetadataKey(group.group_id), group.metadata_value()))
        for m in group.members.values():
            if m.sync_request is not None:
                fx.reply(m.sync_request, _sync_answer(group, m))
                m.sync_request = None


def heartbeat(group: Group, member_id: str, generation: int, now_ms: int) -> ErrorCode:
    if group.state is PREPARING and member_id in group.members:  # any generation: the answer is "rejoin"
        group.members[member_id].last_heartbeat_ms = now_ms
        return ErrorCode.REBALANCE_IN_PROGRESS
    member = _current_member(group, member_id, generation)
    if isinstance(member, ErrorCode):
        return member
    member.last_heartbeat_ms = now_ms
    return ErrorCode.NONE


def leave(group: Group, member_id: str, now_ms: int, config: GroupConfig, fx: Effects) -> ErrorCode:
    if group.state is GroupState.DEAD:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if member_id not in group.members:
        return ErrorCode.UNKNOWN_MEMBER_ID
    remove_member(group, member_id, now_ms, config, fx)
    return ErrorCode.NONE


def expire(group: Group, now_ms: int, config: GroupConfig, fx: Effects) -> list[str]:
    """Session and sync timeouts, then the join-phase deadline; returns the members removed."""
    expired = [
        m.member_id
        for m in group.members.values()
        if m.join_request is None and m.sync_request is None and now_ms - m.last_heartbeat_ms >= m.session_timeout_ms
    ]
    if group.state in (COMPLETING, STABLE) and group.pending_sync and now_ms >= group.sync_deadline_ms:
        expired += sorted(group.pending_sync - set(expired))
    for member_id in expired:
        if member_id in group.members:
            remove_member(group, member_id, now_ms, config, fx)
    maybe_complete_join(group, now_ms, fx)
    return expired


def remove_member(group: Group, member_id: str, now_ms: int, config: GroupConfig, fx: Effects) -> None:
    member = group.members.pop(member_id)
    if member.join_request is not None:
        fx.reply(member.join_request, JoinResponse(ErrorCode.UNKNOWN_MEMBER_ID, member_id=member_id))
    if member.sync_request is not None:
        fx.reply(member.sync_request, SyncResponse(ErrorCode.UNKNOWN_MEMBER_ID))
    group.pending_sync.discard(member_id)
    if group.leader == member_id:
        group.leader = next(iter(group.members), "")
    if group.state in (STABLE, COMPLETING):
        prepare_rebalance(group, now_ms, config, fx)
    maybe_complete_join(group, now_ms, fx)


def prepare_rebalance(group: Group, now_ms: int, config: GroupConfig, fx: Effects) -> None:
    if group.state is COMPLETING:
        for m in group.members.values():
            if m.sync_request is not None:
                fx.reply(m.sync_request, SyncResponse(ErrorCode.REBALANCE_IN_PROGRESS))
                m.sync_request = None
    timeout = group.rebalance_timeout_ms()
    delay = min(config.initial_rebalance_delay_ms, timeout) if group.state is GroupState.EMPTY else 0
    group.transition_to(PREPARING)
    group.pending_sync.clear()
    group.join_deadline_ms = now_ms + timeout
    group.join_not_before_ms = now_ms + delay


def maybe_complete_join(group: Group, now_ms: int, fx: Effects) -> None:
    if group.state is not PREPARING:
        return
    all_joined = all(m.join_request is not None for m in group.members.values())
    if not (all_joined and now_ms >= group.join_not_before_ms) and now_ms < group.join_deadline_ms:
        return
    for member_id in [m.member_id for m in group.members.values() if m.join_request is None]:
        del group.members[member_id]  # did not rejoin in time; nothing of it is parked
    group.generation += 1
    if not group.members:
        group.transition_to(GroupState.EMPTY)
        group.protocol, group.leader = "", ""
        fx.records.append(GroupRecord(GroupMetadataKey(group.group_id), group.metadata_value()))
        return
    group.protocol = group.select_protocol()
    if group.leader not in group.members:
        group.leader = next(iter(group.members))
    group.transition_to(COMPLETING)
    group.pending_sync = set(group.members)
    group.sync_deadline_ms = now_ms + group.rebalance_timeout_ms()
    for m in group.members.values():
        m.assignment = None
        m.last_heartbeat_ms = now_ms
        if m.join_request is not None:
            fx.reply(m.join_request, _join_answer(group, m))
            m.join_request = None


def _park_join(member: Member, request_id: int, fx: Effects) -> None:
    if member.join_request is not None and member.join_request != request_id:
        fx.reply(member.join_request, JoinResponse(ErrorCode.REBALANCE_IN_PROGRESS, member_id=member.member_id))
    member.join_request = request_id


def _current_member(group: Group, member_id: str, generation: int) -> Member | ErrorCode:
    """The member, if it is one and of the current generation; else the error that says why not."""
    member = group.members.get(member_id)
    if group.state is GroupState.DEAD:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if member is None:
        return ErrorCode.UNKNOWN_MEMBER_ID
    if generation != group.generation:
        return ErrorCode.ILLEGAL_GENERATION
    return member


def _join_answer(group: Group, member: Member) -> JoinResponse:
    members: tuple[tuple[str, bytes], ...] = ()
    if member.member_id == group.leader:
        members = tuple((m.member_id, m.metadata(group.protocol)) for m in group.members.values())
    return JoinResponse(
        ErrorCode.NONE, group.generation, group.protocol_type, group.protocol, group.leader, member.member_id, members
    )


def _sync_answer(group: Group, member: Member) -> SyncResponse:
    return SyncResponse(ErrorCode.NONE, group.protocol_type, group.protocol, member.assignment or b"")
