"""What one broker must do about its own replicas: Kafka's ``TopicsDelta.localChanges``.

A broker never reconciles the whole cluster. After each delta it asks for
the changes to partitions that list it as a replica (now or before), split
three ways:

- ``leaders``: partitions it must lead, created or changed in the delta
  (new leader epoch, or a new ISR for a partition it already leads — the
  leader needs the committed ISR to advance its high watermark);
- ``followers``: partitions it is a replica of but does not lead (the leader
  id may be -1 while the partition is offline: stop fetching until a leader
  is elected);
- ``deletes``: partitions it held a replica of that are gone (topic removed,
  or the broker is no longer in the replica set); the state given is the last
  one it had.

A partition appears only if its state differs between the two images, and
each entry carries the full new ``PartitionRegistration`` (leader, leader
epoch, ISR, partition epoch), so applying a change is idempotent: a broker
that sees a leader epoch it already applied does nothing again. Topics are
keyed by id, so a topic deleted and re-created under the same name shows up
as a delete of the old id and new replicas of the new one.

On start-up, or after installing a snapshot, a broker diffs its previous
image (``MetadataImage()`` when it has none) against the loaded one with
``local_changes(old, new, broker_id)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from coordinator.metadata.image import MetadataImage, PartitionRegistration
from coordinator.metadata.records import TopicIdPartition


@dataclass(frozen=True)
class LocalPartition:
    topic_id: str
    topic_name: str
    partition: int
    state: PartitionRegistration


@dataclass(frozen=True)
class LocalReplicaChanges:
    broker_id: int
    leaders: dict[TopicIdPartition, LocalPartition] = field(default_factory=dict)
    followers: dict[TopicIdPartition, LocalPartition] = field(default_factory=dict)
    deletes: dict[TopicIdPartition, LocalPartition] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.leaders or self.followers or self.deletes)


def local_changes(
    old: MetadataImage, new: MetadataImage, broker_id: int, topic_ids: Iterable[str] | None = None
) -> LocalReplicaChanges:
    """Changes to ``broker_id``'s replicas from ``old`` to ``new``, looking at
    ``topic_ids`` only (all topics of both images when None)."""
    if topic_ids is None:
        topic_ids = set(old.topics) | set(new.topics)
    out = LocalReplicaChanges(broker_id)
    for tid in sorted(topic_ids):
        old_t = old.topics.get(tid)
        new_t = new.topics.get(tid)
        indexes = set(old_t.partitions if old_t else ()) | set(new_t.partitions if new_t else ())
        for index in sorted(indexes):
            before = old_t.partitions.get(index) if old_t else None
            after = new_t.partitions.get(index) if new_t else None
            key = TopicIdPartition(tid, index)
            if after is None or broker_id not in after.replicas:
                if before is not None and old_t is not None and broker_id in before.replicas:
                    out.deletes[key] = LocalPartition(tid, old_t.name, index, before)
                continue
            if before == after or new_t is None:
                continue
            entry = LocalPartition(tid, new_t.name, index, after)
            if after.leader == broker_id:
                out.leaders[key] = entry
            else:
                out.followers[key] = entry
    return out
