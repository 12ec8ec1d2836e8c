"""The in-memory state of one consumer group: members, generation, committed offsets.

States (Kafka's classic ``GroupState``). The allowed transitions are one
table, ``VALID_PREVIOUS_STATES`` (Kafka's ``validPreviousStates``: for each
state, the states a group may enter it from), and every state change goes
through ``Group.transition_to``, which raises ``IllegalGroupTransition`` for
any other move — a bug in the coordinator, never a client's error:

    to                    from                 when
    PreparingRebalance ←  Empty                a member joins
                       ←  CompletingRebalance  a new member, a leave, a session or sync timeout,
                       ←  Stable               changed protocols, or (Stable only) the leader rejoining
    CompletingRebalance ← PreparingRebalance   every member rejoined (from Empty: after the initial
                                               delay), or the rebalance timeout passed with members left
    Stable             ←  CompletingRebalance  the leader's SyncGroup (group record written)
    Empty              ←  PreparingRebalance   the join phase ended with no member (generation + 1,
                                               group record written)
    Dead               ←  Empty                delete; a Dead group is forgotten at once

Kafka also lets any state (Dead included) move to Dead, because its
coordinator marks the groups of a partition it resigns Dead; Ketch's drops
the whole ``GroupCoordinator`` instead (coordinator.py, step 4), so only
delete reaches Dead. A coordinator that loads a group from the log builds it
in its loaded state (``Group(initial_state=...)``, as Kafka's ``loadGroup``):
that is a new group, not a transition.

Pending transactional offsets (``pending_txn_offsets``) are persisted as
offset commit records inside a transactional batch (txn_offsets.py).

Fields that are persisted (group metadata record): protocol type, generation,
selected protocol, leader, and per member its ids, timeouts, metadata for the
selected protocol and assignment. Everything else — parked requests,
heartbeat times, deadlines, the set of members still to sync — is live state
that a new coordinator starts afresh (see replay.py).

Invariants (checked by tests/test_groups_properties.py):
- the generation never decreases while the group exists;
- Stable ⇒ every member has an assignment and the leader is a member;
- a member has a parked join only in PreparingRebalance, and a parked sync
  only in CompletingRebalance;
- Empty and Dead ⇒ no members.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from enum import StrEnum

from coordinator.groups.records import CommittedOffset, GroupMetadataValue, MemberMetadata
from ketch.assignors.base import TopicPartition


class GroupState(StrEnum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


VALID_PREVIOUS_STATES: Mapping[GroupState, frozenset[GroupState]] = {
    GroupState.PREPARING_REBALANCE: frozenset({GroupState.EMPTY, GroupState.COMPLETING_REBALANCE, GroupState.STABLE}),
    GroupState.COMPLETING_REBALANCE: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.STABLE: frozenset({GroupState.COMPLETING_REBALANCE}),
    GroupState.EMPTY: frozenset({GroupState.PREPARING_REBALANCE}),
    GroupState.DEAD: frozenset({GroupState.EMPTY}),
}


class IllegalGroupTransition(RuntimeError):
    """A move the state table forbids: the coordinator broke its own rules (Kafka's IllegalStateException)."""

    def __init__(self, group_id: str, current: GroupState, new: GroupState) -> None:
        allowed = ", ".join(sorted(VALID_PREVIOUS_STATES[new])) or "nothing"
        super().__init__(f"group {group_id!r} cannot move from {current} to {new} (only from {allowed})")
        self.group_id, self.current, self.new = group_id, current, new


Protocols = tuple[tuple[str, bytes], ...]  # (protocol name, member metadata), in the member's preference order


@dataclass
class Member:
    member_id: str
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: Protocols
    assignment: bytes | None = None  # None until the leader's SyncGroup of this generation
    last_heartbeat_ms: int = 0
    join_request: int | None = None  # a parked JoinGroup, answered when the join phase completes
    sync_request: int | None = None  # a parked SyncGroup, answered when the leader's assignment arrives

    def metadata(self, protocol: str) -> bytes:
        return next((meta for name, meta in self.protocols if name == protocol), b"")

    def to_record(self, protocol: str) -> MemberMetadata:
        return MemberMetadata(
            self.member_id,
            self.client_id,
            self.client_host,
            self.session_timeout_ms,
            self.rebalance_timeout_ms,
            self.metadata(protocol),
            self.assignment or b"",
        )


@dataclass
class Group:
    group_id: str
    initial_state: InitVar[GroupState] = GroupState.EMPTY  # only a group loaded from the log starts elsewhere
    generation: int = 0
    protocol_type: str = ""
    protocol: str = ""  # selected for the current generation; "" while Empty
    leader: str = ""
    members: dict[str, Member] = field(default_factory=dict)
    offsets: dict[TopicPartition, CommittedOffset] = field(default_factory=dict)
    # producer id → offsets its open transaction committed (txn_offsets.py); not visible to OffsetFetch
    pending_txn_offsets: dict[int, dict[TopicPartition, CommittedOffset]] = field(default_factory=dict)
    pending_sync: set[str] = field(default_factory=set)  # members yet to SyncGroup in this generation
    join_deadline_ms: int = 0  # PreparingRebalance: complete without the members not rejoined by then
    join_not_before_ms: int = 0  # PreparingRebalance from Empty: group.initial.rebalance.delay.ms
    sync_deadline_ms: int = 0  # members in pending_sync are removed at this time
    _state: GroupState = field(init=False)

    def __post_init__(self, initial_state: GroupState) -> None:
        self._state = initial_state

    @property
    def state(self) -> GroupState:
        return self._state

    def transition_to(self, new: GroupState) -> None:
        """The one way a group changes state: raises ``IllegalGroupTransition`` unless the table allows it."""
        if self._state not in VALID_PREVIOUS_STATES[new]:
            raise IllegalGroupTransition(self.group_id, self._state, new)
        self._state = new

    def is_blank(self) -> bool:
        """Nothing worth keeping: no offsets (committed or pending) and no group metadata ever written."""
        return (
            self.state is GroupState.EMPTY
            and not self.members
            and not self.offsets
            and not self.pending_txn_offsets
            and self.generation == 0
            and self.protocol_type == ""
        )

    def rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def supports(self, protocol_type: str, protocols: Protocols, joining: str = "") -> bool:
        """Kafka's ``supportsProtocols``: same type, and a protocol in common with every other member."""
        others = [m for m in self.members.values() if m.member_id != joining]
        if not others:
            return True
        if protocol_type != self.protocol_type:
            return False
        return bool(_common(others) & {name for name, _ in protocols})

    def select_protocol(self) -> str:
        """Each member votes for its first choice among the protocols all support; most votes wins, then name."""
        members = list(self.members.values())
        candidates = _common(members)
        votes: dict[str, int] = dict.fromkeys(candidates, 0)
        for m in members:
            choice = next(name for name, _ in m.protocols if name in candidates)
            votes[choice] += 1
        return min(votes, key=lambda name: (-votes[name], name))

    def metadata_value(self) -> GroupMetadataValue:
        """The group metadata record's value for the current state."""
        members = tuple(self.members[m].to_record(self.protocol) for m in sorted(self.members))
        return GroupMetadataValue(self.protocol_type, self.generation, self.protocol, self.leader, members)


def _common(members: list[Member]) -> set[str]:
    sets = [{name for name, _ in m.protocols} for m in members]
    return set.intersection(*sets) if sets else set()
