"""Consumer group membership, the pure half: what the client decides, with no I/O and no clock.

Used by ketch/aio/group_member.py (the asyncio driver, whose docstring states
the protocol rules). It lives outside ``ketch.aio`` so that importing it loads
no asyncio, gRPC or logging (tests/test_layering.py checks it). Here: the public
types (``OffsetAndMetadata``, ``ConsumerRebalanceListener``,
``CommitFailedError``), how each error code is handled (``action_for``),
assignor selection and the rebalance protocol, the JoinGroup metadata, the
leader's assignment, what an assignment changes, and topic matching for pattern
subscriptions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, NamedTuple

from ketch.assignors import (
    ASSIGNORS,
    Assignor,
    MemberSubscription,
    RebalanceProtocol,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.topic_partition import TopicPartition

if TYPE_CHECKING:
    from ketch.aio.connection import Cluster


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadata:
    """What a transactional producer sends with a consumer's offsets (KIP-447): the group
    coordinator refuses them from an older generation or an unknown member."""

    group_id: str
    generation: int = -1
    member_id: str = ""


class OffsetAndMetadata(NamedTuple):
    """A committed offset: the next offset to consume, with optional metadata (kafka-python's type)."""

    offset: int
    metadata: str = ""
    leader_epoch: int = -1


class ConsumerRebalanceListener:
    """Optional base class for a rebalance listener (kafka-python's); any object with these methods works.

    Methods may be plain or ``async``. ``on_partitions_lost`` (the partitions may
    already belong to another member, so nothing is committed) defaults to
    ``on_partitions_revoked``, as in Kafka.
    """

    def on_partitions_revoked(self, revoked: set[TopicPartition]) -> Any:
        return None

    def on_partitions_assigned(self, assigned: set[TopicPartition]) -> Any:
        return None

    def on_partitions_lost(self, lost: set[TopicPartition]) -> Any:
        return self.on_partitions_revoked(lost)


class CommitFailedError(KetchError):
    """The commit was refused because this member's generation is over (a rebalance happened)."""

    code = ErrorCode.ILLEGAL_GENERATION


# -- pure logic -----------------------------------------------------------------------------------


class Action(Enum):
    OK = "ok"
    RETRY = "retry"  # retriable: back off and try again at the same coordinator
    FIND_COORDINATOR = "find-coordinator"  # forget the coordinator, look it up again, retry
    REJOIN = "rejoin"  # the generation is over: join again with the same member id
    RESET_MEMBER = "reset-member"  # the coordinator does not know us: join again as a new member
    FATAL = "fatal"


# The coordinator moved or is not ready: forget it, look it up again, retry. The client's one
# set of them (the coordinator client retries exactly what ``action_for`` calls FIND_COORDINATOR).
COORDINATOR_ERRORS = frozenset(
    {ErrorCode.NOT_COORDINATOR, ErrorCode.COORDINATOR_NOT_AVAILABLE, ErrorCode.COORDINATOR_LOAD_IN_PROGRESS}
)


def action_for(code: int) -> Action:
    """What a member does about a group error code."""
    if code == ErrorCode.NONE:
        return Action.OK
    if code in COORDINATOR_ERRORS or code == ErrorCode.REQUEST_TIMED_OUT:
        return Action.FIND_COORDINATOR
    if code in (ErrorCode.ILLEGAL_GENERATION, ErrorCode.REBALANCE_IN_PROGRESS):
        return Action.REJOIN
    if code == ErrorCode.UNKNOWN_MEMBER_ID:
        return Action.RESET_MEMBER
    if error_for(code).retriable:
        return Action.RETRY
    return Action.FATAL


_ALIASES = {
    "range": "range",
    "rangeassignor": "range",
    "roundrobin": "roundrobin",
    "round-robin": "roundrobin",
    "roundrobinassignor": "roundrobin",
    "cooperative-sticky": "cooperative-sticky",
    "cooperativesticky": "cooperative-sticky",
    "cooperativestickyassignor": "cooperative-sticky",
}


def resolve_assignors(strategy: Any) -> list[Assignor]:
    """``partition_assignment_strategy`` as assignors, in preference order.

    Accepts a name ("range", "roundrobin", "cooperative-sticky", Kafka's class
    names too), a comma-separated list of names, an assignor object, or a
    list/tuple of any of those.
    """
    items: list[Any]
    if isinstance(strategy, str):
        items = [s for s in strategy.split(",") if s.strip()]
    elif isinstance(strategy, Iterable):
        items = list(strategy)
    else:
        items = [strategy]
    out: list[Assignor] = []
    for item in items:
        if isinstance(item, str):
            key = item.strip().rsplit(".", 1)[-1].lower()
            name = _ALIASES.get(key)
            if name is None:
                raise ValueError(f"unknown partition assignment strategy {item!r}; known: {sorted(ASSIGNORS)}")
            assignor = ASSIGNORS[name]
        elif isinstance(getattr(item, "name", None), str) and callable(getattr(item, "assign", None)):
            assignor = item() if isinstance(item, type) else item
        else:
            raise ValueError(f"partition assignment strategy {item!r} is neither a name nor an assignor")
        if all(a.name != assignor.name for a in out):
            out.append(assignor)
    if not out:
        raise ValueError("partition_assignment_strategy is empty")
    return out


def rebalance_protocol(assignors: Sequence[Assignor]) -> RebalanceProtocol:
    """COOPERATIVE only when every assignor is (Kafka's rule for mixed lists)."""
    if all(a.protocol is RebalanceProtocol.COOPERATIVE for a in assignors):
        return RebalanceProtocol.COOPERATIVE
    return RebalanceProtocol.EAGER


def subscription_protocols(
    assignors: Sequence[Assignor],
    topics: Iterable[str],
    owned: Iterable[TopicPartition],
    generation: int,
    protocol: RebalanceProtocol,
) -> list[tuple[str, bytes]]:
    """JoinGroup protocols: (assignor name, subscription bytes); eager members claim nothing."""
    cooperative = protocol is RebalanceProtocol.COOPERATIVE
    sub = MemberSubscription(
        frozenset(topics),
        tuple(sorted(TopicPartition(*tp) for tp in owned)) if cooperative else (),
        generation if cooperative else -1,
    )
    data = encode_subscription(sub)
    return [(a.name, data) for a in assignors]


def decode_members(members: Sequence[tuple[str, bytes]]) -> dict[str, MemberSubscription]:
    """Every member's subscription; a malformed one counts as subscribing to nothing (it gets nothing)."""
    out: dict[str, MemberSubscription] = {}
    for member_id, metadata in members:
        try:
            out[member_id] = decode_subscription(metadata)
        except ValueError:
            out[member_id] = MemberSubscription(frozenset())
    return out


def malformed_members(members: Sequence[tuple[str, bytes]]) -> list[str]:
    """The members whose subscription does not decode (the leader logs them: they get nothing)."""
    out = []
    for member_id, metadata in members:
        try:
            decode_subscription(metadata)
        except ValueError:
            out.append(member_id)
    return out


def member_topics(members: Sequence[tuple[str, bytes]]) -> set[str]:
    return {t for sub in decode_members(members).values() for t in sub.topics}


def leader_assignments(
    assignor: Assignor, members: Sequence[tuple[str, bytes]], counts: Mapping[str, int]
) -> dict[str, bytes]:
    """What the leader sends in SyncGroup: every member's encoded assignment."""
    result = assignor.assign(decode_members(members), counts)
    return {member: encode_assignment(tps) for member, tps in result.items()}


@dataclass(frozen=True)
class AssignmentChange:
    added: frozenset[TopicPartition]
    revoked: frozenset[TopicPartition]
    rejoin: bool  # cooperative: something was revoked, so rejoin at once


def apply_assignment(
    owned: Iterable[tuple[str, int]], assigned: Iterable[tuple[str, int]], protocol: RebalanceProtocol
) -> AssignmentChange:
    now = frozenset(TopicPartition(*tp) for tp in owned)
    new = frozenset(TopicPartition(*tp) for tp in assigned)
    revoked = now - new
    return AssignmentChange(new - now, revoked, protocol is RebalanceProtocol.COOPERATIVE and bool(revoked))


def match_topics(topics: Iterable[str], pattern: re.Pattern[str] | None, available: Iterable[str]) -> frozenset[str]:
    """The subscribed topics: the names given, or every non-internal topic the pattern fully matches."""
    if pattern is None:
        return frozenset(topics)
    return frozenset(t for t in available if not t.startswith("__") and pattern.fullmatch(t))


def partition_counts(cluster: Cluster, topics: Iterable[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists (missing or failed topics are left out)."""
    out: dict[str, int] = {}
    for name in topics:
        info = cluster.topics.get(name)
        if info is not None and info.error_code == 0 and info.num_partitions > 0:
            out[name] = info.num_partitions
    return out


def normalize_offsets(offsets: Mapping[Any, OffsetAndMetadata | int]) -> dict[TopicPartition, OffsetAndMetadata]:
    out: dict[TopicPartition, OffsetAndMetadata] = {}
    for tp, value in offsets.items():
        oam = OffsetAndMetadata(value) if isinstance(value, int) else OffsetAndMetadata(*value)
        if oam.offset < 0:
            raise ValueError(f"cannot commit a negative offset ({oam.offset}) for {tp}")
        out[TopicPartition(*tp)] = oam
    return out
