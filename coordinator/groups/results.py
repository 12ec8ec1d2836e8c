"""What group coordinator calls return: a response, records to persist, parked requests completed.

A call that can wait (JoinGroup, SyncGroup) carries a ``request_id`` chosen
by the driver. Its ``GroupResult.response`` is ``None`` when the request is
parked; the answer then arrives later as a ``Reply(request_id, response)``
in the ``completed`` of whichever call (another member's join or sync, a
leave, a ``tick``) finished the wait. A parked request that is superseded
(the same member sent a newer one) or whose member is removed is completed
too, with an error, so every request id gets exactly one answer.

Driver order (DESIGN.md §2): append ``records`` to the offsets partition
as one batch (a transactional batch of ``transactional``'s producer id and
epoch when it is set) and wait until it is committed; then send ``response`` and every
reply in ``completed``. A result without records is sent once everything
appended before it is committed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from coordinator.groups.records import CommittedOffset, GroupRecord
from coordinator.groups.state import GroupState
from ketch.assignors.base import TopicPartition

R = TypeVar("R")


@dataclass(frozen=True)
class GroupConfig:
    min_session_timeout_ms: int = 6000  # group.min.session.timeout.ms
    max_session_timeout_ms: int = 1_800_000  # group.max.session.timeout.ms
    # group.initial.rebalance.delay.ms: a group coming out of Empty waits this long for more members.
    initial_rebalance_delay_ms: int = 3000
    max_metadata_bytes: int = 4096  # offset.metadata.max.bytes


@dataclass(frozen=True)
class JoinResponse:
    error: int
    generation: int = -1
    protocol_type: str = ""
    protocol: str = ""
    leader: str = ""
    member_id: str = ""
    members: tuple[tuple[str, bytes], ...] = ()  # (member id, metadata): for the leader only


@dataclass(frozen=True)
class SyncResponse:
    error: int
    protocol_type: str = ""
    protocol: str = ""
    assignment: bytes = b""


@dataclass(frozen=True)
class HeartbeatResponse:
    error: int


@dataclass(frozen=True)
class LeaveResponse:
    error: int


@dataclass(frozen=True)
class OffsetCommit:
    """One partition's offset in an OffsetCommit request (the commit time is the coordinator's)."""

    offset: int
    leader_epoch: int = -1
    metadata: str = ""


@dataclass(frozen=True)
class CommitResponse:
    errors: Mapping[TopicPartition, int]


@dataclass(frozen=True)
class FetchResponse:
    error: int
    offsets: Mapping[TopicPartition, CommittedOffset]  # NO_OFFSET (-1) for partitions without a commit
    # Per partition, when not NONE: UNSTABLE_OFFSET_COMMIT (a transaction holds an offset pending).
    errors: Mapping[TopicPartition, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TickReport:
    expired: tuple[tuple[str, str], ...] = ()  # (group, member) removed for session or sync timeout


@dataclass(frozen=True)
class AdminResponse:
    error: int


@dataclass(frozen=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: GroupState


@dataclass(frozen=True)
class MemberDescription:
    member_id: str
    client_id: str
    client_host: str
    assignment: bytes
    # The assignment decoded, when the group uses the consumer protocol (ketch/assignors/protocol.py).
    partitions: tuple[TopicPartition, ...] | None = None
    metadata: bytes = b""  # the member's subscription for the group's protocol, as it sent it


@dataclass(frozen=True)
class GroupDescription:
    group_id: str
    state: GroupState
    protocol_type: str
    protocol: str
    generation: int
    leader: str
    members: tuple[MemberDescription, ...]


Response = JoinResponse | SyncResponse


@dataclass(frozen=True)
class Reply:
    request_id: int
    response: Response


@dataclass(frozen=True)
class GroupResult(Generic[R]):
    response: R | None  # None: the request is parked; its answer comes in a later `completed`
    records: tuple[GroupRecord, ...] = ()
    completed: tuple[Reply, ...] = ()
    # (producer id, epoch): ``records`` go in ONE transactional batch of that producer (TxnOffsetCommit).
    transactional: tuple[int, int] | None = None


@dataclass
class Effects:
    """What one call produces, collected while the state machine runs."""

    records: list[GroupRecord] = field(default_factory=list)
    replies: list[Reply] = field(default_factory=list)

    def reply(self, request_id: int, response: Response) -> None:
        self.replies.append(Reply(request_id, response))

    def result(self, response: R | None, own_request: int | None = None) -> GroupResult[R]:
        """Package the effects; the caller's own reply, if produced, becomes ``response``."""
        completed = []
        for reply in self.replies:
            if own_request is not None and reply.request_id == own_request and response is None:
                response = reply.response  # type: ignore[assignment]
            else:
                completed.append(reply)
        return GroupResult(response, tuple(self.records), tuple(completed))
