"""RoundRobinAssignor (Kafka's ``roundrobin``): deal all partitions out like cards.

Every subscribed partition, sorted by (topic, partition), goes to the next
member in a circle of members sorted by id, skipping members not subscribed
to its topic. When all members subscribe to the same topics the result is
balanced over all topics (max - min ≤ 1); with different subscriptions it is
not guaranteed to be. Eager protocol.
"""

from __future__ import annotations

from collections.abc import Mapping

from ketch.assignors.base import (
    Assignment,
    MemberSubscription,
    RebalanceProtocol,
    empty_assignment,
    subscribed_partitions,
)


class RoundRobinAssignor:
    name = "roundrobin"
    protocol = RebalanceProtocol.EAGER

    def assign(self, members: Mapping[str, MemberSubscription], partitions_per_topic: Mapping[str, int]) -> Assignment:
        result = empty_assignment(members)
        circle = sorted(members)
        turn = 0
        for tp in subscribed_partitions(members, partitions_per_topic):
            for step in range(len(circle)):
                member = circle[(turn + step) % len(circle)]
                if tp.topic in members[member].topics:
                    result[member].append(tp)
                    turn = (turn + step + 1) % len(circle)
                    break
        return result
