"""Topic and partition commands: create, add partitions, delete, AlterPartition, preferred election.

Kafka's ``ReplicationControlManager`` (topic half). Each function reads an
image and returns a ``ControllerResult`` or raises ``KetchError``.

Rules:
- Create, in this order: the name follows Kafka's rules (topic_config.py:
  INVALID_TOPIC_EXCEPTION); an existing name is TOPIC_ALREADY_EXISTS;
  partitions < 1 is INVALID_PARTITIONS; a replication factor outside
  1..(unfenced brokers) is INVALID_REPLICATION_FACTOR naming the counts; the
  configs follow topic_config.py (INVALID_CONFIG). The topic id and the
  placement's ``start_index`` are arguments (the driver draws them).
  Records: one TopicRecord, then one PartitionRecord per partition with
  ISR = replicas and the preferred replica as leader, epochs 0.
- Add partitions (Kafka's CreatePartitions), in this order: the topic exists
  (UNKNOWN_TOPIC_OR_PARTITION); it is not one of Ketch's internal topics,
  whose keys are hashed over their partition count (INVALID_REQUEST); the
  new total exceeds the current count (INVALID_PARTITIONS naming both); the
  topic's replication factor — the replica count of its lowest partition —
  is at most the unfenced brokers (INVALID_REPLICATION_FACTOR naming the
  counts). The new partitions are placed by the same code as creation
  (placement.py over the unfenced brokers), continuing the topic's
  round-robin: the start index is the position of partition 0's preferred
  replica among those brokers (Kafka's rule; when that broker is fenced, the
  first one with an id at least as high), so with an unchanged broker set
  the topic ends up placed exactly as if it had been created with the new
  total. Records: one PartitionRecord per new partition, as at creation, all
  in one batch. Partitions of the topic under reassignment do not matter:
  new partitions are independent of them. ``validate_only`` runs every check
  and returns the response with no records.
- Delete: RemoveTopicRecord, or UNKNOWN_TOPIC_OR_PARTITION.
- AlterPartition (an ISR change proposed by a partition leader) is accepted
  only from the registered broker's current epoch (STALE_BROKER_EPOCH), for
  a partition it currently leads (NOT_LEADER_OR_FOLLOWER), at the current
  leader epoch (FENCED_LEADER_EPOCH) and partition epoch
  (INVALID_UPDATE_VERSION); the new ISR must hold the leader, only replicas,
  no duplicates (INVALID_REQUEST), and every member it adds must be
  unfenced — and, if the leader says which broker epoch it saw the follower
  fetch with, still at that epoch (INELIGIBLE_REPLICA; KIP-903: a follower
  that restarted with an empty disk must not rejoin on an old fetch). It may
  not shrink the ISR below ``min.insync.replicas`` (or below its current size,
  when that is already smaller): INVALID_REQUEST (KIP-966; leaders floor
  their own proposals, replication/leader_state.py). An unchanged ISR writes
  nothing.
- Preferred election moves leadership to the first replica when it is
  unfenced and in the ISR, per partition: NONE, ELECTION_NOT_NEEDED,
  PREFERRED_LEADER_NOT_AVAILABLE or UNKNOWN_TOPIC_OR_PARTITION.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from coordinator.metadata import records as rec
from coordinator.metadata.election import Election, build_change, change_result
from coordinator.metadata.image import MetadataImage, PartitionRegistration, frozen_map
from coordinator.metadata.placement import assign_replicas, rack_alternated
from coordinator.metadata.reassignment import target_replicas
from coordinator.metadata.records import MetadataRecord
from coordinator.metadata.results import (
    AlterPartitionResponse,
    ControllerResult,
    CreatePartitionsResponse,
    CreateTopicResponse,
    DeleteTopicResponse,
    ElectLeadersResponse,
)
from coordinator.metadata.topic_config import validate_topic_configs, validate_topic_name
from ketch.errors import ErrorCode, KetchError


def create_topic(
    image: MetadataImage,
    name: str,
    partitions: int,
    replication_factor: int,
    configs: Mapping[str, str],
    topic_id: str,
    start_index: int,
    max_request_bytes: int,
) -> ControllerResult[CreateTopicResponse]:
    validate_topic_name(name)
    if image.topic(name) is not None:
        raise KetchError(f"topic {name!r} already exists", code=ErrorCode.TOPIC_ALREADY_EXISTS)
    if partitions < 1:
        raise KetchError(f"number of partitions must be >= 1, got {partitions}", code=ErrorCode.INVALID_PARTITIONS)
    racks = _placement_brokers(image, replication_factor, f"replication factor {replication_factor}")
    overrides = validate_topic_configs(configs, max_request_bytes)
    if not topic_id or topic_id in image.topics:
        raise KetchError(f"topic id {topic_id!r} is empty or in use", code=ErrorCode.INVALID_REQUEST)
    assignment = assign_replicas(racks, partitions, replication_factor, start_index)
    records, states = _new_partitions(topic_id, 0, assignment)
    out: list[MetadataRecord] = [rec.topic(name, topic_id, overrides), *records]
    return ControllerResult(out, CreateTopicResponse(topic_id, name, frozen_map(overrides), frozen_map(states)))


# Ketch's internal topics (node/group_coordinator.py, node/txn_coordinator.py): a group or
# transactional id lives on partition hash(id) % count, so a new count would move every id
# away from its state.
INTERNAL_TOPICS = frozenset({"__consumer_offsets", "__transaction_state"})


def create_partitions(
    image: MetadataImage, name: str, total: int, validate_only: bool = False
) -> ControllerResult[CreatePartitionsResponse]:
    t = image.topic(name)
    if t is None:
        raise KetchError(f"topic {name!r} does not exist", code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    if name in INTERNAL_TOPICS:
        raise KetchError(
            f"the internal topic {name!r} keeps its partition count: its keys are hashed over it",
            code=ErrorCode.INVALID_REQUEST,
        )
    current = len(t.partitions)
    if total <= current:
        raise KetchError(
            f"topic {name!r} has {current} partition(s); the new total {total} must be larger "
            "(partitions can be added, never removed)",
            code=ErrorCode.INVALID_PARTITIONS,
        )
    first = target_replicas(t.partitions[min(t.partitions)])  # a moving partition: its target replicas
    replication_factor = len(first)
    racks = _placement_brokers(image, replication_factor, f"topic {name!r} has replication factor {replication_factor}")
    arranged = rack_alternated(racks)
    preferred = first[0]
    start = arranged.index(preferred) if preferred in arranged else _first_at_least(arranged, preferred)
    assignment = assign_replicas(racks, total, replication_factor, start)[current:]
    records, states = _new_partitions(t.topic_id, current, assignment)
    response = CreatePartitionsResponse(t.topic_id, name, frozen_map(states))
    return ControllerResult([] if validate_only else records, response)


def _placement_brokers(image: MetadataImage, replication_factor: int, what: str) -> dict[int, str]:
    """The brokers that may get new replicas, with their racks (placement.py's input), when there
    are enough of them for ``replication_factor`` replicas; else INVALID_REPLICATION_FACTOR."""
    usable = image.usable_broker_ids
    if not 1 <= replication_factor <= len(usable):
        raise KetchError(
            f"{what}: not possible, {len(usable)} of {len(image.brokers)} registered broker(s) are unfenced; "
            f"new partitions need 1..{len(usable)} replicas",
            code=ErrorCode.INVALID_REPLICATION_FACTOR,
        )
    return {b: image.brokers[b].rack for b in usable}


def _first_at_least(arranged: list[int], broker_id: int) -> int:
    return next((i for i, b in enumerate(arranged) if b >= broker_id), 0)


def _new_partitions(
    topic_id: str, first_index: int, assignment: Sequence[tuple[int, ...]]
) -> tuple[list[MetadataRecord], dict[int, PartitionRegistration]]:
    """One PartitionRecord per new partition from ``first_index`` on: ISR = replicas, the preferred replica
    leads, epochs 0."""
    records: list[MetadataRecord] = []
    states: dict[int, PartitionRegistration] = {}
    for index, replicas in enumerate(assignment, start=first_index):
        states[index] = PartitionRegistration(replicas=replicas, isr=replicas, leader=replicas[0])
        records.append(rec.partition(topic_id, index, replicas, replicas, replicas[0]))
    return records, states


def delete_topic(image: MetadataImage, name: str) -> ControllerResult[DeleteTopicResponse]:
    t = image.topic(name)
    if t is None:
        raise KetchError(f"topic {name!r} does not exist", code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    return ControllerResult([rec.remove_topic(t.topic_id)], DeleteTopicResponse(t.topic_id, t.name))


def alter_partition(
    image: MetadataImage,
    broker_id: int,
    broker_epoch: int,
    topic_id: str,
    partition: int,
    leader_epoch: int,
    partition_epoch: int,
    new_isr: Sequence[int],
    isr_broker_epochs: Mapping[int, int] | None = None,
    min_isr: int = 1,
) -> ControllerResult[AlterPartitionResponse]:
    b = image.broker(broker_id)
    if b is None:
        raise KetchError(f"broker {broker_id} is not registered", code=ErrorCode.BROKER_ID_NOT_REGISTERED)
    if b.epoch != broker_epoch:
        raise KetchError(
            f"broker {broker_id} epoch {broker_epoch} is stale; the current one is {b.epoch}",
            code=ErrorCode.STALE_BROKER_EPOCH,
        )
    t = image.topics.get(topic_id)
    if t is None:
        raise KetchError(f"topic id {topic_id} does not exist", code=ErrorCode.UNKNOWN_TOPIC_ID)
    p = t.partitions.get(partition)
    if p is None:
        raise KetchError(f"partition {t.name}-{partition} does not exist", code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION)
    where = f"{t.name}-{partition}"
    if p.leader != broker_id:
        raise KetchError(
            f"broker {broker_id} is not the leader of {where} (leader {p.leader})",
            code=ErrorCode.NOT_LEADER_OR_FOLLOWER,
        )
    if leader_epoch != p.leader_epoch:
        raise KetchError(
            f"{where}: leader epoch {leader_epoch} is not the current {p.leader_epoch}",
            code=ErrorCode.FENCED_LEADER_EPOCH,
        )
    if partition_epoch != p.partition_epoch:
        raise KetchError(
            f"{where}: partition epoch {partition_epoch} is not the current {p.partition_epoch}",
            code=ErrorCode.INVALID_UPDATE_VERSION,
        )
    _check_new_isr(image, where, p, broker_id, new_isr, isr_broker_epochs or {})
    floor = min(t.min_isr(p, min_isr), len(p.isr))
    if len(new_isr) < floor:
        raise KetchError(
            f"{where}: new ISR {list(new_isr)} is smaller than min.insync.replicas ({t.min_isr(p, min_isr)}); "
            f"the ISR {list(p.isr)} keeps that many members (KIP-966)",
            code=ErrorCode.INVALID_REQUEST,
        )
    change = build_change(topic_id, partition, p, image.is_usable, target_isr=list(new_isr))
    records = [] if change is None else [change]
    return ControllerResult(records, AlterPartitionResponse(topic_id, partition, change_result(p, change)))


def _check_new_isr(
    image: MetadataImage,
    where: str,
    p: PartitionRegistration,
    leader: int,
    new_isr: Sequence[int],
    epochs: Mapping[int, int],
) -> None:
    if len(set(new_isr)) != len(new_isr):
        raise KetchError(f"{where}: new ISR {list(new_isr)} has duplicates", code=ErrorCode.INVALID_REQUEST)
    if leader not in new_isr:
        raise KetchError(f"{where}: new ISR {list(new_isr)} lacks the leader {leader}", code=ErrorCode.INVALID_REQUEST)
    strangers = [r for r in new_isr if r not in p.replicas]
    if strangers:
        raise KetchError(
            f"{where}: {strangers} in the new ISR are not replicas {list(p.replicas)}", code=ErrorCode.INVALID_REQUEST
        )
    for r in new_isr:
        if r in p.isr:
            continue
        b = image.broker(r)
        if b is None or not b.usable:
            raise KetchError(f"{where}: broker {r} is fenced or unregistered", code=ErrorCode.INELIGIBLE_REPLICA)
        if r in epochs and epochs[r] != b.epoch:
            raise KetchError(
                f"{where}: broker {r} fetched at epoch {epochs[r]}; its epoch is now {b.epoch}",
                code=ErrorCode.INELIGIBLE_REPLICA,
            )


def elect_preferred_leaders(
    image: MetadataImage, partitions: Iterable[tuple[str, int]] | None = None, min_isr: int = 1
) -> ControllerResult[ElectLeadersResponse]:
    """Preferred elections for ``(topic name, partition)`` pairs, or for every
    partition not led by its preferred replica when None."""
    if partitions is None:
        wanted = [(t.name, i) for t, i, p in image.all_partitions() if p.leader != p.replicas[0]]
    else:
        wanted = list(dict.fromkeys(partitions))
    out: list[MetadataRecord] = []
    results: dict[tuple[str, int], ErrorCode] = {}
    for name, index in wanted:
        t = image.topic(name)
        p = None if t is None else t.partitions.get(index)
        if t is None or p is None:
            results[(name, index)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        elif p.leader == p.replicas[0]:
            results[(name, index)] = ErrorCode.ELECTION_NOT_NEEDED
        else:
            floor = t.min_isr(p, min_isr)
            change = build_change(t.topic_id, index, p, image.is_usable, election=Election.PREFERRED, min_isr=floor)
            if change_result(p, change).leader != p.replicas[0]:
                results[(name, index)] = ErrorCode.PREFERRED_LEADER_NOT_AVAILABLE
            else:
                assert change is not None
                out.append(change)
                results[(name, index)] = ErrorCode.NONE
    return ControllerResult(out, ElectLeadersResponse(frozen_map(results)))
