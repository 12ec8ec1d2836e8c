"""Leader election and ISR changes for one partition: Kafka's ``PartitionChangeBuilder``.

``build_change`` takes a partition's current state, which brokers are
acceptable leaders (registered and unfenced, after the command's own
fencing), an optional target ISR and the kind of election, and returns the
``PartitionChangeRecord`` that gets there — or None when nothing changes.

Rules:
- Leaders come from the target ISR only. The current leader stays if it is
  still acceptable and in the target ISR (no needless leader moves);
  otherwise the first replica, in replica order, that is acceptable and in
  the target ISR becomes leader.
- A preferred election first tries the first replica (the preferred
  leader), with the same conditions; if it cannot lead, the rules above apply.
- If no ISR member can lead, the partition goes offline (leader -1) —
  unless ``unclean.leader.election.enable`` is true (the topic's, else the
  cluster-wide dynamic value: ``MetadataImage.unclean_leader_election``); then the
  first acceptable replica in replica order leads and the ISR becomes just
  that replica. This may lose acknowledged records; it is an opt-in.
- The ISR floor (KIP-966): fencing never shrinks an ISR below
  ``min.insync.replicas`` (``min_isr``, at most the replica count). The
  default target keeps fenced members, in ISR order, until the floor is
  reached: a record acknowledged with acks=all is on ``min_isr`` replicas,
  and every one of them stays eligible until it is either back or known to
  have lost data (an unclean restart, brokers.py). A kept fenced member
  cannot lead; it holds the high watermark back until it returns, so
  acks=all produce waits (and times out) rather than committing on fewer
  replicas. An explicit target (AlterPartition) is checked by its caller.
- The ISR never becomes empty: a target ISR with no members leaves the ISR
  as it was. When every ISR member is fenced at once, they all stay in the
  ISR and the partition is offline until one of them comes back.
- A partition in unclean recovery (``recovering``) gets no leader here —
  recovery.py elects it from the replicas' reported logs — unless its topic
  allows unclean elections: then the first acceptable replica leads alone.
  Allowing them after the partition went offline (an altered config) runs
  these rules again at once (configs.py ``reaction_records``).
- A leader change, including to -1, bumps the leader epoch; every record
  bumps the partition epoch (replay does both, see image.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from enum import Enum

from coordinator.metadata import records as rec
from coordinator.metadata.image import PartitionRegistration
from coordinator.metadata.records import NO_LEADER, MetadataRecord


class Election(Enum):
    ONLINE = "online"  # keep the leader if it can lead, else the first eligible replica
    PREFERRED = "preferred"  # move leadership to the first replica if it can lead


def elect_leader(
    current: PartitionRegistration,
    target_isr: Sequence[int],
    acceptable: Callable[[int], bool],
    election: Election = Election.ONLINE,
    unclean: bool = False,
) -> tuple[int, tuple[int, ...]]:
    """The (leader, ISR) the rules above give."""

    def valid(broker: int) -> bool:
        return broker in target_isr and acceptable(broker)

    isr = tuple(target_isr) if target_isr else current.isr
    if current.recovering:
        target_isr, isr = (), current.isr  # only an unclean election (below) may end a recovery here
    if election is Election.PREFERRED and valid(current.replicas[0]):
        return current.replicas[0], isr
    if current.leader != NO_LEADER and valid(current.leader):
        return current.leader, isr
    for broker in current.replicas:
        if valid(broker):
            return broker, isr
    if unclean:
        for broker in current.replicas:
            if acceptable(broker):
                return broker, (broker,)
    return NO_LEADER, isr


def build_change(
    topic_id: str,
    partition: int,
    current: PartitionRegistration,
    acceptable: Callable[[int], bool],
    target_isr: Sequence[int] | None = None,
    election: Election = Election.ONLINE,
    unclean: bool = False,
    min_isr: int = 1,
) -> MetadataRecord | None:
    """The record moving ``current`` to what the election rules give, or None.

    ``target_isr`` defaults to the current ISR without the brokers that are
    not acceptable (fenced, or being fenced by this command), floored at ``min_isr``.
    """
    if target_isr is None:
        target_isr = floored_isr([b for b in current.isr if acceptable(b)], current.isr, min_isr)
    leader, isr = elect_leader(current, target_isr, acceptable, election, unclean)
    new_leader = leader if leader != current.leader else None
    new_isr = isr if isr != current.isr else None
    if new_leader is None and new_isr is None:
        return None
    recovered = False if current.recovering and leader != NO_LEADER else None
    return rec.partition_change(topic_id, partition, leader=new_leader, isr=new_isr, recovering=recovered)


def floored_isr(target: Sequence[int], current: Sequence[int], min_isr: int) -> list[int]:
    """``target`` plus current members, in ISR order, until it has ``min_isr`` members; all of them when
    ``target`` is empty (every member fenced at once: any of them may hold what the others lack)."""
    if not target:
        return list(current)
    out = list(target)
    for member in current:
        if len(out) >= min_isr:
            break
        if member not in out:
            out.append(member)
    return out


def change_result(current: PartitionRegistration, record: MetadataRecord | None) -> PartitionRegistration:
    """The state ``record`` (from ``build_change``) leads to."""
    if record is None:
        return current
    change = record.partition_change
    return current.changed(
        leader=change.leader if change.HasField("leader") else None,
        isr=list(change.isr.values) if change.HasField("isr") else None,
        recovering=change.recovering if change.HasField("recovering") else None,
        replicas=list(change.replicas.values) if change.HasField("replicas") else None,
        adding=list(change.adding_replicas.values) if change.HasField("adding_replicas") else None,
        removing=list(change.removing_replicas.values) if change.HasField("removing_replicas") else None,
    )
