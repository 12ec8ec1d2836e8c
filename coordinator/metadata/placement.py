"""Replica placement for new topics: Kafka's round-robin, rack-aware assignment.

Input: the usable (registered, unfenced) brokers with their racks, the
number of partitions, the replication factor, and a per-topic
``start_index`` chosen by the caller (the driver draws it at random, tests
fix it; the core never calls ``random``).

The algorithm (Kafka's ``assignReplicasToBrokers`` in its rack-aware form,
which reduces to the plain one when all brokers share one rack):

1. Order the brokers so racks alternate: racks sorted by name, brokers
   sorted by id inside each rack, then take one broker from each rack in
   turn (``[a1, b1, c1, a2, b2, c2, a3, ...]``). Brokers without a rack share
   the rack ``""``.
2. Partition ``p``'s first replica — its preferred leader — is broker
   ``(p + start_index) mod n`` of that list, so leaders go round-robin and
   every broker leads ``floor(P/n)`` or ``ceil(P/n)`` partitions.
3. Followers are taken from the list at an offset ``shift`` from the leader;
   ``shift`` starts at ``start_index`` and grows by one every ``n``
   partitions, so the followers of consecutive partitions do not all land on
   the same few brokers. With one rack, each replica position visits every
   broker once per ``n`` partitions, so replica counts per broker differ by
   at most the replication factor (and are equal when ``n`` divides ``P``).
4. A candidate follower is skipped while its rack already holds a replica of
   this partition and some rack holds none, or while it already holds one
   and some broker holds none — so the replicas of a partition sit on
   distinct racks whenever there are at least as many racks as replicas.

Replicas of one partition are always distinct brokers; the caller checks
``1 <= replication_factor <= len(brokers)`` first.
"""

from __future__ import annotations

from collections.abc import Mapping


def rack_alternated(brokers: Mapping[int, str]) -> list[int]:
    """Broker ids ordered so consecutive ids are on different racks where possible."""
    by_rack: dict[str, list[int]] = {}
    for broker_id in sorted(brokers):
        by_rack.setdefault(brokers[broker_id], []).append(broker_id)
    racks = [by_rack[r] for r in sorted(by_rack)]
    out: list[int] = []
    for i in range(max((len(r) for r in racks), default=0)):
        out.extend(r[i] for r in racks if i < len(r))
    return out


def assign_replicas(
    brokers: Mapping[int, str], partitions: int, replication_factor: int, start_index: int
) -> list[tuple[int, ...]]:
    """Replica lists (preferred leader first) for partitions ``0..partitions-1``.

    ``brokers`` maps each usable broker id to its rack ("" for none).
    """
    n = len(brokers)
    if not 1 <= replication_factor <= n:
        raise ValueError(f"replication factor {replication_factor} needs 1..{n} brokers")
    if partitions < 0:
        raise ValueError(f"partitions must be >= 0, got {partitions}")
    arranged = rack_alternated(brokers)
    num_racks = len(set(brokers.values()))
    start = start_index % n
    shift = start
    out: list[tuple[int, ...]] = []
    for p in range(partitions):
        if p > 0 and p % n == 0:
            shift += 1
        first = (p + start) % n
        leader = arranged[first]
        replicas = [leader]
        racks = {brokers[leader]}
        k = 0
        while len(replicas) < replication_factor:
            broker = arranged[_follower_index(first, shift * num_racks, k, n)]
            rack = brokers[broker]
            k += 1
            if rack in racks and len(racks) < num_racks:
                continue
            if broker in replicas:
                continue
            replicas.append(broker)
            racks.add(rack)
        out.append(tuple(replicas))
    return out


def _follower_index(first: int, shift: int, k: int, n: int) -> int:
    # Never ``first`` itself: an offset in 1..n-1 from it.
    return (first + 1 + (shift + k) % (n - 1)) % n
