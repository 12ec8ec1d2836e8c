"""Rebuilding groups from the offsets log: what a new coordinator does after failover.

``load(records, now_ms)`` replays, in log order, every record of the offsets
partition the coordinator now leads. Per record:
- offset commit → the partition's committed offset (a tombstone removes it);
- group metadata → the group's generation, protocol type and protocol,
  leader and members with their assignments, with the offsets it had; the
  group is built Stable if it has members, else Empty (``load_group``, as
  Kafka's ``GroupMetadata.loadGroup``: a loaded group starts in that state
  rather than moving there, see state.py);
- group tombstone → the group's metadata is forgotten (its offsets were
  tombstoned just before it, see admin.py).
A group left with nothing (``Group.is_blank``) is dropped.

Transactions (txn_offsets.py): an offset commit record of a transactional
batch of producer P comes as ``TransactionalRecord(P, record)`` and is
pending for P; P's marker comes as ``TransactionMarker(P, commit)`` and
materializes (commit) or drops (abort) everything pending for P, in every
group — ``txn_offsets.complete``, the function the live coordinator calls.
The log holds only markers the partition's marker rule wrote, so replay
needs no epoch check of its own.

Only what was written survives: a rebalance in progress at failover is lost,
and its members find out when their generation or member id is refused and
rejoin. Restored members keep only the selected protocol's metadata, and
their session clocks start at ``now_ms`` (Kafka does the same), so a member
that died with the old coordinator is expired one session timeout later.

Replay applies records exactly as the commands that wrote them did
(``offsets.apply_offset``), so replaying a coordinator's records gives back
its committed offsets and, for a Stable or Empty group, its group metadata —
a property the tests check after every step of random histories.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from coordinator.groups.offsets import apply_offset
from coordinator.groups.records import CommittedOffset, GroupMetadataValue, GroupRecord, OffsetCommitKey
from coordinator.groups.state import Group, GroupState, Member
from coordinator.groups.txn_offsets import apply_pending, complete
from ketch.assignors.base import TopicPartition


@dataclass(frozen=True)
class TransactionalRecord:
    """A record of a transactional batch of ``producer_id`` (pending until its marker)."""

    producer_id: int
    record: GroupRecord


@dataclass(frozen=True)
class TransactionMarker:
    """A control batch: ``producer_id``'s transaction ended on this partition."""

    producer_id: int
    commit: bool


LogEntry = GroupRecord | TransactionalRecord | TransactionMarker


def load(records: Iterable[LogEntry], now_ms: int) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for entry in records:
        if isinstance(entry, TransactionMarker):
            for group_id in complete(groups.values(), entry.producer_id, entry.commit):
                if groups[group_id].is_blank():
                    del groups[group_id]
        elif isinstance(entry, TransactionalRecord):
            replay_pending(groups, entry)
        else:
            replay(groups, entry, now_ms)
    return groups


def replay_pending(groups: dict[str, Group], entry: TransactionalRecord) -> None:
    key, value = entry.record.key, entry.record.value
    if not isinstance(key, OffsetCommitKey) or not isinstance(value, CommittedOffset):
        raise ValueError(f"a transactional batch of producer {entry.producer_id} holds a record other than an offset")
    group = groups.setdefault(key.group_id, Group(key.group_id))
    apply_pending(group, entry.producer_id, TopicPartition(key.topic, key.partition), value)


def replay(groups: dict[str, Group], record: GroupRecord, now_ms: int) -> None:
    group = groups.get(record.group_id) or Group(record.group_id)
    groups[record.group_id] = group
    key, value = record.key, record.value
    if isinstance(key, OffsetCommitKey):
        if value is not None and isinstance(value, GroupMetadataValue):
            raise ValueError("offset commit key with a group metadata value")
        apply_offset(group, TopicPartition(key.topic, key.partition), value)
    elif value is None:
        groups[record.group_id] = group = Group(
            record.group_id, offsets=group.offsets, pending_txn_offsets=group.pending_txn_offsets
        )
    elif isinstance(value, GroupMetadataValue):
        groups[record.group_id] = group = load_group(record.group_id, value, group, now_ms)
    else:
        raise ValueError("group metadata key with an offset value")
    if group.is_blank():
        del groups[record.group_id]


def load_group(group_id: str, value: GroupMetadataValue, before: Group, now_ms: int) -> Group:
    """The group a metadata record describes, keeping the offsets of ``before`` (committed and
    pending): built in its state, not moved there."""
    members = {
        m.member_id: Member(
            m.member_id,
            m.client_id,
            m.client_host,
            m.session_timeout_ms,
            m.rebalance_timeout_ms,
            ((value.protocol, m.metadata),),
            assignment=m.assignment,
            last_heartbeat_ms=now_ms,
        )
        for m in value.members
    }
    return Group(
        group_id,
        initial_state=GroupState.STABLE if members else GroupState.EMPTY,
        generation=value.generation,
        protocol_type=value.protocol_type,
        protocol=value.protocol,
        leader=value.leader,
        members=members,
        offsets=before.offsets,
        pending_txn_offsets=before.pending_txn_offsets,
    )
