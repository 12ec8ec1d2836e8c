"""Consumer groups: the group coordinator's pure state machine (Kafka's classic group protocol).

Why here. In Kafka the group coordinator is not the controller: it runs on
whichever broker leads the group's partition of the internal offsets topic,
and its durable state is that partition's log (offset commits and group
metadata, compacted by key). It still belongs in ``coordinator/`` next to the
metadata state machine because it is the same kind of thing — a coordination
state machine written as a pure core (inputs and ``now_ms`` in; responses,
records and completed waits out) — and because ``node/`` should only wire it
to the offsets partition and gRPC, as it wires the controller to Raft. It
imports nothing from ``node`` or ``replication`` and no asyncio, grpc,
clock, randomness or I/O.

Modules, each with its rules in its docstring:

- coordinator.py — ``GroupCoordinator``: the API a driver calls, and the driver's contract.
- membership.py  — JoinGroup, SyncGroup, Heartbeat, LeaveGroup, session/sync/rebalance timeouts.
- offsets.py     — OffsetCommit fencing (generation, member id), OffsetFetch, reset.
- txn_offsets.py — TxnOffsetCommit: offsets pending for a producer until its transaction marker.
- admin.py       — list, describe, delete groups.
- state.py       — ``Group``, ``Member``, ``GroupState``, the table of allowed transitions, invariants.
- records.py     — offsets-log records (offset commit, group metadata, tombstones) ↔ bytes.
- replay.py      — rebuild every group from those records (and transaction markers) after a failover.
- results.py     — responses, ``GroupResult``, ``GroupConfig``.

Errors are ``ketch.errors.ErrorCode`` values (Kafka's numbers). The partition
assignors run on the client (ketch/assignors), as in Kafka.
"""

from coordinator.groups.coordinator import GroupCoordinator, offsets_partition
from coordinator.groups.records import (
    NO_OFFSET,
    CommittedOffset,
    GroupMetadataKey,
    GroupMetadataValue,
    GroupRecord,
    MemberMetadata,
    OffsetCommitKey,
    decode_record,
    encode_record,
)
from coordinator.groups.replay import LogEntry, TransactionalRecord, TransactionMarker
from coordinator.groups.results import (
    AdminResponse,
    CommitResponse,
    FetchResponse,
    GroupConfig,
    GroupDescription,
    GroupListing,
    GroupResult,
    HeartbeatResponse,
    JoinResponse,
    LeaveResponse,
    MemberDescription,
    OffsetCommit,
    Reply,
    SyncResponse,
    TickReport,
)
from coordinator.groups.state import Group, GroupState, Member

__all__ = [
    "NO_OFFSET",
    "AdminResponse",
    "CommitResponse",
    "CommittedOffset",
    "FetchResponse",
    "Group",
    "GroupConfig",
    "GroupCoordinator",
    "GroupDescription",
    "GroupListing",
    "GroupMetadataKey",
    "GroupMetadataValue",
    "GroupRecord",
    "GroupResult",
    "GroupState",
    "HeartbeatResponse",
    "JoinResponse",
    "LeaveResponse",
    "LogEntry",
    "Member",
    "MemberDescription",
    "MemberMetadata",
    "OffsetCommit",
    "OffsetCommitKey",
    "Reply",
    "SyncResponse",
    "TickReport",
    "TransactionMarker",
    "TransactionalRecord",
    "decode_record",
    "encode_record",
    "offsets_partition",
]
