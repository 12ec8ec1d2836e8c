"""Broker lifecycle commands: register, heartbeat, session expiry, controlled shutdown.

Kafka's ``ClusterControlManager`` + the fencing half of
``ReplicationControlManager``. Each function reads an image and returns a
``ControllerResult``; only ``BrokerSessions`` (in-memory, not replicated) is
touched directly.

Lifecycle of one registration (one broker epoch):

    register ──► fenced ──heartbeat, caught up──► unfenced
                   ▲                                  │
                   └──── session expired (tick) ──────┘
    any ──controlled shutdown──► fenced + shut_down (final; register again)

Rules:
- Register (id, incarnation, host, port, rack, endpoints) always writes a
  ``RegisterBrokerRecord``; host/port are the inter-broker listener's, the endpoints
  every advertised listener's (distinct names, valid addresses; none from a broker
  older than listeners): the broker epoch is that record's offset, so a
  re-registration — a restarted process with a new incarnation id, or a
  retry — gets a new epoch, and the old epoch is stale from then on. If the
  old registration was unfenced, its leaderships move in the same batch (the
  old process is gone; it must not stay leader). If the broker says its
  previous process did not shut down cleanly, it leaves every ISR it is in,
  below the floor if need be, and an ISR it was the last member of goes
  into unclean recovery (recovery.py); its replicas' log ends replace what it
  reported before.
- A heartbeat names (id, epoch, metadata offset the broker has applied).
  Unknown id → BROKER_ID_NOT_REGISTERED; another epoch → STALE_BROKER_EPOCH
  (the broker must register again). It renews the session. A fenced broker
  whose offset has reached its registration offset is unfenced
  (``BrokerFenceRecord(fenced=False)``), and every offline partition it is
  eligible to lead gets a leader in the same batch.
- ``tick(now_ms)`` fences every unfenced broker whose session expired, all
  in one batch (fence records first, then partition changes), electing new
  leaders from the ISR and shrinking the ISRs they were in down to
  ``min.insync.replicas`` (the floor; the last members stay, see
  election.py). A tick that fences nobody runs unclean-recovery elections.
- ``fence_unreachable(id, epoch)`` fences one broker before its session runs
  out, on evidence the driver gathered: the broker has been silent for more
  than ``silent_ms`` (sessions.py ``silent``) and a connection to its
  registered listener was refused (nothing listens there: the process is
  gone). A refused connection is certain where a timeout is not: a paused
  or partitioned broker cannot be told from a slow one, so those wait for
  the session. It is a no-op unless that registration (same epoch) is still
  unfenced and still silent when the command runs: a heartbeat that arrived
  while the driver was probing wins. Fencing by mistake costs availability,
  never data: the broker's next heartbeat unfences it.
- Controlled shutdown (id, epoch) does the same for one broker and marks the
  registration ``shut_down``: later heartbeats with that epoch are answered
  ``should_shut_down`` and never unfence it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from coordinator.metadata import records as rec
from coordinator.metadata.election import build_change
from coordinator.metadata.image import BrokerRegistration, MetadataImage
from coordinator.metadata.records import NO_LEADER, Endpoint, MetadataRecord, TopicIdPartition
from coordinator.metadata.recovery import LogEnd, ReplicaLogs, recovery_records
from coordinator.metadata.results import (
    ControllerResult,
    HeartbeatResponse,
    RegisterBrokerResponse,
    ShutdownResponse,
    TickResponse,
)
from coordinator.metadata.sessions import BrokerSessions
from ketch.errors import ErrorCode, KetchError


def fence_records(
    image: MetadataImage,
    broker_ids: Collection[int],
    shut_down: bool = False,
    *,
    min_isr: int = 1,
    unclean: Collection[int] = (),
) -> list[MetadataRecord]:
    """Fence ``broker_ids`` (registered) and move everything they lead or are in-sync for.

    ISRs keep ``min_isr`` members (the topic's ``min.insync.replicas`` overrides
    it; election.py) — except that brokers in ``unclean`` (back from an unclean
    shutdown) leave every ISR they are in, and an ISR whose last member is one
    of them goes into unclean recovery (recovery.py).
    """
    fencing = set(broker_ids)

    def acceptable(broker: int) -> bool:
        return broker not in fencing and image.is_usable(broker)

    out = []
    for broker_id in sorted(fencing):
        b = image.brokers[broker_id]
        if b.fenced and (b.shut_down or not shut_down):
            continue
        out.append(rec.broker_fence(broker_id, b.epoch, fenced=True, shut_down=shut_down))
    for t, index, p in image.all_partitions():
        if fencing.isdisjoint(p.isr):
            continue
        rest = [b for b in p.isr if b not in unclean]
        allow_unclean = image.unclean_leader_election(t)
        change: MetadataRecord | None
        if not rest:
            leader = NO_LEADER if p.leader != NO_LEADER else None
            change = None if p.recovering else rec.partition_change(t.topic_id, index, leader, recovering=True)
        elif len(rest) < len(p.isr):
            change = build_change(t.topic_id, index, p, acceptable, rest, unclean=allow_unclean)
        else:
            floor = t.min_isr(p, min_isr)
            change = build_change(t.topic_id, index, p, acceptable, unclean=allow_unclean, min_isr=floor)
        if change is not None:
            out.append(change)
    return out


def unfence_records(image: MetadataImage, broker_id: int, min_isr: int = 1) -> list[MetadataRecord]:
    """Unfence ``broker_id`` and elect leaders for the offline partitions it can lead."""
    b = image.brokers[broker_id]

    def acceptable(broker: int) -> bool:
        return broker == broker_id or image.is_usable(broker)

    out = [rec.broker_fence(broker_id, b.epoch, fenced=False)]
    for t, index, p in image.partitions_of_broker(broker_id):
        if p.offline:
            floor = t.min_isr(p, min_isr)
            allow_unclean = image.unclean_leader_election(t)
            change = build_change(t.topic_id, index, p, acceptable, unclean=allow_unclean, min_isr=floor)
            if change is not None:
                out.append(change)
    return out


def current_registration(image: MetadataImage, broker_id: int, broker_epoch: int) -> BrokerRegistration:
    b = image.broker(broker_id)
    if b is None:
        raise KetchError(f"broker {broker_id} is not registered", code=ErrorCode.BROKER_ID_NOT_REGISTERED)
    if b.epoch != broker_epoch:
        raise KetchError(
            f"broker {broker_id} epoch {broker_epoch} is stale; the current registration has epoch {b.epoch} "
            "(register again)",
            code=ErrorCode.STALE_BROKER_EPOCH,
        )
    return b


def register(
    image: MetadataImage,
    sessions: BrokerSessions,
    logs: ReplicaLogs,
    broker_id: int,
    incarnation_id: str,
    host: str,
    port: int,
    rack: str,
    now_ms: int,
    *,
    clean_shutdown: bool,
    replica_logs: Mapping[TopicIdPartition, LogEnd],
    min_isr: int,
    endpoints: Sequence[Endpoint] = (),
) -> ControllerResult[RegisterBrokerResponse]:
    if broker_id < 0:
        raise KetchError(f"broker id must be >= 0, got {broker_id}", code=ErrorCode.INVALID_REQUEST)
    if not incarnation_id:
        raise KetchError("incarnation id is empty", code=ErrorCode.INVALID_REQUEST)
    if not host or not 0 < port < 65536:
        raise KetchError(
            f"broker address {host!r}:{port} is not a host and a port 1..65535", code=ErrorCode.INVALID_REQUEST
        )
    check_endpoints(endpoints)
    old = image.broker(broker_id)
    records = []
    if old is not None and (old.usable or not clean_shutdown):
        records = fence_records(image, [broker_id], min_isr=min_isr, unclean=() if clean_shutdown else [broker_id])
    records.append(rec.register_broker(broker_id, incarnation_id, host, port, rack, endpoints=endpoints))
    sessions.touch(broker_id, now_ms)
    logs.forget(
        TopicIdPartition(r.partition_change.topic_id, r.partition_change.partition)
        for r in records
        if r.HasField("partition_change") and r.partition_change.recovering
    )
    logs.replace(broker_id, replica_logs)
    replaced = old.epoch if old is not None and old.usable else None
    return ControllerResult(records, RegisterBrokerResponse(broker_id, incarnation_id, replaced))


def check_endpoints(endpoints: Sequence[Endpoint]) -> None:
    """Distinct non-empty names, each with a host and a port 1..65535 (none: a broker from before listeners)."""
    names = [e.name for e in endpoints]
    if len(set(names)) != len(names) or not all(names):
        raise KetchError(f"listener names {names} must be distinct and non-empty", code=ErrorCode.INVALID_REQUEST)
    for e in endpoints:
        if not e.host or not 0 < e.port < 65536:
            raise KetchError(
                f"listener {e.name}'s address {e.host!r}:{e.port} is not a host and a port 1..65535",
                code=ErrorCode.INVALID_REQUEST,
            )


def heartbeat(
    image: MetadataImage,
    sessions: BrokerSessions,
    logs: ReplicaLogs,
    broker_id: int,
    broker_epoch: int,
    metadata_offset: int,
    now_ms: int,
    *,
    replica_logs: Mapping[TopicIdPartition, LogEnd],
    min_isr: int,
) -> ControllerResult[HeartbeatResponse]:
    b = current_registration(image, broker_id, broker_epoch)
    caught_up = metadata_offset >= b.epoch
    if b.shut_down:
        return ControllerResult([], HeartbeatResponse(broker_id, b.epoch, True, caught_up, should_shut_down=True))
    sessions.touch(broker_id, now_ms)
    logs.update(broker_id, replica_logs)
    records = unfence_records(image, broker_id, min_isr) if b.fenced and caught_up else []
    fenced = b.fenced and not records
    return ControllerResult(records, HeartbeatResponse(broker_id, b.epoch, fenced, caught_up))


def tick(
    image: MetadataImage, sessions: BrokerSessions, logs: ReplicaLogs, now_ms: int, *, min_isr: int
) -> ControllerResult[TickResponse]:
    expired = sessions.expired(image.usable_broker_ids, now_ms)
    for broker_id in expired:
        sessions.remove(broker_id)
    if expired:
        return ControllerResult(fence_records(image, expired, min_isr=min_isr), TickResponse(tuple(expired)))
    # Recovery elections run on a tick that fences nobody (they read who is usable).
    records = recovery_records(image, logs)
    changes = [r.partition_change for r in records]
    return ControllerResult(
        records, TickResponse(recovered=tuple((c.topic_id, c.partition, c.leader) for c in changes))
    )


def fence_unreachable(
    image: MetadataImage,
    sessions: BrokerSessions,
    broker_id: int,
    broker_epoch: int,
    now_ms: int,
    *,
    silent_ms: int,
    min_isr: int,
) -> ControllerResult[TickResponse]:
    b = image.broker(broker_id)
    if b is None or b.epoch != broker_epoch or not b.usable:
        return ControllerResult([], TickResponse())
    if not sessions.silent([broker_id], now_ms, silent_ms):
        return ControllerResult([], TickResponse())
    sessions.remove(broker_id)
    return ControllerResult(fence_records(image, [broker_id], min_isr=min_isr), TickResponse((broker_id,)))


def shutdown(
    image: MetadataImage, sessions: BrokerSessions, broker_id: int, broker_epoch: int, *, min_isr: int
) -> ControllerResult[ShutdownResponse]:
    b = current_registration(image, broker_id, broker_epoch)
    sessions.remove(broker_id)
    if b.shut_down:
        return ControllerResult([], ShutdownResponse(broker_id, b.epoch, 0))
    led = sum(1 for _, _, p in image.all_partitions() if p.leader == broker_id)
    return ControllerResult(
        fence_records(image, [broker_id], shut_down=True, min_isr=min_isr), ShutdownResponse(broker_id, b.epoch, led)
    )
