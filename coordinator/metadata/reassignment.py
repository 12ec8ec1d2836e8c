"""Partition reassignment (KIP-455): move a partition's replicas to a target set of brokers.

Kafka's ``ReplicationControlManager.alterPartitionReassignments`` with
``PartitionReassignmentReplicas``. Each function reads an image and returns
records; only replaying them changes anything (delta.py).

Terms. During a move a partition's ``replicas`` are the *target* (in the
order asked: its first is the preferred leader) followed by ``removing``;
``adding`` are the target replicas that are new. The *original* replicas are
``replicas - adding`` (what the partition had before the move), the target
``replicas - removing``. No move is ongoing when both lists are empty.

Rules:
1. Start (a target list), per partition, checked in this order:
   UNKNOWN_TOPIC_OR_PARTITION; a partition in unclean recovery is refused
   (LEADER_NOT_AVAILABLE); the target must be non-empty, without duplicates,
   and every id a registered broker (fenced ones may be named: they join once
   they are back) — INVALID_REPLICA_ASSIGNMENT naming the bad id; an offline
   partition cannot start a move (LEADER_NOT_AVAILABLE: a new replica has
   nobody to copy from); the target must not be smaller than the floor of
   rule 3 (INVALID_REPLICA_ASSIGNMENT: the move could never complete).
   A target equal to the current replicas with no move ongoing is NONE and
   writes nothing. Otherwise the move is computed against the original
   replicas — so a new target replaces an ongoing move, and the target equal
   to the original replicas is the same as a cancel:
       replicas = target + (original - target)
       adding   = target - original,   removing = original - target
       ISR      = ISR ∩ replicas  (drops what a replaced move had added; never empty)
   The leader stays when it is still in the ISR, else election.py's rules pick
   one from it (a replaced move may drop an adding replica that led); a change
   that would leave an online partition without a leader is refused. One
   PartitionChangeRecord says it (replicas, adding and removing always present;
   isr and leader only when they change). Rule 3 is checked on the result at
   once, in the same entry: a move that adds nothing (fewer replicas, or a new
   order) completes at once when its target is in the ISR.
2. Cancel: NO_REASSIGNMENT_IN_PROGRESS when none is ongoing; else the change
   back to the original replicas (rule 1 with target = original): ISR ∩
   original, and a new leader if the leader was only an adding replica. It is
   refused (INVALID_REPLICA_ASSIGNMENT) when no original replica is in the ISR:
   they may lack committed records, and the adding replicas holding them would
   be deleted. Wait, or replace the target instead.
3. Completion, checked after every AlterPartition (in the same entry) and on
   every controller tick that fences nobody (which also sees ISR changes made
   by fencing, and lets a newly active controller finish what an old one
   started): when every target replica is in the ISR, one PartitionChangeRecord
   sets replicas = target, clears adding and removing, sets ISR = ISR ∩ target,
   and — only if the leader is not in the target — a new leader from target ∩
   ISR, preferring the target's first, with a leader-epoch bump (a leader that
   stays keeps its epoch, so its in-flight acks=all produce requests are not
   failed). It waits while no target replica in the ISR may lead (all fenced),
   while the partition is offline, and while the new ISR would be smaller than
   the floor:
       floor = min(min.insync.replicas, |original replicas in the ISR|)
   Why this floor: an acks=all record is on every ISR member, and the adding
   replicas joined the ISR because of the move itself, so what the partition
   promised before the move is measured on its original replicas. Completing
   into fewer in-sync replicas than min.insync.replicas while more original
   replicas are in sync would leave acknowledged records on fewer copies than
   the topic asks for, and make acks=all produce fail NOT_ENOUGH_REPLICAS from
   then on. Waiting loses nothing (the move can be cancelled or replaced), and
   rule 1 refuses a target that could never pass. With min.insync.replicas=2, a
   one-replica partition can still move (its floor is 1), but three replicas
   cannot shrink to one.
4. Every change bumps the partition epoch (replay does it); the ISR change and
   the completion that an AlterPartition triggers are two records of one entry.

Brokers see only the replica set change: a broker added to ``replicas`` starts
a follower from the leader's log start, one removed stops its replica and
deletes its data (local.py, node/broker.py). The leader serves an adding
replica that is not in the ISR yet through the replication throttle
(``is_throttled``; node/replication_throttle.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from coordinator.metadata import records as rec
from coordinator.metadata.delta import MetadataDelta
from coordinator.metadata.election import change_result, elect_leader
from coordinator.metadata.image import MetadataImage, PartitionRegistration, TopicImage
from coordinator.metadata.records import NO_LEADER, MetadataRecord
from coordinator.metadata.results import AlterPartitionResponse, ControllerResult
from coordinator.metadata.topic_config import MIN_INSYNC_REPLICAS
from ketch.errors import ErrorCode, KetchError

Reassignment = tuple[str, int, Sequence[int] | None]  # (topic, partition, target replicas or None to cancel)


@dataclass(frozen=True)
class ReassignmentResult:
    topic: str
    partition: int
    error: ErrorCode = ErrorCode.NONE
    message: str = ""


@dataclass(frozen=True)
class ReassignmentsResponse:
    results: tuple[ReassignmentResult, ...] = ()


def original_replicas(p: PartitionRegistration) -> tuple[int, ...]:
    return tuple(r for r in p.replicas if r not in p.adding)


def target_replicas(p: PartitionRegistration) -> tuple[int, ...]:
    return tuple(r for r in p.replicas if r not in p.removing)


def is_throttled(p: PartitionRegistration, replica_id: int) -> bool:
    """Whether the leader throttles its answers to ``replica_id``: an adding replica not yet in
    sync (Kafka throttles only out-of-sync replicas: an ISR member holds the high watermark)."""
    return replica_id in p.adding and replica_id not in p.isr


def completion_floor(t: TopicImage, p: PartitionRegistration, min_isr: int) -> int:
    """Rule 3's floor: the fewest in-sync replicas a completed move may leave."""
    original = original_replicas(p)
    in_sync = sum(1 for r in p.isr if r in original)
    return min(int(t.configs.get(MIN_INSYNC_REPLICAS, min_isr)), in_sync)


def alter(
    image: MetadataImage, reassignments: Iterable[Reassignment], min_isr: int = 1
) -> ControllerResult[ReassignmentsResponse]:
    """Start, replace or cancel moves, each partition on its own (a refusal leaves the others);
    all records in one entry. A partition named twice sees the first request's effect."""
    work = image
    out: list[MetadataRecord] = []
    results = []
    for topic, index, target in reassignments:
        try:
            records = _one(work, topic, index, target, min_isr)
        except KetchError as exc:
            results.append(ReassignmentResult(topic, index, exc.code, exc.message))
            continue
        if records:
            delta = MetadataDelta(work)
            delta.replay_batch(work.offset, records)
            work = delta.apply()
            out += records
        results.append(ReassignmentResult(topic, index))
    return ControllerResult(out, ReassignmentsResponse(tuple(results)))


def _one(
    image: MetadataImage, topic: str, index: int, target: Sequence[int] | None, min_isr: int
) -> list[MetadataRecord]:
    t = image.topic(topic)
    p = None if t is None else t.partitions.get(index)
    if t is None or p is None:
        raise KetchError(f"partition {topic}-{index} does not exist", code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    where = f"{topic}-{index}"
    if p.recovering:
        raise KetchError(
            f"{where} is in unclean recovery (offline until the replica with the longest log is back); "
            "reassign it once it has a leader",
            code=ErrorCode.LEADER_NOT_AVAILABLE,
        )
    if target is None:
        if not p.reassigning:
            raise KetchError(f"{where} has no reassignment in progress", code=ErrorCode.NO_REASSIGNMENT_IN_PROGRESS)
        original = original_replicas(p)
        return [_move(image, t, index, p, original, original)]
    return _start(image, t, index, p, list(target), min_isr)


def _start(
    image: MetadataImage, t: TopicImage, index: int, p: PartitionRegistration, target: list[int], min_isr: int
) -> list[MetadataRecord]:
    where = f"{t.name}-{index}"
    if not target:
        raise KetchError(f"{where}: the target replica list is empty", code=ErrorCode.INVALID_REPLICA_ASSIGNMENT)
    twice = sorted({r for r in target if target.count(r) > 1})
    if twice:
        raise KetchError(
            f"{where}: broker(s) {twice} appear more than once in the target {target}",
            code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        )
    for r in target:
        if r not in image.brokers:
            raise KetchError(
                f"{where}: broker {r} in the target {target} is not a registered broker "
                f"(registered: {sorted(image.brokers)})",
                code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            )
    if p.offline:
        raise KetchError(
            f"{where} has no leader: new replicas would have nobody to copy from (a move in progress may be cancelled)",
            code=ErrorCode.LEADER_NOT_AVAILABLE,
        )
    floor = completion_floor(t, p, min_isr)
    if len(target) < floor:
        raise KetchError(
            f"{where}: a target of {len(target)} replica(s) is below min.insync.replicas; the move could never "
            f"complete (it would leave {len(target)} in-sync replica(s) where {floor} are now)",
            code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        )
    if tuple(target) == p.replicas and not p.reassigning:
        return []
    start = _move(image, t, index, p, original_replicas(p), target)
    done = completion(image, t, index, change_result(p, start), min_isr)
    return [start] if done is None else [start, done]


def _move(
    image: MetadataImage,
    t: TopicImage,
    index: int,
    p: PartitionRegistration,
    original: Sequence[int],
    target: Sequence[int],
) -> MetadataRecord:
    """Rule 1's change from ``original`` towards ``target`` (a cancel when they are equal)."""
    where = f"{t.name}-{index}"
    replicas = [*target, *(r for r in original if r not in target)]
    adding = [r for r in target if r not in original]
    removing = [r for r in original if r not in target]
    isr = [r for r in p.isr if r in replicas]
    if not isr:
        raise KetchError(
            f"{where}: none of the in-sync replicas {list(p.isr)} is among {replicas}; they may hold records "
            "the others lack (wait until one catches up, or name another target)",
            code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        )
    moved = replace(p, replicas=tuple(replicas), isr=tuple(isr))
    leader, _ = elect_leader(moved, isr, image.is_usable)
    if leader == NO_LEADER and not p.offline:
        raise KetchError(
            f"{where}: no in-sync replica of {replicas} can lead (in sync: {isr}, all fenced)",
            code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
        )
    return rec.partition_change(
        t.topic_id,
        index,
        leader=leader if leader != p.leader else None,
        isr=isr if tuple(isr) != p.isr else None,
        replicas=replicas,
        adding=adding,
        removing=removing,
    )


def completion(
    image: MetadataImage, t: TopicImage, index: int, p: PartitionRegistration, min_isr: int = 1
) -> MetadataRecord | None:
    """Rule 3: the record completing the move of ``p``, or None while it must wait."""
    if not p.reassigning or p.offline or p.recovering:
        return None
    target = target_replicas(p)
    if not set(target) <= set(p.isr):
        return None
    isr = [r for r in p.isr if r in target]
    if len(isr) < completion_floor(t, p, min_isr):
        return None
    leader, _ = elect_leader(replace(p, replicas=target, isr=tuple(isr)), isr, image.is_usable)
    if leader == NO_LEADER:
        return None
    return rec.partition_change(
        t.topic_id,
        index,
        leader=leader if leader != p.leader else None,
        isr=isr if tuple(isr) != p.isr else None,
        replicas=target,
        adding=(),
        removing=(),
    )


def completions(image: MetadataImage, min_isr: int = 1) -> list[MetadataRecord]:
    """Completion records for every move that may complete now (the controller's tick)."""
    out: list[MetadataRecord] = []
    if not image.reassigning_partition_count:  # the common tick: nothing moves
        return out
    for t, index, p in image.all_partitions():
        done = completion(image, t, index, p, min_isr) if p.reassigning else None
        if done is not None:
            out.append(done)
    return out


def with_completion(
    image: MetadataImage, result: ControllerResult[AlterPartitionResponse], min_isr: int = 1
) -> ControllerResult[AlterPartitionResponse]:
    """An AlterPartition result plus, in the same entry, the completion its new ISR allows."""
    response = result.response
    t = image.topics.get(response.topic_id)
    if not result.records or t is None:
        return result
    done = completion(image, t, response.partition, response.state, min_isr)
    if done is None:
        return result
    state = change_result(response.state, done)
    return ControllerResult([*result.records, done], replace(response, state=state))


def ongoing(image: MetadataImage, topics: Iterable[str] = ()) -> list[tuple[str, int, PartitionRegistration]]:
    """(topic, partition, state) of every move in progress, of ``topics`` (every topic when empty)."""
    names = set(topics)
    return [(t.name, i, p) for t, i, p in image.all_partitions() if p.reassigning and (not names or t.name in names)]
