"""The cluster metadata state machine of the controller quorum (KRaft's, KIP-631).

Pure code: no asyncio, grpc, RocksDB, clock, randomness or I/O. Time comes
in as ``now_ms``; topic ids and placement start indexes come in as
arguments; what comes out is records and responses. The Raft core and its
driver (coordinator/raft) carry the records; this package decides them and
applies them.

The pieces, each a module with its own rules in its docstring:

- records.py    — record constructors; one Raft entry = one ``MetadataBatch``.
- image.py      — ``MetadataImage``: immutable brokers/topics/partitions at an offset.
- delta.py      — ``MetadataDelta``: replay records over an image, ``apply()`` the next one.
                  The only code that changes metadata state, run by every node.
- local.py      — ``local_changes``: what one broker must lead, follow or delete.
- controller.py — ``Controller``: commands → ``ControllerResult(records, response)``,
                  replay/commit/resign, and the driver's contract.
- brokers.py    — register, heartbeat, session expiry, controlled shutdown.
- sessions.py   — in-memory broker session clocks (not replicated).
- topics.py     — create/delete topics, add partitions, AlterPartition, preferred election.
- reassignment.py — partition moves (KIP-455): start, replace, cancel, complete.
- topic_config.py — topic name and config rules; one constant per config key.
- configs.py    — incrementally altered topic and dynamic broker configs, their sources.
- placement.py  — round-robin, rack-aware replica assignment.
- producer_ids.py — blocks of producer ids for brokers (KIP-730).
- election.py   — leader election from the ISR, unclean opt-in, epochs.
- snapshot.py   — image ↔ records ↔ bytes for Raft snapshots.

Invariants held after every replayed batch (and checked by the tests):
replicas of a partition are distinct brokers; its ISR is a non-empty subset
of them; its leader is an ISR member and an unfenced broker, or -1 when no
ISR member can lead; an online partition's ISR holds only unfenced brokers;
leader and partition epochs never decrease; a broker epoch is the offset of
its registration record.
"""

from coordinator.metadata.controller import Controller
from coordinator.metadata.delta import MetadataDelta, MetadataReplayError, replay_batch
from coordinator.metadata.election import Election
from coordinator.metadata.image import (
    BrokerRegistration,
    MetadataImage,
    PartitionRegistration,
    TopicImage,
)
from coordinator.metadata.local import LocalPartition, LocalReplicaChanges, local_changes
from coordinator.metadata.records import (
    NO_LEADER,
    MetadataRecord,
    TopicIdPartition,
    decode_batch,
    encode_batch,
)
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
from coordinator.metadata.snapshot import decode_snapshot, encode_snapshot, image_from_records, image_to_records

__all__ = [
    "NO_LEADER",
    "AlterPartitionResponse",
    "BrokerRegistration",
    "Controller",
    "ControllerConfig",
    "ControllerResult",
    "CreatePartitionsResponse",
    "CreateTopicResponse",
    "DeleteTopicResponse",
    "ElectLeadersResponse",
    "Election",
    "HeartbeatResponse",
    "LocalPartition",
    "LocalReplicaChanges",
    "MetadataDelta",
    "MetadataImage",
    "MetadataRecord",
    "MetadataReplayError",
    "PartitionRegistration",
    "RegisterBrokerResponse",
    "ShutdownResponse",
    "TickResponse",
    "TopicIdPartition",
    "TopicImage",
    "decode_batch",
    "decode_snapshot",
    "encode_batch",
    "encode_snapshot",
    "image_from_records",
    "image_to_records",
    "local_changes",
    "replay_batch",
]
