"""End to end on the pure parts: two consumers rebalancing with cooperative-sticky through the coordinator.

Plays the consumer's side as ketch/assignors documents it (subscriptions with
owned partitions in JoinGroup, the leader running the assignor on decoded
subscriptions, revoke-then-rejoin) and proves that a partition moving from A
to B is never owned by both in any generation, and that the move completes
in the follow-up rebalance.
"""

from __future__ import annotations

from coordinator.groups import JoinResponse
from ketch.assignors import (
    ASSIGNORS,
    PROTOCOL_TYPE,
    MemberSubscription,
    TopicPartition,
    decode_assignment,
    decode_subscription,
    encode_assignment,
    encode_subscription,
)
from ketch.errors import ErrorCode
from tests.test_groups_support import Driver

PARTITIONS = {"t": 4}


class Consumer:
    def __init__(self, d: Driver) -> None:
        self.d, self.member_id, self.generation = d, "", -1
        self.owned: tuple[TopicPartition, ...] = ()

    def join(self) -> int:
        sub = encode_subscription(MemberSubscription(frozenset({"t"}), self.owned, self.generation))
        return self.d.join("g", self.member_id, (("cooperative-sticky", sub),), protocol_type=PROTOCOL_TYPE)

    def joined(self, request: int) -> JoinResponse:
        answer = self.d.join_answer(request)
        self.member_id, self.generation = answer.member_id, answer.generation
        return answer

    def sync(self, answer: JoinResponse) -> int:
        assignments = {}
        if answer.leader == self.member_id:
            members = {m: decode_subscription(meta) for m, meta in answer.members}
            plan = ASSIGNORS[answer.protocol].assign(members, PARTITIONS)
            assignments = {m: encode_assignment(tps) for m, tps in plan.items()}
        return self.d.sync("g", self.member_id, self.generation, assignments)

    def synced(self, request: int) -> bool:
        """Apply the assignment; True if something was revoked (the consumer must rejoin)."""
        assigned = decode_assignment(self.d.sync_answer(request).assignment).partitions
        revoked = set(self.owned) - set(assigned)
        self.owned = assigned
        return bool(revoked)


def test_a_partition_moves_in_two_rebalances_and_is_never_owned_twice() -> None:
    d = Driver()
    a, b = Consumer(d), Consumer(d)
    answer = a.joined(a.join())
    assert not a.synced(a.sync(answer)) and len(a.owned) == 4

    join_b = b.join()  # a newcomer: the group prepares a rebalance; A keeps consuming meanwhile
    answer_a = a.joined(a.join())
    answer_b = b.joined(join_b)
    sync_b = b.sync(answer_b)
    sync_a = a.sync(answer_a)
    assert b.synced(sync_b) is False and b.owned == ()
    assert a.synced(sync_a) is True and len(a.owned) == 2  # two partitions revoked, given to nobody yet
    assert not set(a.owned) & set(b.owned)

    join_a = a.join()  # revoke-then-rejoin: the second rebalance
    assert d.heartbeat("g", b.member_id, b.generation) == ErrorCode.REBALANCE_IN_PROGRESS  # B rejoins too
    answer_b = b.joined(b.join())
    answer_a = a.joined(join_a)
    sync_b, sync_a = b.sync(answer_b), a.sync(answer_a)
    assert not a.synced(sync_a) and not b.synced(sync_b)
    assert len(a.owned) == len(b.owned) == 2 and not set(a.owned) & set(b.owned)
    assert d.coordinator.describe_group("g").generation == 3
