"""The controller state machine: Kafka's ``QuorumController`` logic without its event loop.

Every controller in the quorum runs one ``Controller``. The one whose Raft
node leads is *active*: it runs commands. All of them replay committed
records (delta.py), so a standby that becomes active already holds the state.

Commands return records; only replay changes state. A command method reads
``self.image``, decides, and returns ``ControllerResult(records, response)``
— or raises ``KetchError`` and writes nothing. It never touches the image.
The only state a command changes directly is the in-memory, unreplicated
broker session table (sessions.py).

The driver's contract (what coordinator's asyncio driver must do):

1. Activation. When its Raft node becomes leader, the driver waits until the
   commit index reaches the leader's first entry of the new term (its no-op)
   and everything up to it has been replayed, then calls ``activate()``.
   The image then holds every record any earlier controller committed.
   Until then, and on standbys, commands are answered NOT_CONTROLLER.
2. Commands, one at a time, in the order they are run:

       result = controller.create_topic(...)        # or raises KetchError → reply with its code
       if result.records:
           index = raft_node.propose(encode_batch(result.records))   # one entry, atomic
           controller.replay_batch(index, result.records, committed=False)
       # reply with result.response once raft has committed `index`
       # (an empty result: once everything proposed so far is committed)

   Replaying right after proposing (before commit) is what Kafka does: the
   next command sees the effect of this one (no second topic of the same
   name, no second fence of the same broker). It is safe because the
   active controller is the only writer and Raft keeps its entries in order.
3. ``commit(index)`` whenever Raft's commit index advances: the replayed
   entries up to ``index`` become the committed image. The active
   controller does not replay its own entries a second time when Raft hands
   them out as committed.
4. ``resign()`` when the Raft node stops leading: the image falls back to
   the committed one (entries proposed but not committed may be lost or may
   still commit under the new leader; either way they arrive again as
   committed entries), and session clocks are dropped.
5. Standbys (and a resigned controller) call ``replay_batch(index, records)``
   for each committed entry — ``replay_batch(index, [])`` for Raft's own no-op
   entries, so the image offset is the last applied index — and
   ``reset(decode_snapshot(data))`` after installing a snapshot.
6. Snapshots: ``raft.compact(img.offset, encode_snapshot(img))`` with
   ``img = controller.committed_image`` (never ``image``, which may hold
   uncommitted entries).

Broker sessions and the replicas' reported log ends (recovery.py) are the
only unreplicated state; both start empty when a controller becomes active.
``config.min_insync_replicas`` is the ISR floor for topics without their own
``min.insync.replicas``: run every controller with the brokers' default. A
cluster-wide dynamic ``min.insync.replicas`` (configs.py) overrides it, and
``unclean.leader.election.enable`` is read the same way (image.py).

The broker epoch returned to a registering broker is the Raft index of the
entry holding its ``RegisterBrokerRecord``: the ``index`` in step 2.

Time comes in as ``now_ms`` (monotonic milliseconds); ids (topic ids) and the
placement's random start index come in as arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from coordinator.metadata import brokers, configs, producer_ids, reassignment, security_changes, topics
from coordinator.metadata import records as rec
from coordinator.metadata.acls import AclBinding
from coordinator.metadata.configs import AlterConfigsResource, AlterConfigsResponse
from coordinator.metadata.delta import MetadataDelta
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.producer_ids import ProducerIdsBlock
from coordinator.metadata.reassignment import Reassignment, ReassignmentsResponse
from coordinator.metadata.records import Endpoint, MetadataRecord, TopicIdPartition
from coordinator.metadata.recovery import LogEnd, ReplicaLogs
from coordinator.metadata.results import (
    AlterPartitionResponse,
    ControllerConfig,
    ControllerResult,
    CreatePartitionsResponse,
    CreateTopicResponse,
    DeleteTopicResponse,
    ElectLeadersResponse,
    HeartbeatResponse,
    RegisterBrokerResponse,
    ShutdownResponse,
    TickResponse,
)
from coordinator.metadata.scram import ScramCredential
from coordinator.metadata.sessions import BrokerSessions
from ketch.errors import ErrorCode


class Controller:
    def __init__(self, config: ControllerConfig | None = None, image: MetadataImage | None = None) -> None:
        self.config = config or ControllerConfig()
        self.sessions = BrokerSessions(self.config.broker_session_timeout_ms, self.config.broker_first_contact_ms)
        self.replica_logs = ReplicaLogs()  # what brokers reported of their logs (recovery.py)
        self._committed = image or MetadataImage()
        self._image = self._committed
        self._pending: list[tuple[int, MetadataImage]] = []  # (index, image after it), not yet committed

    @property
    def image(self) -> MetadataImage:
        """The latest state: committed records plus this controller's own proposed ones."""
        return self._image

    @property
    def committed_image(self) -> MetadataImage:
        return self._committed

    @property
    def _min_isr(self) -> int:
        """The ISR floor for topics without their own min.insync.replicas: the cluster-wide dynamic
        value, else this controller's setting."""
        return self._image.min_isr_default(self.config.min_insync_replicas)

    # -- replay --

    def replay_batch(self, offset: int, records: Sequence[MetadataRecord], committed: bool = True) -> MetadataDelta:
        """Apply one Raft entry's records at ``offset``; returns the delta.

        ``committed=False`` is for the active controller's own entries, right
        after proposing them; ``commit()`` confirms them later.
        """
        if committed and self._pending:
            raise ValueError("committed entries replayed while own entries are pending; resign() first")
        delta = MetadataDelta(self._image)
        delta.replay_batch(offset, records)
        self._image = delta.apply()
        if committed:
            self._committed = self._image
        else:
            self._pending.append((offset, self._image))
        return delta

    def replay(self, offset: int, record: MetadataRecord, committed: bool = True) -> MetadataDelta:
        return self.replay_batch(offset, [record], committed)

    def commit(self, offset: int) -> None:
        """Raft committed everything up to ``offset``."""
        while self._pending and self._pending[0][0] <= offset:
            _, self._committed = self._pending.pop(0)

    def resign(self) -> None:
        """No longer active: forget uncommitted own entries and session clocks."""
        self._pending.clear()
        self._image = self._committed
        self.sessions.clear()
        self.replica_logs.clear()

    def activate(self) -> None:
        """Became active (after the step-1 barrier): session clocks start at the first tick."""
        self.sessions.clear()
        self.replica_logs.clear()

    def reset(self, image: MetadataImage) -> None:
        """Adopt ``image`` (a snapshot was installed)."""
        self._pending.clear()
        self._committed = self._image = image

    # -- brokers --

    def register_broker(
        self,
        broker_id: int,
        incarnation_id: str,
        host: str,
        port: int,
        rack: str = "",
        *,
        now_ms: int,
        clean_shutdown: bool = True,
        replica_logs: Mapping[TopicIdPartition, LogEnd] | None = None,
        endpoints: Sequence[Endpoint] = (),
    ) -> ControllerResult[RegisterBrokerResponse]:
        """``clean_shutdown``: the broker's previous process shut down cleanly (false: it may have lost
        its unsynced tail); ``replica_logs``: (latest epoch, log end) of each local replica."""
        return brokers.register(
            self._image,
            self.sessions,
            self.replica_logs,
            broker_id,
            incarnation_id,
            host,
            port,
            rack,
            now_ms,
            clean_shutdown=clean_shutdown,
            replica_logs=replica_logs or {},
            min_isr=self._min_isr,
            endpoints=endpoints,
        )

    def broker_heartbeat(
        self,
        broker_id: int,
        broker_epoch: int,
        metadata_offset: int,
        *,
        now_ms: int,
        replica_logs: Mapping[TopicIdPartition, LogEnd] | None = None,
    ) -> ControllerResult[HeartbeatResponse]:
        return brokers.heartbeat(
            self._image,
            self.sessions,
            self.replica_logs,
            broker_id,
            broker_epoch,
            metadata_offset,
            now_ms,
            replica_logs=replica_logs or {},
            min_isr=self._min_isr,
        )

    def tick(self, now_ms: int) -> ControllerResult[TickResponse]:
        """Fence brokers whose session expired; elect leaders for recovering partitions; on a tick that
        does neither, complete the reassignments that may complete (reassignment.py). Call it every few
        hundred ms."""
        result = brokers.tick(self._image, self.sessions, self.replica_logs, now_ms, min_isr=self._min_isr)
        if result.records:
            return result
        return ControllerResult(reassignment.completions(self._image, self._min_isr), result.response)

    def silent_brokers(self, now_ms: int) -> list[tuple[int, int, str, int]]:
        """(id, epoch, host, port) of each unfenced broker silent for more than
        ``broker_liveness_probe_ms``: whom the driver should probe (0 disables probing)."""
        after = self.config.broker_liveness_probe_ms
        if after <= 0:
            return []
        return self.probe_targets(self.sessions.silent(self._image.usable_broker_ids, now_ms, after))

    def probe_targets(self, broker_ids: Iterable[int]) -> list[tuple[int, int, str, int]]:
        """(id, epoch, host, port) of each of ``broker_ids`` that is registered and unfenced: the
        brokers another broker reported unreachable that are worth a probe now (0 disables probing)."""
        if self.config.broker_liveness_probe_ms <= 0:
            return []
        out = []
        for broker_id in sorted(set(broker_ids)):
            b = self._image.brokers.get(broker_id)
            if b is not None and b.usable:
                out.append((broker_id, b.epoch, b.host, b.port))
        return out

    def fence_unreachable(
        self, broker_id: int, broker_epoch: int, now_ms: int, silent_ms: int | None = None
    ) -> ControllerResult[TickResponse]:
        """Fence a silent broker whose listener refused a connection (brokers.py): silent for more
        than ``broker_liveness_probe_ms``, or for ``silent_ms`` when given (a reported broker: not
        heard from since its probe began)."""
        return brokers.fence_unreachable(
            self._image,
            self.sessions,
            broker_id,
            broker_epoch,
            now_ms,
            silent_ms=self.config.broker_liveness_probe_ms if silent_ms is None else silent_ms,
            min_isr=self._min_isr,
        )

    def shutdown_broker(self, broker_id: int, broker_epoch: int) -> ControllerResult[ShutdownResponse]:
        return brokers.shutdown(self._image, self.sessions, broker_id, broker_epoch, min_isr=self._min_isr)

    def allocate_producer_ids(self, broker_id: int, broker_epoch: int) -> ControllerResult[ProducerIdsBlock]:
        """The next block of producer ids for a broker (producer_ids.py)."""
        return producer_ids.allocate(self._image, broker_id, broker_epoch)

    def no_op(self, controller_id: int) -> ControllerResult[None]:
        """A record that only marks the active controller's arrival in the log."""
        return ControllerResult([rec.no_op(controller_id)], None)

    # -- topics and partitions --

    def create_topic(
        self,
        name: str,
        partitions: int,
        replication_factor: int,
        configs: Mapping[str, str] | None = None,
        *,
        topic_id: str,
        start_index: int,
    ) -> ControllerResult[CreateTopicResponse]:
        return topics.create_topic(
            self._image,
            name,
            partitions,
            replication_factor,
            configs or {},
            topic_id,
            start_index,
            self.config.max_request_bytes,
        )

    def create_partitions(
        self, name: str, total: int, validate_only: bool = False
    ) -> ControllerResult[CreatePartitionsResponse]:
        """Grow topic ``name`` to ``total`` partitions, placed like creation (topics.py)."""
        return topics.create_partitions(self._image, name, total, validate_only)

    def delete_topic(self, name: str) -> ControllerResult[DeleteTopicResponse]:
        return topics.delete_topic(self._image, name)

    def alter_partition(
        self,
        broker_id: int,
        broker_epoch: int,
        topic_id: str,
        partition: int,
        *,
        leader_epoch: int,
        partition_epoch: int,
        new_isr: Sequence[int],
        isr_broker_epochs: Mapping[int, int] | None = None,
    ) -> ControllerResult[AlterPartitionResponse]:
        result = topics.alter_partition(
            self._image,
            broker_id,
            broker_epoch,
            topic_id,
            partition,
            leader_epoch,
            partition_epoch,
            new_isr,
            isr_broker_epochs,
            self._min_isr,
        )
        return reassignment.with_completion(self._image, result, self._min_isr)

    def elect_preferred_leaders(
        self, partitions: Iterable[tuple[str, int]] | None = None
    ) -> ControllerResult[ElectLeadersResponse]:
        return topics.elect_preferred_leaders(self._image, partitions, self._min_isr)

    # -- configs --

    def incremental_alter_configs(
        self, resources: Sequence[AlterConfigsResource], validate_only: bool = False
    ) -> ControllerResult[AlterConfigsResponse]:
        """Set or delete topic and dynamic broker configs; a result per resource (configs.py)."""
        return configs.incremental_alter(
            self._image,
            resources,
            validate_only,
            max_request_bytes=self.config.max_request_bytes,
            static_min_isr=self.config.min_insync_replicas,
        )

    # -- ACLs --

    def create_acls(
        self, creations: Sequence[AclBinding], ids: Sequence[str]
    ) -> ControllerResult[list[tuple[ErrorCode, str]]]:
        """Store the valid new ACLs under fresh ``ids``; a result per creation (security_changes.py)."""
        return security_changes.create(self._image.acls, creations, ids)

    def delete_acls(self, filters: Sequence[AclBinding]) -> ControllerResult[list[list[AclBinding]]]:
        """Remove every ACL a filter matches; per filter, what it removed (security_changes.py)."""
        return security_changes.delete(self._image.acls, filters)

    def alter_scram_credentials(
        self, deletions: Sequence[tuple[str, str]], upsertions: Sequence[ScramCredential]
    ) -> ControllerResult[list[tuple[str, ErrorCode, str]]]:
        """Delete and set users' SCRAM credentials; a result each (security_changes.py)."""
        return security_changes.alter_scram(self._image.scram_credentials, deletions, upsertions)

    # -- reassignments --

    def alter_partition_reassignments(
        self, reassignments: Iterable[Reassignment]
    ) -> ControllerResult[ReassignmentsResponse]:
        """Start, replace (a target list) or cancel (None) partition moves (reassignment.py)."""
        return reassignment.alter(self._image, reassignments, self._min_isr)
