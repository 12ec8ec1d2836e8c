"""Admin views of groups: list, describe, delete, and (in offsets.py) reset offsets.

Rules:
- list and describe read the live state; describing an unknown group gives
  a Dead group with no members (Kafka's answer), not an error.
- Delete is allowed only for an Empty group with no transaction holding
  offsets pending (NON_EMPTY_GROUP otherwise;
  GROUP_ID_NOT_FOUND if there is no such group). It writes a tombstone for
  every committed offset and then one for the group metadata — offsets first,
  so a log cut short by compaction never holds offsets of a deleted group —
  and leaves the group Dead; the coordinator then forgets it.
- Assignments stay opaque bytes; for the ``consumer`` protocol type the
  description also decodes them (ketch/assignors/protocol.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from coordinator.groups.offsets import write_offset
from coordinator.groups.records import GroupMetadataKey, GroupRecord
from coordinator.groups.results import Effects, GroupDescription, GroupListing, MemberDescription
from coordinator.groups.state import Group, GroupState
from ketch.assignors.base import TopicPartition
from ketch.assignors.protocol import PROTOCOL_TYPE, decode_assignment
from ketch.errors import ErrorCode


def list_groups(groups: Iterable[Group]) -> list[GroupListing]:
    return sorted((GroupListing(g.group_id, g.protocol_type, g.state) for g in groups), key=lambda g: g.group_id)


def describe(group_id: str, group: Group | None) -> GroupDescription:
    if group is None:
        return GroupDescription(group_id, GroupState.DEAD, "", "", -1, "", ())
    members = tuple(
        MemberDescription(
            m.member_id,
            m.client_id,
            m.client_host,
            m.assignment or b"",
            _partitions(m.assignment) if group.protocol_type == PROTOCOL_TYPE else None,
            m.metadata(group.protocol),
        )
        for m in group.members.values()
    )
    return GroupDescription(
        group.group_id, group.state, group.protocol_type, group.protocol, group.generation, group.leader, members
    )


def delete(group: Group | None, fx: Effects) -> ErrorCode:
    if group is None or group.state is GroupState.DEAD:
        return ErrorCode.GROUP_ID_NOT_FOUND
    if group.state is not GroupState.EMPTY or group.pending_txn_offsets:
        return ErrorCode.NON_EMPTY_GROUP
    for tp in sorted(group.offsets):
        write_offset(group, tp, None, fx)
    fx.records.append(GroupRecord(GroupMetadataKey(group.group_id), None))
    group.transition_to(GroupState.DEAD)
    return ErrorCode.NONE


def _partitions(assignment: bytes | None) -> tuple[TopicPartition, ...] | None:
    try:
        return decode_assignment(assignment or b"").partitions
    except ValueError:
        return None
