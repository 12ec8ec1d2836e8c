"""Replication under faults: the seeded simulation of tests/replication_sim.py, its checker and runs.

Scenario (``Scenario``, one seed): three brokers register, the topic (RF 3,
min.insync.replicas 2) is created, a producer sends batches of 1..3 unique
values every 5..30 ms with acks=all (acks=1 in the control run), and every
150..600 ms a fault may start (kill with power loss 70% of the time, pause, cut
a broker from its peers and/or the controller, heal), aimed at the leader 60%
of the time; never two brokers down at once. After ``CHAOS_MS`` everything
heals and a final acks=all produce must succeed and the logs converge.

Invariants (``Checker``), after every event:
- HW monotonic: no replica's high watermark moves back, except across its own
  crash-restart (it restarts from the log's synced checkpoint) or after an
  excused loss (below) left it above the replica's log end.
- Committed prefixes identical: every batch a replica holds wholly below its
  high watermark must equal the batch at that offset in one global committed
  history (built from whichever replica commits an offset first). So any two
  replicas agree, byte for byte, where their committed prefixes overlap, and
  the current leader's committed prefix is the history. A replica must never
  truncate its log below its own high watermark.
- No acknowledged record lost: every acknowledged record (acks=all; acks=1 in
  the control run) must be, at its acknowledged offset, in that history once
  the history reaches the offset, and must be in the converged log at the end.
- What "at most one failure" means here: RF 3 with min.insync 2 promises that
  an acknowledged record survives one broker losing power. A violation at an
  offset is excused only if at least two ``crash()`` happened since the record
  was acknowledged (or first committed) *and* since all three logs last held
  it — then the history is rewritten there and checking goes on.
- Leaders: one broker per leader epoch; the leader is in its ISR; the ISR
  (committed and pending) is within the replicas; the controller's image keeps
  ``PartitionRegistration.check()``.

Today's code fails this: ``Scenario`` models the drivers as they are. Each
bug below was found by the simulation; ``FixedScenario`` models a proposed fix
for each, as a flag, at the seams the simulation offers (hooks of ``SimBroker``,
a ``SimLog`` subclass, the controller commands), and ``BUG_SEEDS`` names a seed
that fails when only that fix is left out:

- (fixed in the logs themselves, so no longer a flag) ``epoch-at-end``,
  liveness: a leader that never appended kept its epoch entry at its log end
  after losing leadership, because ``truncate_to(end)`` returned early; the
  follower then sent that epoch forever. Both logs now truncate the epoch
  cache from the end even when the offset is the log end (Kafka's
  ``UnifiedLog.truncateTo``); the base model has it through MemoryPartitionLog.
- ``diverging-progress``: the leader records a follower's fetch offset as its
  log end *before* the epoch check, so a diverging follower counts as holding
  records it lacks and the HW passes them. Fix (Kafka's
  ``Partition.fetchRecords``): no follower progress from a diverging fetch.
- ``hw-floor``: with fewer than min.insync ISR members the HW still advances,
  so committed (consumer-visible) records live on one broker. Fix (KIP-966):
  the HW advances only while the maximal ISR has min.insync members.
- ``wait-registration``: a restarted broker acts on a stale image naming it the
  leader of the epoch its previous process led, with a log that lost its
  unsynced tail; it appends other records under the *same* epoch, which
  epoch-based truncation cannot tell apart. Fix (Kafka's broker start-up): act
  on metadata only once the image has reached the broker's own registration.
- ``isr-floor``: the ISR shrinks to one member (lagging followers, fencing);
  when that member loses power and comes back, the controller lets it lead with
  its truncated log and the others truncate to it. Fix (KIP-966 in small):
  fencing and AlterPartition keep min.insync members in the ISR; a broker back
  from an unclean shutdown leaves the ISR unless it is the last member; when
  only such brokers remain, the replica reporting the best (epoch, log end)
  leads alone once it is up (unclean recovery).
- ``fetch-epoch`` (KIP-903): the leader proposes ISR expansion from fetch
  progress recorded before the follower lost power and restarted, so a broker
  with a truncated log rejoins the ISR. Fix: AlterPartition names the broker
  epoch each new member fetched with (``isr_broker_epochs``, which the
  controller already checks).
- ``older-epoch`` (liveness): when a follower holds no epoch <= the leader's
  diverging epoch (all its records come from epochs the leader never had —
  after an unclean or lossy election), ``divergence_truncation`` returns
  min(leader's end, own end) = its own end, and the follower livelocks on
  diverging answers. Fix: truncate to where its first cached epoch starts.

Runs: ``REPL_SIM_SEEDS`` seeds (default 800, in chunks of 50) of
``FixedScenario``; ``test_replay`` replays ``REPL_SIM_SEED`` (``REPL_SIM_ACKS=1``
for a control run, ``REPL_SIM_MODEL=current`` for today's code,
``REPL_SIM_WITHOUT=fix,...`` to leave fixes out) — a failure prints that
command; the acks=1 control run must be caught losing data; runs are
deterministic.
"""

from __future__ import annotations

import bisect
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.record.default_records import DefaultRecordBatch

from coordinator.metadata import MetadataImage, PartitionRegistration, replay_batch
from coordinator.metadata.election import build_change
from coordinator.metadata.records import MetadataRecord, partition_change
from ketch.errors import ErrorCode
from replication.leader_state import IsrProposal, LeaderState
from replication.partition import Partition, ReadResult
from tests.replication_sim import (
    BROKERS,
    MIN_ISR,
    TOPIC_ID,
    Endpoint,
    FetchRequest,
    Reply,
    Sim,
    SimBroker,
    SimFailure,
    SimParams,
)

CHAOS_MS, LIVENESS_MS = 6000, 20_000
FIXES = frozenset(("diverging-progress", "hw-floor", "wait-registration", "isr-floor"))
FIXES |= {"fetch-epoch", "older-epoch"}
SEEDS = int(os.environ.get("REPL_SIM_SEEDS", "800"))
CHUNK = 50


@dataclass
class Ack:
    offset: int
    value: bytes
    crashes: int  # how many crash() had happened when it was acknowledged
    acks: int


class Checker:
    """The invariants of the module docstring, kept incrementally, after every event."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.hist_bases: list[int] = []  # the committed history: batches from offset 0
        self.hist_batches: list[bytes] = []
        self.hist_crashes: list[int] = []  # crash() count when each batch became committed
        self.hist_end = 0
        self.verified = dict.fromkeys(BROKERS, 0)  # each log matches the history below this
        self.seen = {b: (0, 0) for b in BROKERS}  # how many cuts and truncations were handled
        self.last_hw: dict[int, int] = {}
        self.unbacked: set[int] = set()  # brokers whose HW an excused loss left above their log end
        self.leader_of_epoch: dict[int, int] = {}
        self.full_before_crash: list[int] = []  # all three logs agreed below this, before each crash()
        self.acked: list[Ack] = []
        self.pending: list[Ack] = []  # acknowledged beyond the history's end so far
        self._values: dict[bytes, list[bytes | None]] = {}

    def before_crash(self) -> None:
        logs = [b.log for b in self.sim.brokers.values()]
        i, n = 0, min(len(log.batches) for log in logs)
        while i < n and all(log.batches[i] == logs[0].batches[i] for log in logs[1:]):
            i += 1
        self.full_before_crash.append(logs[0].next_offset(i - 1) if i else 0)

    def excused(self, offset: int, crashes_then: int) -> bool:
        """Two crash() since ``crashes_then`` and since all three logs last held ``offset``."""
        total = len(self.full_before_crash)
        since = total - crashes_then
        for k in range(total - 1, -1, -1):
            if self.full_before_crash[k] > offset:
                return min(since, total - k) >= 2
        return since >= 2

    def acknowledged(self, offset: int, value: bytes, acks: int) -> None:
        ack = Ack(offset, value, len(self.full_before_crash), acks)
        self.acked.append(ack)
        self.pending.append(ack)
        self.check_pending()

    def lost(self, start: int, end: int) -> str:
        hit = [a for a in self.acked if start <= a.offset < end]
        return f"acknowledged record lost: {hit[0]}; " if hit else ""

    def check(self) -> None:
        for b in self.sim.brokers.values():
            hw = b.hw()
            self.verify(b, hw)
            if b.id in self.unbacked and hw <= b.log.log_end_offset:
                self.unbacked.discard(b.id)
                self.last_hw.pop(b.id, None)
            if hw < self.last_hw.get(b.id, -1) and b.id not in self.unbacked:
                self.sim.fail(f"b{b.id}'s high watermark went back from {self.last_hw[b.id]} to {hw}")
            self.last_hw[b.id] = hw
            part = b.part
            if b.up and part is not None and part.leader is not None:
                first = self.leader_of_epoch.setdefault(part.leader_epoch, b.id)
                if first != b.id:
                    self.sim.fail(f"two leaders in leader epoch {part.leader_epoch}: b{first} and b{b.id}")
                ls = part.leader
                if b.id not in ls.isr or not set(ls.maximal_isr) <= set(ls.replicas):
                    self.sim.fail(f"b{b.id} leads with ISR {ls.isr} (maximal {ls.maximal_isr}), replicas {ls.replicas}")
        if self.pending:
            self.check_pending()

    def verify(self, b: SimBroker, hw: int) -> None:
        log, (cuts, truncations) = b.log, self.seen[b.id]
        for cut in log.truncations[truncations:]:
            before = self.last_hw.get(b.id, -1)
            j = bisect.bisect_right(self.hist_bases, cut) - 1
            if cut < before and not (j >= 0 and self.excused(self.hist_bases[j], self.hist_crashes[j])):
                self.sim.fail(f"{self.lost(cut, before)}b{b.id} truncated its log to {cut}, below its HW {before}")
            if cut < before:
                self.unbacked.add(b.id)  # an excused loss: its HW is above its data until the log regrows
        if len(log.cuts) > cuts:
            self.verified[b.id] = min(self.verified[b.id], *log.cuts[cuts:])
        self.seen[b.id] = (len(log.cuts), len(log.truncations))
        done, limit = self.verified[b.id], min(hw, log.log_end_offset)
        i = max(bisect.bisect_right(log.bases, done) - 1, 0)  # the batch holding ``done``
        while done < limit and i < len(log.bases) and log.next_offset(i) <= limit:
            self.match(b, log.bases[i], log.next_offset(i), log.batches[i])
            done, i = log.next_offset(i), i + 1
        self.verified[b.id] = max(done, self.verified[b.id])

    def match(self, b: SimBroker, base: int, end: int, batch: bytes) -> None:
        """Replica ``b`` holds ``batch`` at ``base`` below its high watermark: it must be the history."""
        if base == self.hist_end:
            self.hist_bases.append(base)
            self.hist_batches.append(batch)
            self.hist_crashes.append(len(self.full_before_crash))
            self.hist_end = end
            return
        j = bisect.bisect_right(self.hist_bases, base) - 1
        if base < self.hist_end and self.hist_bases[j] == base and self.hist_batches[j] == batch:
            return
        start = self.hist_bases[j] if base < self.hist_end else base
        if start != base or not self.excused(start, self.hist_crashes[j]):
            self.sim.fail(
                f"{self.lost(start, end)}committed prefixes differ: b{b.id} holds {self.values(batch)} at "
                f"{base}..{end - 1} below its HW; the committed history has {self.values(self.hist_batches[j])}"
            )
        self.sim.note(f"excused: committed history rewritten from {start} (two crashes since fully replicated)")
        del self.hist_bases[j:], self.hist_batches[j:], self.hist_crashes[j:]
        self.hist_end = start
        for k in self.verified:
            self.verified[k] = min(self.verified[k], start)
        self.pending.extend(a for a in self.acked if a.offset >= start)
        self.match(b, base, end, batch)

    def check_pending(self, final: bool = False) -> None:
        keep = []
        for ack in self.pending:
            if ack.offset >= self.hist_end and not final:
                keep.append(ack)
                continue
            j = bisect.bisect_right(self.hist_bases, ack.offset) - 1
            values = self.values(self.hist_batches[j]) if ack.offset < self.hist_end else []
            at = ack.offset - self.hist_bases[j] if values else 0
            held = values[at] if at < len(values) else None
            if held != ack.value and not self.excused(ack.offset, ack.crashes):
                self.sim.fail(
                    f"acknowledged record lost: {ack.value!r} (acks={ack.acks}) was acknowledged at offset "
                    f"{ack.offset}; the committed history holds {held!r} there"
                )
        self.pending = keep

    def values(self, batch: bytes) -> list[bytes | None]:
        if batch not in self._values:
            self._values[batch] = [r.value for r in DefaultRecordBatch(batch)]
        return self._values[batch]


class Scenario(Sim):
    """Workload, fault schedule and liveness phase over today's drivers, with the checker attached."""

    def __init__(self, params: SimParams) -> None:
        super().__init__(params)
        self.checker = Checker(self)
        self.faults: Counter[str] = Counter()
        self.final_acked = False

    def variant(self) -> str:
        return " REPL_SIM_MODEL=current"

    def started(self) -> None:
        self.at(0, self.produce_tick)
        self.at(300, self.fault)

    def checked(self) -> None:
        self.checker.check()

    def killing(self, b: SimBroker, power_loss: bool) -> None:
        self.faults["power loss" if power_loss else "kill"] += 1
        if power_loss:
            self.checker.before_crash()
        self.checker.last_hw.pop(b.id, None)
        self.checker.unbacked.discard(b.id)

    def send_batch(self, count: int, acks: int, final: bool = False) -> None:
        tag = f"{'final' if final else 'a'}{self.attempts}"

        def acknowledged(offsets: list[int]) -> None:
            self.final_acked |= final
            for i, offset in enumerate(offsets):
                self.checker.acknowledged(offset, f"{tag}:{i}".encode(), acks)

        self.produce(count, acks, tag, acknowledged)

    def produce_tick(self) -> None:
        if self.now < CHAOS_MS:
            self.at(self.rng.randint(5, 30), self.produce_tick)
            if self.in_flight < 4:
                self.send_batch(self.rng.randint(1, 3), self.params.acks)

    def fault(self) -> None:
        if self.now >= CHAOS_MS:
            return
        rng, state = self.rng, self.ctl.image.partition(TOPIC_ID, 0)
        self.at(rng.randint(150, 600), self.fault)
        leader = state.leader if state is not None and state.leader > 0 and rng.random() < 0.6 else 0
        b, length = self.brokers[leader or rng.choice(BROKERS)], rng.randint(50, 2500)
        kind = rng.choice(["kill", "kill", "pause", "cut", "cut", "heal"] if self.params.acks == -1 else ["kill"])
        if kind == "kill" and self.down is None and b.up:
            self.kill(b, power_loss=self.params.acks == 1 or rng.random() < 0.7)
            self.at(length, lambda: self.restart(b))
        elif kind == "pause" and b.up and not b.paused:
            self.faults["pause"] += 1
            self.note(f"FAULT pause b{b.id} for {length} ms")
            b.paused = True
            self.at(length, lambda: self.resume(b))
        elif kind == "cut":
            others: list[Endpoint] = [p for p in BROKERS if p != b.id]
            options: list[list[Endpoint]] = [others, ["c"], [*others, "c"], [rng.choice(others)]]
            peers = rng.choice(options)
            links = {frozenset((b.id, p)) for p in peers}
            self.faults["cut controller" if "c" in peers else "cut peers"] += 1
            self.note(f"FAULT cut b{b.id} from {peers} for {length} ms")
            self.cut |= links
            self.at(length, lambda: self.cut.difference_update(links))
        elif kind == "heal":
            self.faults["heal"] += 1
            self.cut.clear()

    def run(self) -> Scenario:
        self.at(0, self.controller_tick)
        self.run_until(lambda: False, CHAOS_MS)
        self.note("HEAL ALL: liveness phase")
        self.cut.clear()
        self.drop = 0.0
        for b in self.brokers.values():
            self.restart(b)
            self.resume(b)
        self.at(0, self.final_produce)
        if not self.run_until(lambda: self.final_acked and self.converged(), CHAOS_MS + LIVENESS_MS):
            self.fail(f"liveness: no convergence after healing (final acked: {self.final_acked}): {self.describe()}")
        self.checker.check_pending(final=True)
        return self

    def final_produce(self) -> None:
        if not self.final_acked:
            if self.in_flight == 0:
                self.send_batch(1, -1, final=True)
            self.at(100, self.final_produce)


class FloorLeaderState(LeaderState):
    """``hw-floor`` (KIP-966): the high watermark advances only while the maximal ISR has min.insync members."""

    def _advance(self) -> bool:
        return len(self.maximal_isr) >= MIN_ISR and super()._advance()


class FixedBroker(SimBroker):
    def __init__(self, sim: Sim, broker_id: int) -> None:
        self.fixes = sim.fixes if isinstance(sim, FixedScenario) else FIXES
        super().__init__(sim, broker_id)

    def boot(self) -> None:
        self.fetch_epochs: dict[int, int] = {}  # the broker epoch each follower last fetched with
        super().boot()

    def applies(self, image: MetadataImage) -> bool:
        return "wait-registration" not in self.fixes or 0 <= self.epoch <= image.offset

    def on_image(self, new: MetadataImage) -> None:
        super().on_image(new)
        if "hw-floor" in self.fixes and self.part is not None and type(self.part.leader) is LeaderState:
            self.part.leader.__class__ = FloorLeaderState

    def propose(self, leader: LeaderState) -> IsrProposal | None:
        """``isr-floor``: a shrink keeps min.insync members (laggards in ISR order) and takes in joiners."""
        proposal = super().propose(leader)
        if proposal is None or "isr-floor" not in self.fixes or len(proposal.new_isr) >= MIN_ISR:
            return proposal
        kept = [b for b in leader.isr if b not in proposal.new_isr][: MIN_ISR - len(proposal.new_isr)]
        new_isr = (*proposal.new_isr, *kept, *sorted(leader.caught_up_outsiders()))
        if set(new_isr) == set(leader.isr):
            leader.on_isr_rejected()
            return None
        leader.pending = IsrProposal(new_isr, proposal.partition_epoch, f"{proposal.reason}, floored")
        return leader.pending

    def divergence_point(self, epoch: int, end: int) -> int:
        """``older-epoch``: holding no epoch <= the leader's, everything from the first epoch on diverges."""
        entries = self.log.epoch_entries()
        if "older-epoch" in self.fixes and entries and (epoch < 0 or self.log.end_offset_for_epoch(epoch)[0] < 0):
            return min(max(end, 0), entries[0][1])
        return super().divergence_point(epoch, end)

    def isr_broker_epochs(self, proposal: IsrProposal) -> dict[int, int] | None:
        """``fetch-epoch``: name the broker epoch each member was seen fetching with (KIP-903)."""
        return dict(self.fetch_epochs) if "fetch-epoch" in self.fixes else None

    def follower_read(self, part: Partition, request: FetchRequest) -> ReadResult:
        self.fetch_epochs[request.replica_id] = request.replica_epoch
        if "diverging-progress" in self.fixes:
            read = part.read(request.fetch_offset, 1 << 20, follower_epoch=request.last_fetched_epoch)
            if read.diverging is not None:
                return read
        return super().follower_read(part, request)


class FixedScenario(Scenario):
    """``Scenario`` with the proposed fixes in ``fixes`` (all by default)."""

    broker_class = FixedBroker

    def __init__(self, params: SimParams, fixes: frozenset[str] = FIXES) -> None:
        self.fixes = fixes & FIXES
        self.unclean: set[int] = set()  # brokers back from an unclean shutdown, not caught up since
        self.reported: dict[int, tuple[int, int]] = {}  # (latest epoch, log end) from registrations and heartbeats
        super().__init__(params)

    def variant(self) -> str:
        return f" REPL_SIM_WITHOUT={','.join(sorted(FIXES - self.fixes))}" if self.fixes != FIXES else ""

    def floor(self, isr: list[int]) -> list[int]:
        """``isr-floor``: keep current members until the ISR has min.insync of them."""
        state = self.ctl.image.partition(TOPIC_ID, 0)
        for member in state.isr if state is not None and "isr-floor" in self.fixes else ():
            if len(isr) < MIN_ISR and member not in isr:
                isr.append(member)
        return isr

    def commit(self, records: list[MetadataRecord]) -> None:
        if "isr-floor" in self.fixes and records:
            for record in records:
                change = record.partition_change if record.HasField("partition_change") else None
                if change is not None and change.HasField("isr") and len(change.isr.values) < MIN_ISR:
                    change.isr.values[:] = self.floor(list(change.isr.values))
            image = replay_batch(self.ctl.image, self.md_offset + 1, records)
            state = image.partition(TOPIC_ID, 0)
            if state is not None and set(state.isr) <= self.unclean and state.leader in (-1, *self.unclean):
                records = [*records, *self.recover(image, state)]
        super().commit(records)

    def recover(self, image: MetadataImage, state: PartitionRegistration) -> list[MetadataRecord]:
        """Unclean recovery (KIP-966): only brokers back from an unclean shutdown are in the ISR, so the
        replica reporting the best (latest epoch, log end) leads alone — once it is up; until then, nobody."""
        best = max(state.replicas, key=lambda b: self.reported.get(b, (-1, -1)))
        leader = best if image.is_usable(best) else -1
        if leader == state.leader:
            return []
        self.unclean.discard(leader)  # its log defines the partition from now on
        return [partition_change(TOPIC_ID, 0, leader=leader, isr=[best] if leader == best else None)]

    def ctl_alter_partition(
        self, broker: int, epoch: int, l_epoch: int, p_epoch: int, isr: tuple[int, ...], reply: Reply, epochs: Any
    ) -> None:
        state, floored = self.ctl.image.partition(TOPIC_ID, 0), tuple(self.floor(list(isr)))
        if state is not None and floored != isr and set(floored) == set(state.isr):
            return reply(int(ErrorCode.INVALID_REQUEST))  # a shrink below min.insync is refused

        def replied(code: int) -> None:
            if code == 0 and state is not None:
                self.unclean.difference_update(set(floored) - set(state.isr))  # caught up: clean again
            reply(code)

        super().ctl_alter_partition(broker, epoch, l_epoch, p_epoch, floored, replied, epochs)

    def report(self, broker_id: int) -> None:
        """Registrations and heartbeats carry the replica's (latest epoch, log end), as in KIP-966."""
        log = self.brokers[broker_id].log
        self.reported[broker_id] = (log.latest_epoch, log.log_end_offset)

    def ctl_register(self, broker_id: int, incarnation_id: str, reply: Reply) -> None:
        old = self.ctl.image.broker(broker_id)
        unclean = "isr-floor" in self.fixes and old is not None and old.incarnation_id != incarnation_id
        if unclean:
            self.unclean.add(broker_id)  # it may have lost its unsynced tail: out of the ISR, unless it is all
        self.report(broker_id)
        super().ctl_register(broker_id, incarnation_id, reply)
        state = self.ctl.image.partition(TOPIC_ID, 0)
        if unclean and state is not None and broker_id in state.isr and len(state.isr) > 1:
            rest = [b for b in state.isr if b != broker_id]
            change = build_change(TOPIC_ID, 0, state, self.ctl.image.is_usable, target_isr=rest)
            Sim.commit(self, [change] if change is not None else [])  # below the floor, knowingly

    def ctl_heartbeat(self, broker_id: int, epoch: int, offset: int, reply: Reply) -> None:
        self.report(broker_id)
        super().ctl_heartbeat(broker_id, epoch, offset, reply)


def run_seed(seed: int, acks: int = -1, fixes: frozenset[str] | None = FIXES) -> Scenario:
    """One run: ``FixedScenario`` with ``fixes``, or today's code (``Scenario``) when ``fixes`` is None."""
    params = SimParams(seed, acks)
    return (Scenario(params) if fixes is None else FixedScenario(params, fixes)).run()


@pytest.mark.parametrize("first", range(0, SEEDS, CHUNK))
def test_seeds(first: int) -> None:
    for seed in range(first, min(first + CHUNK, SEEDS)):
        sim = run_seed(seed)
        assert sim.final_acked and sim.converged()


def test_replay() -> None:
    seed = int(os.environ.get("REPL_SIM_SEED", "0"))
    acks = int(os.environ.get("REPL_SIM_ACKS", "-1"))
    without = frozenset(os.environ.get("REPL_SIM_WITHOUT", "").split(","))
    sim = run_seed(seed, acks, None if os.environ.get("REPL_SIM_MODEL") == "current" else FIXES - without)
    assert sim.checker.acked, "nothing was acknowledged"


def test_control_acks1_with_leader_crashes_is_caught() -> None:
    """acks=1 acknowledges before replicating; killing the leader must make the checker report a loss."""
    for seed in range(50):
        try:
            run_seed(seed, acks=1)
        except SimFailure as failure:
            assert "acknowledged record lost" in str(failure) and "acks=1" in str(failure)
            assert f"REPL_SIM_SEED={seed} REPL_SIM_ACKS=1 pytest tests/test_replication_sim.py -k replay" in str(
                failure
            )
            return
    pytest.fail("the checker never caught acks=1 losing records in 50 seeds")


# Per bug: the fixes left out, a seed that then fails (found by searching), and the symptom.
BUG_SEEDS = {
    "diverging-progress": ({"diverging-progress"}, 40, "acknowledged record lost"),
    "hw-floor": ({"hw-floor"}, 691, "committed prefixes differ"),
    "wait-registration": ({"wait-registration"}, 574, "acknowledged record lost"),
    "isr-floor": ({"isr-floor"}, 17, "acknowledged record lost"),
    "fetch-epoch": ({"fetch-epoch"}, 2296, "acknowledged record lost"),
    "older-epoch": ({"older-epoch"}, 5227, "liveness"),
}


@pytest.mark.parametrize("bug", sorted(BUG_SEEDS))
def test_bug_is_caught_without_its_fix(bug: str) -> None:
    left_out, seed, symptom = BUG_SEEDS[bug]
    with pytest.raises(SimFailure, match=symptom) as failure:
        run_seed(seed, fixes=FIXES - left_out)
    assert f"REPL_SIM_SEED={seed} REPL_SIM_WITHOUT={','.join(sorted(left_out))} pytest" in str(failure.value)
    run_seed(seed)  # and the seed passes with every fix


def test_runs_are_deterministic() -> None:
    for seed in (1, 2):
        a, b = run_seed(seed), run_seed(seed)
        assert (a.events, a.now, list(a.trace), a.faults) == (b.events, b.now, list(b.trace), b.faults)
        assert [x.log.batches for x in a.brokers.values()] == [x.log.batches for x in b.brokers.values()]


def test_faults_and_protocol_paths_are_exercised() -> None:
    faults: Counter[str] = Counter()
    acked = epochs = diverged = shrinks = 0
    for seed in range(30):
        sim = run_seed(seed)
        faults += sim.faults
        acked += len(sim.checker.acked)
        epochs += max(sim.checker.leader_of_epoch, default=0)
        diverged += sum("diverged" in line for line in sim.trace)
        shrinks += sum("shrink" in line for line in sim.trace)
    assert {"power loss", "kill", "pause", "cut peers", "cut controller", "heal"} <= set(faults), faults
    assert acked > 1000 and epochs > 30 and diverged > 0 and shrinks > 0
