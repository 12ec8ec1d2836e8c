"""CooperativeStickyAssignor (Kafka's ``cooperative-sticky``, KIP-429).

Input: each member's subscription with the partitions it *owned* in the
previous generation. Output: a balanced, sticky assignment from which every
ownership transfer has been held back for one generation.

The rules, in the order they are applied:

1. Previous owner. A partition claimed by several members goes to the claim
   from the highest generation (ties: the smallest member id); the others'
   claims are stale. Claims on partitions that no longer exist, or that no
   member subscribes to, are dropped.
2. Stick. A previous owner still subscribed to the topic keeps the partition.
3. Fill. Every other partition, in sorted order, goes to the subscribed member
   with the fewest partitions (ties: smallest id).
4. Balance. While some member A holds a partition that a subscribed member B
   could take with ``count(B) <= count(A) - 2``, move one from the fullest A to
   the emptiest such B — partitions A did not own before first (moving them
   costs nothing). Each move lowers the sum of squared counts, so this ends;
   with identical subscriptions it ends at max - min ≤ 1, and in general at
   "no single move helps" (Kafka's definition of balanced). Only partitions
   of overloaded members move, so owned partitions that need not move for
   balance stay put.
5. Cooperate. A partition whose target (steps 2-4) is not its previous owner,
   while that owner is still a member, is left out of *this* generation's
   assignment: its owner must revoke it first. Partitions whose previous
   owner left the group go to their target at once.

How a consumer uses it (the cooperative protocol):
- It joins with its subscription and the partitions it owns now, and keeps
  consuming them throughout the rebalance (no revoke-everything as in eager).
- After SyncGroup: ``added = assigned - owned`` are started
  (``on_partitions_assigned``); ``revoked = owned - assigned`` are stopped,
  their offsets committed (``on_partitions_revoked``).
- If ``revoked`` is not empty the consumer rejoins at once. In that second
  rebalance the revoked partitions have no owner, so step 3/4 give them to
  the members step 5 held them back from. With identical subscriptions two
  rebalances always suffice; the tests check that the second one converges.
"""

from __future__ import annotations

from collections.abc import Mapping

from ketch.assignors.base import (
    Assignment,
    MemberSubscription,
    RebalanceProtocol,
    TopicPartition,
    empty_assignment,
    subscribed_partitions,
)


class CooperativeStickyAssignor:
    name = "cooperative-sticky"
    protocol = RebalanceProtocol.COOPERATIVE

    def assign(self, members: Mapping[str, MemberSubscription], partitions_per_topic: Mapping[str, int]) -> Assignment:
        partitions = subscribed_partitions(members, partitions_per_topic)
        owners = previous_owners(members, set(partitions))
        target = sticky_target(members, partitions, owners)
        return withhold_transfers(target, owners)


def previous_owners(
    members: Mapping[str, MemberSubscription], partitions: set[TopicPartition]
) -> dict[TopicPartition, str]:
    """Rule 1: the member whose claim on each existing, subscribed partition wins."""
    best: dict[TopicPartition, tuple[int, str]] = {}
    for member in sorted(members):
        sub = members[member]
        for tp in sub.owned:
            tp = TopicPartition(*tp)
            if tp not in partitions:
                continue
            current = best.get(tp)
            if current is None or sub.generation > current[0]:
                best[tp] = (sub.generation, member)
    return {tp: member for tp, (_, member) in best.items()}


def sticky_target(
    members: Mapping[str, MemberSubscription],
    partitions: list[TopicPartition],
    owners: Mapping[TopicPartition, str],
) -> Assignment:
    """Rules 2-4: the balanced assignment that keeps the most of what members own."""
    result = empty_assignment(members)
    unplaced: list[TopicPartition] = []
    for tp in partitions:
        owner = owners.get(tp)
        if owner is not None and tp.topic in members[owner].topics:
            result[owner].append(tp)
        else:
            unplaced.append(tp)
    for tp in unplaced:
        takers = [m for m in result if tp.topic in members[m].topics]
        if takers:
            result[min(takers, key=lambda m: (len(result[m]), m))].append(tp)
    while _move_one(members, result, owners):
        pass
    for held in result.values():
        held.sort()
    return result


def _move_one(
    members: Mapping[str, MemberSubscription], result: Assignment, owners: Mapping[TopicPartition, str]
) -> bool:
    """Rule 4: one move from the fullest member that can give to a member ≥ 2 emptier."""
    for giver in sorted(result, key=lambda m: (-len(result[m]), m)):
        held = result[giver]
        # Partitions the giver did not own before move first; then the rest, in order.
        for tp in sorted(held, key=lambda tp: (owners.get(tp) == giver, tp)):
            takers = [m for m in result if m != giver and tp.topic in members[m].topics]
            if not takers:
                continue
            taker = min(takers, key=lambda m: (len(result[m]), m))
            if len(result[taker]) <= len(held) - 2:
                held.remove(tp)
                result[taker].append(tp)
                return True
    return False


def withhold_transfers(target: Assignment, owners: Mapping[TopicPartition, str]) -> Assignment:
    """Rule 5: leave out partitions that would change hands (``owners`` only names current members)."""
    return {member: [tp for tp in held if owners.get(tp, member) == member] for member, held in target.items()}
