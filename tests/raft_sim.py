"""Deterministic simulation of a Raft controller quorum built on the pure core.

One seed fixes everything: cluster size, fault rates, the scheduler's choices, every
node's election jitter. A run is a discrete-event simulation on a millisecond clock:

- Each node ticks every ``TICK_MS`` (with its own phase). The driver of each node keeps
  the Ready contract: it takes a Ready, "fsyncs" it for 0..``fsync_max_ms`` ms, and only
  then makes it durable, sends its messages and applies its committed entries. Its disk
  is a ``MemoryStorage`` (coordinator/raft/storage.py), so it persists exactly as the
  real RocksDB storage does. A crash loses the node's memory, its state machine and any
  Ready not yet durable; the node restarts from exactly its disk's ``load()``.
- The network drops, duplicates and delays (hence reorders) messages, and partitions
  the nodes into two sides for a while.
- Clients propose entries to whoever they think leads, and issue ReadIndex reads.
- Each node's state machine folds applied entries into a CRC chain; snapshots carry the
  chain value, and nodes compact their logs every ``compact_every`` applied entries.
- Membership (half the seeds; the rules they respect are in tests/raft_sim_membership.py):
  every replica has a directory id and the bootstrap voters auto-join. A *wipe* crashes
  a node and restarts it with an EMPTY disk and a new directory id, at a random moment
  or right after it granted a vote (its vote is gone with its disk), and only when every
  voter set that may come into force binds its id; it must come back as a voter
  through auto-join. An operator removes a voter or adds a replica back at the leader
  (refusals are fine), and up to two extra nodes start as observers to be added.

After every event the checker asserts:
- election safety: at most one leader per term over the whole run;
- leader completeness: a node that becomes leader holds every entry known committed;
- committed entries never change: every node's log up to its commit index agrees with
  one global history of (index -> entry), and commit indexes never decrease except by
  a restart (which restores the persisted one). A node's commit index counts where it
  durably holds the entries: a set of one voter commits in memory before its fsync, and
  a crash then loses what nobody saw (it is applied only after the fsync);
- a new leader may campaign under its own voter set (``RaftNode.electable``: a voter,
  or a leader finishing its own removal);
- state machine safety: every node applies the same sequence (entry by entry, and
  the CRC chain after each index, snapshots included);
- ReadIndex linearizability: a read's index is at least every commit index any node
  knew when the read was issued.
At the end it heals the network, restarts every node and requires liveness within
``LIVENESS_MS``: a leader is elected, every wiped replica is a voter again (by
auto-join; one restarted between auto-join's two changes is added back by the operator,
as membership.py prescribes), and a fresh proposal is applied on every voter of the
newest leader's set (the voter set is not fixed: observers and removed nodes need not
apply it).

``broken`` switches on a deliberately wrong driver (the control runs that prove the
checker can fail): ``forget_vote`` loses the vote on restart, ``ack_before_persist``
sends a Ready's messages before its entries and vote are durable, ``ignore_directory``
makes a wiped node vote as its old self (the network hands it the vote requests meant
for its former directory and its answers name that directory) until it rejoins.
"""

from __future__ import annotations

import heapq
import random
import traceback
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from coordinator.raft import (
    NONE,
    Config,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    NotLeader,
    RaftError,
    RaftNode,
    Ready,
    Role,
    Snapshot,
    describe_message,
)
from coordinator.raft.membership import bootstrap_voters
from coordinator.raft.storage import MemoryStorage
from tests.raft_sim_membership import MembershipFaults

TICK_MS = 10
LIVENESS_MS = 5_000
MEMBERSHIP_SHARE = 0.5
"""The share of seeds with directory ids, wipes, operator changes and extra observers."""
BROKEN_VARIANTS = ("forget_vote", "ack_before_persist", "ignore_directory")
_VOTE_REQUESTS = (MessageType.VOTE, MessageType.PRE_VOTE)
_VOTE_RESPONSES = (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP)


class SimFailure(AssertionError):
    """An invariant broke; the message names the seed and how to replay it."""


@dataclass(frozen=True)
class SimParams:
    seed: int
    nodes: int
    drop: float
    duplicate: float
    max_delay_ms: int
    fsync_max_ms: int
    crash_rate: float
    crash_after_sync: float
    max_downtime_ms: int
    partition_rate: float
    propose_rate: float
    read_rate: float
    transfer_rate: float
    compact_every: int
    heartbeat_ticks: int
    pre_vote: bool
    check_quorum: bool
    membership: bool
    wipe_rate: float
    wipe_after_vote: float
    change_rate: float
    extra_nodes: int
    chaos_ms: int
    broken: str | None = None

    @classmethod
    def from_seed(cls, seed: int, broken: str | None = None, chaos_ms: int = 3000) -> SimParams:
        r = random.Random(seed)
        m = random.Random(-1 - seed)  # membership's own draws: a seed's other parameters stay as they were
        membership = m.random() < MEMBERSHIP_SHARE
        return cls(
            seed=seed,
            nodes=r.choice((3, 5)),
            drop=r.choice((0.0, 0.01, 0.05, 0.2)),
            duplicate=r.choice((0.0, 0.02, 0.1)),
            max_delay_ms=r.choice((2, 5, 20, 60)),
            fsync_max_ms=r.choice((0, 3, 10)),
            crash_rate=r.choice((0.0, 0.005, 0.02, 0.05)),
            max_downtime_ms=r.choice((200, 1500)),
            crash_after_sync=r.choice((0.0, 0.01, 0.05)),
            partition_rate=r.choice((0.0, 0.005, 0.02)),
            propose_rate=r.choice((0.1, 0.3, 0.8)),
            read_rate=r.choice((0.0, 0.05, 0.2)),
            transfer_rate=r.choice((0.0, 0.0, 0.01)),
            compact_every=r.choice((5, 20, 100)),
            heartbeat_ticks=r.choice((1, 2, 3)),
            pre_vote=r.random() < 0.75,
            check_quorum=r.random() < 0.75,
            membership=membership,
            wipe_rate=m.choice((0.005, 0.02)) if membership else 0.0,
            wipe_after_vote=m.choice((0.0, 0.1, 0.5)) if membership else 0.0,
            change_rate=m.choice((0.005, 0.02)) if membership else 0.0,
            extra_nodes=m.choice((0, 1, 2)) if membership else 0,
            chaos_ms=chaos_ms,
            broken=broken,
        )


@dataclass
class SimNode:
    id: int
    directory: str
    auto_join: bool
    disk: MemoryStorage = field(default_factory=MemoryStorage)
    raft: RaftNode | None = None
    pending: Ready | None = None
    incarnation: int = 0
    sm_index: int = 0
    sm_digest: int = 0
    checked: int = 0
    last_commit: int = 0
    led_term: int = 0
    former: str = ""
    """The directory of the replica a wipe replaced, until the new one is a voter (see ``ignore_directory``)."""


def _fold(digest: int, e: Entry) -> int:
    return zlib.crc32(e.data, zlib.crc32(b"%d/%d/%d" % (e.term, e.index, e.kind), digest))


class Simulation:
    def __init__(self, params: SimParams) -> None:
        self.p = params
        self.rng = random.Random(params.seed * 7919 + 17)
        self.voters = tuple(range(1, params.nodes + 1))
        self.bootstrap = bootstrap_voters(self.voters)
        self.membership = MembershipFaults(self)
        ids = range(1, params.nodes + params.extra_nodes + 1)
        self.nodes = {i: SimNode(i, self.membership.directory_id(i, 0), auto_join=i in self.voters) for i in ids}
        self.now = 0
        self.queue: list[tuple[int, int, Callable[[Any], None], Any]] = []
        self.seq = 0
        self.side: dict[int, int] = {}
        self.faults = True
        self.trace: deque[tuple[int, str | Message]] = deque(maxlen=40)
        self.leader_of_term: dict[int, int] = {}
        self.history: dict[int, Entry] = {}
        self.digests: dict[int, int] = {}
        self.max_commit = 0
        self.proposals = 0
        self.final_index = self.liveness_ms = 0
        self.final_voters: tuple[int, ...] = ()
        self.reads: dict[bytes, int] = {}
        self.stats = dict.fromkeys(("delivered", "crashes", "partitions", "snapshots", "transfers"), 0)
        self.stats |= {"reads": 0, "reads_answered": 0}
        membership = ("wipes", "wipes_after_vote", "removals", "additions", "observers_added", "auto_joins")
        for key in (*membership, "operator_rejoins"):
            self.stats[key] = 0
        for i in self.nodes:
            self._start(self.nodes[i])
            self._at(self.rng.randrange(TICK_MS), self._on_tick, i)
        self._at(0, self._on_chaos, None)

    # -- scheduling ----------------------------------------------------------------------

    def _at(self, when: int, handler: Callable[[Any], None], arg: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, handler, arg))

    def run(self) -> None:
        """Chaos, then heal and require liveness; raises SimFailure with the seed."""
        try:
            self._run_until(self.p.chaos_ms)
            self._heal_all()
            self._liveness()
        except SimFailure:
            raise
        except Exception as exc:
            where = traceback.format_exception(exc)[-3:]
            self._fail(f"{type(exc).__name__}: {exc}\n{''.join(where)}")

    def _run_until(self, end: int) -> None:
        queue = self.queue
        while queue and queue[0][0] <= end:
            when, _, handler, arg = heapq.heappop(queue)
            self.now = when
            handler(arg)
            self._check()

    # -- node lifecycle ------------------------------------------------------------------

    def _start(self, n: SimNode) -> None:
        state = n.disk.load()
        if self.p.broken == "forget_vote":
            hs = state.hard_state
            state = replace(state, hard_state=HardState(hs.term, NONE, hs.commit))
        cfg = Config(
            n.id,
            self.voters,
            heartbeat_ticks=self.p.heartbeat_ticks,
            pre_vote=self.p.pre_vote,
            check_quorum=self.p.check_quorum,
            max_entries_per_msg=8,
            max_inflight_msgs=4,
            seed=self.p.seed * 1_000_003 + n.incarnation * 101 + n.id,
            directory=n.directory,
            auto_join=n.auto_join,
        )
        n.raft = RaftNode(cfg, state)
        n.pending = None
        n.sm_index = state.snapshot.index
        n.sm_digest = int(state.snapshot.data or b"0")
        n.checked = n.last_commit = state.snapshot.index

    def crash(self, n: SimNode) -> None:
        self.trace.append((self.now, f"crash {n.id}"))
        self._at(self.now + self.rng.randint(20, self.p.max_downtime_ms), self._on_restart, n.id)
        self.stats["crashes"] += 1
        n.raft = None
        n.pending = None
        n.incarnation += 1

    def _restart(self, n: SimNode) -> None:
        if n.raft is None:
            self.trace.append((self.now, f"restart {n.id}"))
            self._start(n)
            self.pump(n)

    # -- the driver ----------------------------------------------------------------------

    def pump(self, n: SimNode) -> None:
        raft = n.raft
        if raft is None or n.pending is not None:
            return
        rd = raft.ready()
        if rd is None:
            return
        n.pending = rd
        if self.p.broken == "ack_before_persist":
            self._send_all(rd.messages)
        delay = self.rng.randint(0, self.p.fsync_max_ms) if self.p.fsync_max_ms else 0
        if delay:
            self._at(self.now + delay, self._on_persist, (n.id, n.incarnation))
        else:
            self._complete(n)

    def _complete(self, n: SimNode) -> None:
        rd, raft = n.pending, n.raft
        assert rd is not None and raft is not None
        n.disk.persist(rd)
        if self.p.broken != "ack_before_persist":
            self._send_all(rd.messages)
        if self.faults and rd.must_sync and self.rng.random() < self.p.crash_after_sync:
            self.crash(n)  # right after the fsync and the sends: the most delicate moment
            return
        if self.membership.wiped_after_vote(n, rd):
            return
        if rd.snapshot is not None:
            self._restore(n, rd.snapshot)
        for e in rd.committed_entries:
            self._apply(n, e)
        for rs in rd.read_states:
            self.stats["reads_answered"] += 1
            issued = self.reads.pop(rs.context, None)
            if issued is not None and rs.index < issued:
                self._fail(f"node {n.id} read index {rs.index} < commit {issued} known when the read was issued")
        n.pending = None
        raft.advance(rd)
        if n.sm_index - raft.log.offset >= self.p.compact_every:
            snap = raft.compact(n.sm_index, b"%d" % n.sm_digest)
            n.disk.compact(snap)
        self.pump(n)

    def _restore(self, n: SimNode, snap: Snapshot) -> None:
        self.stats["snapshots"] += 1
        n.sm_index, n.sm_digest = snap.index, int(snap.data)
        self._check_digest(n)

    def _apply(self, n: SimNode, e: Entry) -> None:
        if e.index != n.sm_index + 1:
            self._fail(f"node {n.id} applied {e.index} after {n.sm_index}")
        self._check_entry(n, e)
        n.sm_index, n.sm_digest = e.index, _fold(n.sm_digest, e)
        self._check_digest(n)

    def _send_all(self, msgs: tuple[Message, ...]) -> None:
        p, rng = self.p, self.rng
        for m in msgs:
            if p.broken == "ignore_directory" and m.type in _VOTE_RESPONSES and self.nodes[m.frm].former:
                m = replace(m, directory=self.nodes[m.frm].former)  # a wiped replica answers as its old self
            if self.faults and p.drop and rng.random() < p.drop:
                continue
            self._at(self.now + rng.randint(1, p.max_delay_ms), self._on_deliver, m)
            if self.faults and p.duplicate and rng.random() < p.duplicate:
                self._at(self.now + rng.randint(1, p.max_delay_ms), self._on_deliver, m)

    # -- events --------------------------------------------------------------------------

    def _on_tick(self, node_id: int) -> None:
        n = self.nodes[node_id]
        if n.raft is not None:
            n.raft.tick()
            self.pump(n)
        self._at(self.now + TICK_MS, self._on_tick, node_id)

    def _on_deliver(self, m: Message) -> None:
        n = self.nodes[m.to]
        if n.raft is None or self.side.get(m.frm, 0) != self.side.get(m.to, 0):
            return
        self.stats["delivered"] += 1
        if self.p.broken == "ignore_directory" and m.type in _VOTE_REQUESTS and n.former:
            m = replace(m, to_directory="")  # ...and takes the vote requests meant for it
        self.trace.append((self.now, m))
        n.raft.step(m)
        self.pump(n)

    def _on_persist(self, arg: tuple[int, int]) -> None:
        n = self.nodes[arg[0]]
        if n.incarnation == arg[1] and n.pending is not None:
            self._complete(n)

    def _on_restart(self, node_id: int) -> None:
        self._restart(self.nodes[node_id])

    def _on_heal(self, _: None) -> None:
        self.side = {}
        self.trace.append((self.now, "heal"))

    def _on_chaos(self, _: None) -> None:
        if not self.faults:
            return
        p, rng = self.p, self.rng
        up = [n for n in self.nodes.values() if n.raft is not None]
        if up and rng.random() < p.crash_rate:
            victim = rng.choice(up)
            self.crash(victim)
            up.remove(victim)
        if not self.side and rng.random() < p.partition_rate:
            self.stats["partitions"] += 1
            self.side = {i: rng.randrange(2) for i in self.nodes}
            self.trace.append((self.now, f"partition {self.side}"))
            self._at(self.now + rng.randint(50, 1500), self._on_heal, None)
        if up and rng.random() < p.propose_rate:
            self._propose(rng.choice(up), b"p%d" % self.proposals)
        if up and rng.random() < p.read_rate:
            self._read(rng.choice(up))
        if rng.random() < p.transfer_rate and (found := self.leader()):
            self._transfer(found[0], rng.choice(found[1].voters).id)
        self.membership.chaos(up)
        self._at(self.now + TICK_MS, self._on_chaos, None)

    def _propose(self, n: SimNode, data: bytes) -> int | None:
        """A client proposes at ``n``, following one redirect to the leader it names."""
        for _ in range(2):
            raft = n.raft
            if raft is None:
                return None
            try:
                index = raft.propose(data)
            except NotLeader as e:
                if e.leader == NONE:
                    return None
                n = self.nodes[e.leader]
                continue
            except RaftError:
                return None
            self.proposals += 1
            self.pump(n)
            return index
        return None

    def leader(self) -> tuple[SimNode, RaftNode] | None:
        """The node that leads the newest term (an older leader may not know it was deposed yet)."""
        best: tuple[SimNode, RaftNode] | None = None
        for n in self.nodes.values():
            if n.raft is not None and n.raft.role == Role.LEADER and (best is None or n.raft.term > best[1].term):
                best = n, n.raft
        return best

    def _transfer(self, n: SimNode, to: int) -> None:
        assert n.raft is not None
        self.stats["transfers"] += 1
        n.raft.transfer_leadership(to)
        self.pump(n)

    def in_flight(self) -> list[Message]:
        return [ev[3] for ev in self.queue if ev[2] == self._on_deliver]

    def _read(self, n: SimNode) -> None:
        raft = n.raft
        if raft is None:
            return
        context = b"r%d" % self.stats["reads"]
        self.stats["reads"] += 1
        try:
            raft.read_index(context)
        except NotLeader:
            return
        self.reads[context] = self.max_commit
        self.pump(n)

    # -- invariants ----------------------------------------------------------------------

    def _fail(self, what: str) -> None:
        p = self.p
        env = f"RAFT_SIM_SEED={p.seed}" + (f" RAFT_SIM_BROKEN={p.broken}" if p.broken else "")
        trace = "\n  ".join(f"{t}ms {e if isinstance(e, str) else describe_message(e)}" for t, e in self.trace)
        raise SimFailure(
            f"raft simulation seed {p.seed} failed at {self.now}ms: {what}\n"
            f"params: {p}\nreproduce: {env} .venv/bin/pytest tests/test_raft_sim.py -k replay\n"
            f"last events:\n  {trace}"
        )

    def _check_entry(self, n: SimNode, e: Entry) -> None:
        known = self.history.get(e.index)
        if known is None:
            self.history[e.index] = e
            if e.kind == EntryKind.CONF:
                self.membership.committed(e)
        elif known != e:
            self._fail(f"node {n.id} has committed {e} but history has {known}")

    def _check_digest(self, n: SimNode) -> None:
        known = self.digests.setdefault(n.sm_index, n.sm_digest)
        if known != n.sm_digest:
            self._fail(f"node {n.id} state machine at {n.sm_index} diverged")

    def _check(self) -> None:
        for n in self.nodes.values():
            raft = n.raft
            if raft is None:
                continue
            log = raft.log
            # Committed as far as this node durably holds it: a voter set of one commits before its fsync.
            commit = log.committed if log.committed < log.stable else log.stable
            if commit != n.last_commit:
                if commit < n.last_commit:
                    self._fail(f"node {n.id} commit went back from {n.last_commit} to {commit}")
                n.last_commit = commit
                if commit > n.checked:
                    for i in range(max(n.checked, log.offset) + 1, commit + 1):
                        self._check_entry(n, log.entries[i - log.offset - 1])
                    n.checked = commit
                    self.max_commit = max(self.max_commit, commit)
            if raft.role is Role.LEADER and n.led_term != raft.term:
                n.led_term = raft.term
                self._check_new_leader(n, raft)

    def _check_new_leader(self, n: SimNode, raft: RaftNode) -> None:
        other = self.leader_of_term.setdefault(raft.term, n.id)
        if other != n.id:
            self._fail(f"two leaders in term {raft.term}: {other} and {n.id}")
        if not raft.electable:
            self._fail(f"new leader {n.id} (term {raft.term}) may not campaign under its set {raft.voters}")
        self.trace.append((self.now, f"{n.id} leads term {raft.term}"))
        for index, e in self.history.items():
            if index > raft.log.offset and raft.entry(index) != e:
                self._fail(f"new leader {n.id} (term {raft.term}) lacks committed {e}: has {raft.entry(index)}")

    # -- the end: heal and require progress ----------------------------------------------

    def _heal_all(self) -> None:
        self.faults = False
        self.side = {}
        self.queue = [ev for ev in self.queue if ev[2] not in (self._on_restart, self._on_heal)]
        heapq.heapify(self.queue)
        for n in self.nodes.values():
            self._restart(n)
        self.trace.append((self.now, "healed; liveness phase"))

    def _liveness(self) -> None:
        healed = self.now
        deadline = healed + LIVENESS_MS
        data = b"final"
        target: int | None = None
        proposer, term = 0, 0
        while self.now < deadline:
            self._run_until(self.now + TICK_MS)
            self.membership.rejoin_by_hand()
            if target is not None and (target not in self.history or self.history[target].data != data):
                raft = self.nodes[proposer].raft
                if target in self.history or raft is None or raft.term != term or raft.role != Role.LEADER:
                    target = None  # lost with its leader's term: propose again
            if target is None:
                if found := self.leader():
                    proposer, term = found[0].id, found[1].term
                    target = self._propose(found[0], data)
                continue
            if self._settled(target):
                self.final_index, self.liveness_ms = target, self.now - healed
                return
        found = self.leader()
        voters = [f"{v.id}:{v.directory}" for v in found[1].voters] if found else []
        rejoining = sorted(self.membership.rejoining)
        waiting = f", wiped replicas not voters again: {rejoining}" if rejoining else ""
        self._fail(
            f"no progress within {LIVENESS_MS}ms after healing (final entry at {target}, voters {voters}{waiting})"
        )

    def _settled(self, target: int) -> bool:
        """Every voter of the newest leader applied ``target``, and every wiped replica is a voter again (auto-join)."""
        found = self.leader()
        if found is None:
            return False
        voters = found[1].voters
        if not self.membership.settled(voters) or any(self.nodes[v.id].sm_index < target for v in voters):
            return False
        self.final_voters = tuple(v.id for v in voters)
        return True


def run_seed(seed: int, broken: str | None = None) -> Simulation:
    sim = Simulation(SimParams.from_seed(seed, broken))
    sim.run()
    return sim
