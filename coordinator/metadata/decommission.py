"""Where the replicas of a broker being retired go: the plan behind ``ketch cluster decommission``.

Pure: the caller reads the partitions and the brokers (with their racks)
from the cluster and starts the moves the plan gives (reassignment.py).

Rules:
- Input: each partition's target replicas (for a partition with a move in
  progress, that move's target), the brokers that may take replicas with their
  racks ("" for none), and the node to empty. Only partitions whose target
  holds the node move.
- The node's replica is replaced in place (the same position in the list, so
  the preferred-leader order of the others is kept) by one candidate broker
  not already a replica of the partition, chosen by, in order: a rack that
  none of the partition's other replicas is on (only when the brokers span
  more than one rack: the rule of placement.py, replicas on distinct racks
  where there are enough), the fewest replicas (counting the plan so far:
  least-loaded first), then the lowest id.
- Partitions are planned in (topic, partition) order, so a plan is
  deterministic. A partition with no candidate (every other broker already
  holds it) cannot be planned: ``ValueError`` names it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

Partition = tuple[str, int]


def plan_decommission(
    partitions: Mapping[Partition, Sequence[int]], brokers: Mapping[int, str], node: int
) -> dict[Partition, list[int]]:
    """The new target replicas of every partition whose target holds ``node``."""
    candidates = {b: rack for b, rack in brokers.items() if b != node}
    multi_rack = len(set(candidates.values())) > 1
    load = dict.fromkeys(candidates, 0)
    for replicas in partitions.values():
        for r in replicas:
            if r in load:
                load[r] += 1
    plan: dict[Partition, list[int]] = {}
    for key in sorted(partitions):
        replicas = list(partitions[key])
        if node not in replicas:
            continue
        others = [r for r in replicas if r != node]
        free = [b for b in candidates if b not in replicas]
        if not free:
            raise ValueError(
                f"{key[0]}-{key[1]}: no broker can take node {node}'s replica (replicas {replicas}, "
                f"brokers {sorted(candidates)})"
            )
        used_racks = {candidates.get(r, brokers.get(r, "")) for r in others}

        def rank(b: int, used: set[str] = used_racks) -> tuple[int, int, int]:
            return (1 if multi_rack and candidates[b] in used else 0, load[b], b)

        chosen = min(free, key=rank)
        load[chosen] += 1
        plan[key] = [chosen if r == node else r for r in replicas]
    return plan
