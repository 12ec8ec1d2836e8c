"""Partition assignors for consumer groups, run client side by the group's leader member.

As in Kafka's classic group protocol, the broker (coordinator/groups) never
decides who reads what: it picks one protocol every member supports, sends
the members' subscriptions to the leader member in its JoinGroup response,
and hands out whatever assignment the leader sends back in SyncGroup.

The consumer's part, per rebalance:
1. JoinGroup with ``protocol_type="consumer"`` and, for each configured
   assignor in preference order, ``(assignor.name, encode_subscription(...))``
   (protocol.py). Eager assignors (range, roundrobin): revoke everything
   first and send no owned partitions. Cooperative (cooperative-sticky): keep
   consuming, and send the partitions owned now and their generation.
2. The leader decodes every member's subscription, reads the partition count
   of each subscribed topic from cluster metadata, runs
   ``ASSIGNORS[selected_protocol].assign(...)`` and sends
   ``encode_assignment(...)`` per member in SyncGroup.
3. Every member applies its assignment; under the cooperative protocol a
   member that must revoke something rejoins at once (sticky.py explains it).

Modules: base.py (interface), range.py, roundrobin.py, sticky.py, protocol.py.
"""

from ketch.assignors.base import (
    Assignment,
    Assignor,
    MemberSubscription,
    RebalanceProtocol,
    TopicPartition,
    subscribed_partitions,
)
from ketch.assignors.protocol import (
    PROTOCOL_TYPE,
    ConsumerAssignment,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from ketch.assignors.range import RangeAssignor
from ketch.assignors.roundrobin import RoundRobinAssignor
from ketch.assignors.sticky import CooperativeStickyAssignor

ASSIGNORS: dict[str, Assignor] = {
    a.name: a for a in (RangeAssignor(), RoundRobinAssignor(), CooperativeStickyAssignor())
}

__all__ = [
    "ASSIGNORS",
    "PROTOCOL_TYPE",
    "Assignment",
    "Assignor",
    "ConsumerAssignment",
    "CooperativeStickyAssignor",
    "MemberSubscription",
    "RangeAssignor",
    "RebalanceProtocol",
    "RoundRobinAssignor",
    "TopicPartition",
    "decode_assignment",
    "decode_subscription",
    "encode_assignment",
    "encode_subscription",
    "subscribed_partitions",
]
