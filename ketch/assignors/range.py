"""RangeAssignor (Kafka's ``range``): contiguous ranges of each topic, topic by topic.

For each topic, its subscribers sorted by member id split its partitions in
order: with ``n`` partitions and ``m`` subscribers each gets ``n // m``
consecutive partitions and the first ``n % m`` get one more. Balanced *per
topic* (max - min ≤ 1 among the topic's subscribers); across topics the first
members can end up with more in total, as in Kafka. Eager protocol.
"""

from __future__ import annotations

from collections.abc import Mapping

from ketch.assignors.base import (
    Assignment,
    MemberSubscription,
    RebalanceProtocol,
    TopicPartition,
    empty_assignment,
    subscribers,
)


class RangeAssignor:
    name = "range"
    protocol = RebalanceProtocol.EAGER

    def assign(self, members: Mapping[str, MemberSubscription], partitions_per_topic: Mapping[str, int]) -> Assignment:
        result = empty_assignment(members)
        for topic in sorted(partitions_per_topic):
            takers = subscribers(members, topic)
            if not takers:
                continue
            count = partitions_per_topic[topic]
            share, extra = divmod(count, len(takers))
            start = 0
            for i, member in enumerate(takers):
                size = share + (1 if i < extra else 0)
                result[member].extend(TopicPartition(topic, p) for p in range(start, start + size))
                start += size
        return result
