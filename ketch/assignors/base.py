"""The assignor interface and the helpers every assignor shares.

An assignor is a pure function run by the group's *leader member* (client side,
as in Kafka's classic protocol): given every member's subscription and the
partition count of each topic, it returns member id → partitions.

Rules every assignor keeps:
- Only partitions of topics that some member subscribes to *and* that exist
  (appear in ``partitions_per_topic``) are assigned; a subscribed topic that is
  missing is ignored until it exists.
- A partition goes only to a member subscribed to its topic, and to at most
  one member. Eager assignors assign every such partition; the cooperative
  one may leave a partition out for one generation while its previous owner
  still holds it (see sticky.py).
- Every member appears in the result, with an empty list if it gets nothing.
- The result is deterministic: it depends on the inputs only (members and
  partitions are visited in sorted order), so a re-run gives the same answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Protocol

from ketch.topic_partition import TopicPartition as TopicPartition  # re-exported: the one type


class RebalanceProtocol(Enum):
    """Kafka's ``RebalanceProtocol``: how ownership moves between generations."""

    EAGER = "eager"  # every member revokes everything before it rejoins
    COOPERATIVE = "cooperative"  # members keep what they own; moves take a second rebalance


@dataclass(frozen=True)
class MemberSubscription:
    """What one member sent in its JoinGroup metadata."""

    topics: frozenset[str]
    # Partitions the member owned in ``generation`` (cooperative protocol; empty for eager members).
    owned: tuple[TopicPartition, ...] = ()
    generation: int = -1


Assignment = dict[str, list[TopicPartition]]


class Assignor(Protocol):
    name: str
    protocol: RebalanceProtocol

    def assign(
        self, members: Mapping[str, MemberSubscription], partitions_per_topic: Mapping[str, int]
    ) -> Assignment: ...


def subscribed_partitions(
    members: Mapping[str, MemberSubscription], partitions_per_topic: Mapping[str, int]
) -> list[TopicPartition]:
    """Every existing partition of a topic some member subscribes to, sorted."""
    topics = sorted({t for sub in members.values() for t in sub.topics if t in partitions_per_topic})
    return [TopicPartition(t, p) for t in topics for p in range(partitions_per_topic[t])]


def subscribers(members: Mapping[str, MemberSubscription], topic: str) -> list[str]:
    """Members subscribed to ``topic``, sorted by id."""
    return sorted(m for m, sub in members.items() if topic in sub.topics)


def empty_assignment(members: Mapping[str, MemberSubscription]) -> Assignment:
    return {m: [] for m in sorted(members)}
