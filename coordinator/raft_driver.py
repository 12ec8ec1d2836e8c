"""RaftDriver: the asyncio driver of one controller's ``RaftNode`` (clock, disk, network).

The core (coordinator/raft/) is pure; this module does its I/O, in the order the
Ready contract (coordinator/raft/ready.py) fixes. One driver per controller node:

    ticker task ----tick()----+
    Step handler ---step()----+--> RaftNode --ready()--> loop task:
    propose/read_index -------+        1. persist (RaftStorage, one WriteBatch;
                                          fsync in a worker thread when must_sync)
                                       2. send (per-peer queues, raft_transport.py)
                                       .  soft state -> StateMachine.on_soft_state
                                       3. apply committed entries -> StateMachine.apply
                                       4. answer read states
                                       5. advance; then maybe compact

Rules:
- ONE loop task handles Readys, one at a time, each completely, in order: no
  Ready is handled twice or out of order, and nothing is sent before the write
  it depends on is durable. While an fsync runs, ticks, inbound messages and
  proposals keep stepping the core on the event loop (the contract allows it);
  their effects form the next Ready, so one fsync covers everything that
  arrived meanwhile (group commit). The core is only touched from the event loop.
- Soft state (leader, role) and term are reported to the state machine when they
  change, BEFORE that Ready's committed entries are applied: a deposed leader
  learns it before it applies its successor's entries.
- The state machine is in memory: at ``start`` it is restored from the stored
  snapshot (if any) and the core hands out every committed entry after it again,
  NOOPs included, in order, exactly once per driver. A snapshot received from the
  leader is stored (step 1), then ``restore`` is called, before the entries after it.
- Compaction: once ``snapshot_every`` entries were applied past the last snapshot,
  ``StateMachine.snapshot()`` gives ``(applied index, data)``, the core compacts its
  log to it, and storage stores the snapshot and drops the entries it covers (one
  synced write, in the loop task, between Readys). A follower that needs dropped
  entries gets the snapshot instead.
- ``propose`` resolves with the entry's index once that entry is applied here. If
  another entry is applied at that index, or this node stops leading the term it
  proposed in before that, it raises ``NotLeader`` (with the leader known now):
  the outcome is then unknown (a deposed leader's entry may still commit under its
  successor), as with Kafka's NOT_CONTROLLER, and the caller retries at the leader.
- ``read_index`` is a linearizable read barrier (ReadIndex, no lease; leader.py says
  why): it returns an index once the leader confirmed its leadership with a quorum
  after the read arrived, and this node applied up to that index; on a follower the
  request is forwarded to the leader. A change of leader or term fails pending
  reads with ``NotLeader`` (raft_waiters.py); otherwise they time out
  (``TimeoutError``).
- Failure: an exception from storage, the state machine or a core invariant is
  fatal. It is logged, kept in ``error``, passed to ``on_fatal``, every waiter
  fails with ``RaftStopped``, and the driver stops handling input; the node should
  exit (restart recovers from what was made durable). ``stop()`` also fails
  waiters with ``RaftStopped``, a ``NotLeader`` with no known leader, so callers
  retry elsewhere. A voter whose store was lost is refused this way (the core
  asserts on a commit index beyond its empty log, as etcd panics): rejoining with
  amnesia could vote twice in a term; it needs a membership change.
- Time and randomness: the driver uses the event loop's monotonic clock for ticks. A tick
  late by whole ticks makes up at most ``CATCH_UP_TICKS`` (a busy loop's tens of ms must not
  stretch a 300 ms election timeout); missed ticks after a longer stall are skipped, never
  replayed in a burst, which would fire elections. It seeds the core's election jitter from ``os.urandom``
  unless a seed is given (tests).

Membership (KIP-853; coordinator/raft/membership.py has the rules):
- The replica's directory id comes from its storage (created with an empty
  store), so a controller restarted on a wiped disk is a new replica: it starts
  as an observer and, with ``auto_join``, the leader replaces its old self.
- ``voters`` is the static address book (controller_quorum_voters); the
  transport's ``PeerBook`` adds the voter set's and the peers' own addresses
  (raft_transport.py).
- ``add_voter``/``remove_voter`` propose a CONF entry and resolve, like
  ``propose``, once it is applied here (committed).

Metrics: ``status()`` (term, commit, applied, leader, role, per-follower match),
``leader_changes``, ``compactions``, ``storage.syncs`` and ``peer_stats()``.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import struct
from collections.abc import Callable, Mapping
from typing import Protocol

import grpc

from coordinator.raft import (
    NONE,
    Config,
    Entry,
    Message,
    NotLeader,
    RaftNode,
    Ready,
    Role,
    Snapshot,
    SoftState,
    Status,
)
from coordinator.raft.membership import ChangeNotReady, find
from coordinator.raft_storage import RaftStorage
from coordinator.raft_transport import PeerBook, RaftServicer
from coordinator.raft_waiters import Waiters
from ketch.api.v1 import raft_pb2_grpc
from ketch.tls import PLAINTEXT, SecurityConfig

log = logging.getLogger("ketch.raft")
CATCH_UP_TICKS = 2  # the most late ticks one wake-up makes up (see "Time and randomness")


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> None:
        """A committed entry, in log order; NOOP entries included (they change nothing)."""

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole state with ``snapshot.data`` (state at ``snapshot.index``)."""

    def snapshot(self) -> tuple[int, bytes]:
        """``(applied index, data)``: the current state, for log compaction."""

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        """The known leader, this node's role or the term changed."""


class RaftStopped(NotLeader):
    """The driver was stopped or failed; retry elsewhere (or after a restart)."""

    def __init__(self, why: str = "raft driver stopped") -> None:
        super().__init__(NONE)
        self.args = (why,)


class _State(enum.Enum):
    NEW = 0
    RUNNING = 1
    FAILED = 2
    STOPPED = 3


_U64 = struct.Struct(">Q")


class RaftDriver:
    def __init__(
        self,
        node_id: int,
        voters: Mapping[int, str],
        storage: RaftStorage,
        state_machine: StateMachine,
        *,
        tick_ms: int = 50,
        election_ticks: int = 10,
        heartbeat_ticks: int = 2,
        snapshot_every: int = 1000,
        seed: int | None = None,
        pre_vote: bool = True,
        check_quorum: bool = True,
        max_entries_per_msg: int = 64,
        max_inflight_msgs: int = 256,
        rpc_timeout_s: float = 5.0,
        backoff_s: float = 0.05,
        max_backoff_s: float = 1.0,
        address: str = "",
        auto_join: bool = False,
        on_fatal: Callable[[BaseException], None] | None = None,
        security: SecurityConfig = PLAINTEXT,
    ) -> None:
        if snapshot_every < 1 or tick_ms < 1:
            raise ValueError("snapshot_every and tick_ms must be >= 1")
        self.id = node_id
        self.voters = dict(voters)
        self.address = address or self.voters.get(node_id, "")
        self.storage = storage
        self.state_machine = state_machine
        self.tick_s = tick_ms / 1000
        self.snapshot_every = snapshot_every
        self.config = Config(
            id=node_id,
            voters=tuple(sorted(self.voters)),
            election_timeout_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            max_entries_per_msg=max_entries_per_msg,
            max_inflight_msgs=max_inflight_msgs,
            pre_vote=pre_vote,
            check_quorum=check_quorum,
            # Followers campaign after 1-2 election timeouts; the leader gives up after two without a
            # quorum (raft/leader.py), so a short timeout costs no step-down when a follower stalls.
            check_quorum_ticks=2 * election_ticks,
            seed=int.from_bytes(os.urandom(8), "big") if seed is None else seed,
            directory=storage.directory_id(),
            auto_join=auto_join,
        )
        persisted = storage.load()
        self._core = RaftNode(self.config, persisted)
        self._stored_snapshot: Snapshot | None = persisted.snapshot if persisted.snapshot.index else None
        self._applied = persisted.snapshot.index
        self._compact_from = self._applied
        self._soft = SoftState()
        self._soft_term = persisted.hard_state.term
        self._state = _State.NEW
        self._peers = PeerBook(
            node_id,
            self.address,
            self.voters,
            self._voter_address,
            rpc_timeout_s=rpc_timeout_s,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            security=security,
        )
        self.servicer = RaftServicer(self._deliver)
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._waiters = Waiters()
        self._seq = itertools.count()
        self._read_prefix = _U64.pack(node_id) + os.urandom(8)
        self.error: BaseException | None = None
        self.on_fatal = on_fatal
        self.leader_changes = 0
        self.compactions = 0

    # -- lifecycle -----------------------------------------------------------------------

    def add_to_server(self, server: grpc.aio.Server) -> None:
        """Serve KetchRaft on the node's gRPC server (before it starts; see ``server_options``)."""
        raft_pb2_grpc.add_KetchRaftServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        if self._state != _State.NEW:
            raise RuntimeError("a RaftDriver starts once")
        if self._stored_snapshot is not None:
            self.state_machine.restore(self._stored_snapshot)
            self._stored_snapshot = None
        self._state = _State.RUNNING
        self._peers.start()
        self._loop_task = asyncio.create_task(self._run(), name=f"raft-loop-{self.id}")
        self._tick_task = asyncio.create_task(self._tick_loop(), name=f"raft-tick-{self.id}")
        self._wake.set()

    async def stop(self) -> None:
        """Stop ticking, sending and handling Readys; the storage stays open (its owner closes it)."""
        if self._state == _State.STOPPED:
            return
        self._state = _State.STOPPED
        self._wake.set()
        if self._tick_task is not None:
            self._tick_task.cancel()
            await asyncio.gather(self._tick_task, return_exceptions=True)
        if self._loop_task is not None:
            await self._loop_task  # finishes the Ready in hand (and its fsync), then exits
        await self._peers.stop()
        self._waiters.fail_all(RaftStopped())

    # -- API -----------------------------------------------------------------------------

    def propose_nowait(self, data: bytes) -> int:
        """Append ``data`` (leader only, else ``NotLeader``); returns its index without waiting."""
        self._check_running()
        index = self._core.propose(data)
        self._wake.set()
        return index

    async def propose(self, data: bytes, timeout_s: float | None = None) -> int:
        """Append ``data`` and wait until it is applied here; returns its index (module rules)."""
        index = self.propose_nowait(data)
        fut = self._waiters.proposal(index, self._core.term, self._core.leader)
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._waiters.forget_proposal(index, fut)

    async def wait_applied(self, index: int, timeout_s: float | None) -> None:
        """Return once the state machine applied ``index``; ``TimeoutError`` after ``timeout_s``."""
        async with asyncio.timeout(timeout_s):
            await self._applied_to(index)

    async def read_index(self, timeout_s: float | None) -> int:
        """A linearizable read barrier: the confirmed read index, applied here (module rules)."""
        self._check_running()
        context = self._read_prefix + _U64.pack(next(self._seq))
        self._core.read_index(context)  # NotLeader when no leader is known
        fut = self._waiters.read(context, self._core.leader, self._core.term)
        self._wake.set()
        try:
            async with asyncio.timeout(timeout_s):
                index = await fut
                await self._applied_to(index)
        finally:
            self._waiters.forget_read(context)
        return index

    async def add_voter(self, node_id: int, address: str = "", timeout_s: float = 10.0) -> int:
        """Make observer ``node_id`` a voter once it caught up; returns the CONF index once applied here.

        ``ChangeNotReady`` refusals (a change pending, not caught up yet) are retried
        until ``timeout_s``; the last one is raised then. Other refusals raise at once.
        """
        return await self._change(
            lambda: self._core.add_voter(node_id, address or self._peers.address_of(node_id)), timeout_s
        )

    async def remove_voter(self, node_id: int, timeout_s: float = 10.0) -> int:
        """Remove voter ``node_id``; returns the CONF index once applied here (retries as ``add_voter``)."""
        return await self._change(lambda: self._core.remove_voter(node_id), timeout_s)

    async def _change(self, propose: Callable[[], int], timeout_s: float) -> int:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            self._check_running()
            try:
                index = propose()
                break
            except ChangeNotReady:
                if loop.time() + self.tick_s > deadline:
                    raise
                await asyncio.sleep(self.tick_s)
        self._wake.set()
        fut = self._waiters.proposal(index, self._core.term, self._core.leader)
        try:
            return await asyncio.wait_for(fut, max(deadline - loop.time(), self.tick_s))
        finally:
            self._waiters.forget_proposal(index, fut)

    def address_of(self, node_id: int) -> str:
        """Where this node reaches controller ``node_id`` ("" if it does not know)."""
        return self._peers.address_of(node_id)

    def _voter_address(self, node_id: int) -> str:
        voter = find(self._core.voters, node_id)
        return voter.address if voter is not None else ""

    def transfer_leadership(self, to: int) -> None:
        self._check_running()
        self._core.transfer_leadership(to)
        self._wake.set()

    def status(self) -> Status:
        return self._core.status()

    def last_index(self) -> int:
        return self._core.log.last_index

    @property
    def leader_id(self) -> int:
        return self._core.leader

    @property
    def term(self) -> int:
        return self._core.term

    @property
    def is_leader(self) -> bool:
        return self._core.role == Role.LEADER

    @property
    def commit_index(self) -> int:
        return self._core.log.committed

    @property
    def applied_index(self) -> int:
        return self._applied

    @property
    def running(self) -> bool:
        return self._state == _State.RUNNING

    def peer_stats(self) -> dict[int, dict[str, int]]:
        return {
            pid: {"sent_batches": p.sent_batches, "failed_batches": p.failed_batches, "dropped": p.dropped}
            for pid, p in self._peers.peers.items()
        }

    # -- inputs --------------------------------------------------------------------------

    def _deliver(self, messages: list[Message], sender: int = NONE, sender_address: str = "") -> None:
        if self._state != _State.RUNNING:
            return
        self._peers.learn(sender, sender_address)
        try:
            for m in messages:
                self._core.step(m)
        except Exception as exc:
            self._fatal(exc)
            return
        self._wake.set()

    async def _tick_loop(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self._state == _State.RUNNING:
            next_at += self.tick_s
            delay = next_at - loop.time()
            if delay < 0:
                next_at -= delay
                delay = 0
            await asyncio.sleep(delay)
            if self._state != _State.RUNNING:
                return
            late = int((loop.time() - next_at) / self.tick_s)
            ticks = 1 + min(late, CATCH_UP_TICKS)
            next_at += (ticks - 1) * self.tick_s
            try:
                for _ in range(ticks):
                    self._core.tick()
            except Exception as exc:
                self._fatal(exc)
                return
            self._wake.set()

    # -- the Ready loop ------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._state == _State.RUNNING:
                await self._wake.wait()
                self._wake.clear()
                while self._state == _State.RUNNING:
                    rd = self._core.ready()
                    if rd is None:
                        break
                    await self._handle(rd)
                    await self._maybe_compact()
        except Exception as exc:
            self._fatal(exc)

    async def _handle(self, rd: Ready) -> None:
        # 1. persist (atomic; synced off the event loop when it must be)
        if rd.must_sync:
            await asyncio.to_thread(self.storage.persist, rd)
        else:
            self.storage.persist(rd)
        if rd.snapshot is not None:
            self.state_machine.restore(rd.snapshot)
            self._applied = self._compact_from = rd.snapshot.index
        # 2. send
        for m in rd.messages:
            peer = self._peers.get(m.to)
            if peer is not None:
                peer.send(m)
        term = rd.hard_state.term if rd.hard_state is not None else self._soft_term
        if rd.soft_state != self._soft or term != self._soft_term:
            if rd.soft_state.leader != self._soft.leader:
                self.leader_changes += 1
            self._soft, self._soft_term = rd.soft_state, term
            self.state_machine.on_soft_state(rd.soft_state, term)
        # 3. apply
        for e in rd.committed_entries:
            self.state_machine.apply(e)
            self._applied = e.index
            self._waiters.entry_applied(e, self._core.leader)
        # 4. reads
        for rs in rd.read_states:
            self._waiters.read_state(rs)
        # 5. advance
        self._core.advance(rd)
        core = self._core
        self._waiters.release_applied(self._applied)
        self._waiters.leadership(core.role == Role.LEADER, core.term, core.leader)
        self._waiters.reads_leader(core.leader, core.term)

    async def _maybe_compact(self) -> None:
        offset = self._core.log.offset
        if self._applied < max(offset, self._compact_from) + self.snapshot_every:
            return
        self._compact_from = self._applied
        index, data = self.state_machine.snapshot()
        if index <= offset:
            return
        try:
            snap = self._core.compact(index, data)
        except ValueError as exc:
            log.warning("raft node %d: compaction at %d skipped: %s", self.id, index, exc)
            return
        await asyncio.to_thread(self.storage.compact, snap)
        self.compactions += 1

    # -- waiters -------------------------------------------------------------------------

    async def _applied_to(self, index: int) -> None:
        if self._applied < index:
            self._check_running()
            await self._waiters.applied(index)

    def _fatal(self, exc: BaseException) -> None:
        log.error("raft node %d failed; it stops handling input", self.id, exc_info=exc)
        if self.error is None:
            self.error = exc
        self._state = _State.FAILED
        self._wake.set()
        stopped = RaftStopped(f"raft driver failed: {exc!r}")
        stopped.__cause__ = exc
        self._waiters.fail_all(stopped)
        if self.on_fatal is not None:
            self.on_fatal(exc)

    def _check_running(self) -> None:
        if self._state != _State.RUNNING:
            raise RaftStopped("raft driver failed" if self.error is not None else "raft driver not running")
