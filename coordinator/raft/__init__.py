"""The controller quorum's Raft consensus core: a pure state machine, driven from outside.

Modules, each with its own rules in its docstring:

- ``messages``: wire and storage values (``Message``, ``Entry``, ``HardState``, ``Snapshot``).
- ``config``: ``Config``, ``Role``, the errors, the deterministic election-timeout PRNG.
- ``log``: ``RaftLog``, the in-memory log (snapshot offset, stable and unstable entries).
- ``membership``: voters, observers, directory ids and single-server membership changes.
- ``progress``: the leader's per-follower flow control (probe, replicate, snapshot).
- ``leader``: replication, commit, check quorum, ReadIndex, leadership transfer.
- ``core``: ``RaftNode``, the inputs (tick, step, propose, ...) and ``ready``/``advance``.
- ``ready``: ``Ready`` and the persist → send → apply contract every driver must keep.
- ``storage``: the contract's persist step, written once (``Storage``), and
  ``MemoryStorage``, the in-memory storage of the simulation and the tests.
- ``rafttest``: the transcript harness (tests/raft_transcripts/*.txt), as etcd ships
  rafttest/.

The package imports no asyncio, grpc, rocksdict, time, random, threading or I/O: the
same code runs under the production driver and inside the seeded simulation
(tests/raft_sim.py), where a whole quorum lives in one process on a simulated clock.
Design model: etcd-io/raft (RawNode, Ready, Progress); this is an independent
implementation of the same protocol, with KIP-853's single-server membership changes.
"""

from coordinator.raft.config import Config, NotLeader, RaftError, Role, TransferInProgress
from coordinator.raft.core import RaftNode
from coordinator.raft.membership import MembershipChangeRefused
from coordinator.raft.messages import (
    EMPTY_HARD_STATE,
    EMPTY_SNAPSHOT,
    JOIN_CONTEXT,
    NONE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    Snapshot,
    Voter,
    describe_entry,
    describe_message,
)
from coordinator.raft.ready import PersistedState, ReadState, Ready, SoftState, Status

__all__ = [
    "EMPTY_HARD_STATE",
    "EMPTY_SNAPSHOT",
    "JOIN_CONTEXT",
    "NONE",
    "Config",
    "Entry",
    "EntryKind",
    "HardState",
    "MembershipChangeRefused",
    "Message",
    "MessageType",
    "NotLeader",
    "PersistedState",
    "RaftError",
    "RaftNode",
    "ReadState",
    "Ready",
    "Role",
    "Snapshot",
    "SoftState",
    "Status",
    "TransferInProgress",
    "Voter",
    "describe_entry",
    "describe_message",
]
