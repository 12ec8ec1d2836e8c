"""Committed offsets: OffsetCommit fencing, OffsetFetch, and the admin reset.

Rules:
- A commit with generation < 0 is a *simple* commit (a consumer that assigns
  partitions itself and uses the group only to store offsets): accepted only
  while the group is Empty, and it creates the group if needed.
- Any other commit must come from a member (else UNKNOWN_MEMBER_ID) of the
  current generation (else ILLEGAL_GENERATION). During CompletingRebalance
  the answer is REBALANCE_IN_PROGRESS (the member knows the new generation but
  not yet its assignment). During PreparingRebalance the current generation's
  members may still commit — that is how they commit before revoking.
- Per partition: metadata longer than ``max_metadata_bytes`` (UTF-8) is
  OFFSET_METADATA_TOO_LARGE and a negative offset INVALID_REQUEST; the other
  partitions of the same request are still committed.
- Every accepted partition writes one offset commit record stamped with the
  coordinator's wall-clock ``timestamp_ms``, and the committed offset changes
  only through such a record (or a reset, or a deletion's tombstones).
- An accepted member commit also counts as a heartbeat (Kafka does the same).
- OffsetFetch answers committed offsets only, never pending transactional
  ones. With ``require_stable`` (KIP-447), a partition that a transaction
  holds pending (txn_offsets.py) gets offset -1 and UNSTABLE_OFFSET_COMMIT
  (retriable) in ``FetchResponse.errors``, and the response's ``error`` is
  UNSTABLE_OFFSET_COMMIT too, so a client that reads only the request-level
  error retries instead of taking -1 for "nothing committed". Without it,
  the committed offsets as they are.
- Reset (admin): only while the group is Empty (NON_EMPTY_GROUP); an offset
  of ``None`` deletes the partition's committed offset (a tombstone).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from coordinator.groups.records import NO_OFFSET, CommittedOffset, GroupRecord, OffsetCommitKey
from coordinator.groups.results import CommitResponse, Effects, FetchResponse, GroupConfig, OffsetCommit
from coordinator.groups.state import Group, GroupState
from ketch.assignors.base import TopicPartition
from ketch.errors import ErrorCode


def commit_error(group: Group, member_id: str, generation: int, now_ms: int) -> ErrorCode:
    """The error for the whole request, or NONE (and a refreshed session) if it may commit."""
    if group.state is GroupState.DEAD:
        return ErrorCode.COORDINATOR_NOT_AVAILABLE
    if generation < 0 and group.state is GroupState.EMPTY:
        return ErrorCode.NONE
    member = group.members.get(member_id)
    if member is None:
        return ErrorCode.UNKNOWN_MEMBER_ID
    if generation != group.generation:
        return ErrorCode.ILLEGAL_GENERATION
    if group.state is GroupState.COMPLETING_REBALANCE:
        return ErrorCode.REBALANCE_IN_PROGRESS
    member.last_heartbeat_ms = now_ms
    return ErrorCode.NONE


def commit(
    group: Group,
    member_id: str,
    generation: int,
    offsets: Mapping[TopicPartition, OffsetCommit],
    *,
    now_ms: int,
    timestamp_ms: int,
    config: GroupConfig,
    fx: Effects,
    write: Callable[[Group, TopicPartition, CommittedOffset, Effects], None] | None = None,
) -> CommitResponse:
    """OffsetCommit's checks, then ``write`` (default ``write_offset``) for every accepted offset;
    a transactional commit (txn_offsets.py) passes its own ``write``."""
    error = commit_error(group, member_id, generation, now_ms)
    errors: dict[TopicPartition, int] = {}
    for tp, req in offsets.items():
        tp = TopicPartition(*tp)
        if error is not ErrorCode.NONE:
            errors[tp] = error
        elif len(req.metadata.encode()) > config.max_metadata_bytes:
            errors[tp] = ErrorCode.OFFSET_METADATA_TOO_LARGE
        elif req.offset < 0:
            errors[tp] = ErrorCode.INVALID_REQUEST
        else:
            (write or write_offset)(
                group, tp, CommittedOffset(req.offset, req.leader_epoch, req.metadata, timestamp_ms), fx
            )
            errors[tp] = ErrorCode.NONE
    return CommitResponse(errors)


def fetch(
    group: Group | None, partitions: Iterable[TopicPartition] | None, require_stable: bool = False
) -> FetchResponse:
    stored = {} if group is None or group.state is GroupState.DEAD else group.offsets
    pending = _pending_partitions(group) if require_stable and group is not None else set()
    none = CommittedOffset(NO_OFFSET)
    wanted = sorted(stored.keys() | pending) if partitions is None else [TopicPartition(*tp) for tp in partitions]
    unstable = {tp: int(ErrorCode.UNSTABLE_OFFSET_COMMIT) for tp in wanted if tp in pending}
    offsets = {tp: none if tp in unstable else stored.get(tp, none) for tp in wanted}
    return FetchResponse(ErrorCode.UNSTABLE_OFFSET_COMMIT if unstable else ErrorCode.NONE, offsets, unstable)


def _pending_partitions(group: Group) -> set[TopicPartition]:
    return {tp for pending in group.pending_txn_offsets.values() for tp in pending}


def reset(group: Group, offsets: Mapping[TopicPartition, int | None], timestamp_ms: int, fx: Effects) -> ErrorCode:
    if group.state is not GroupState.EMPTY:
        return ErrorCode.NON_EMPTY_GROUP
    if any(offset is not None and offset < 0 for offset in offsets.values()):
        return ErrorCode.INVALID_REQUEST
    for tp, offset in sorted(offsets.items()):
        tp = TopicPartition(*tp)
        if offset is not None:
            write_offset(group, tp, CommittedOffset(offset, commit_timestamp_ms=timestamp_ms), fx)
        elif tp in group.offsets:
            write_offset(group, tp, None, fx)
    return ErrorCode.NONE


def write_offset(group: Group, tp: TopicPartition, value: CommittedOffset | None, fx: Effects) -> None:
    fx.records.append(GroupRecord(OffsetCommitKey(group.group_id, tp.topic, tp.partition), value))
    apply_offset(group, tp, value)


def apply_offset(group: Group, tp: TopicPartition, value: CommittedOffset | None) -> None:
    """The one place a committed offset changes (commands and replay alike)."""
    if value is None:
        group.offsets.pop(tp, None)
    else:
        group.offsets[tp] = value
