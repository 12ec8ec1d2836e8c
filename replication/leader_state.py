"""LeaderState: what a partition leader knows of its followers (pure; Kafka's Partition/Replica).

Inputs: local appends (the leader's log end offset), follower fetches
(``fetch_offset`` = the follower's log end offset, with ``now_ms``), ticks,
and ISR changes committed by the controller. Outputs: the high watermark and
ISR change proposals (Kafka's AlterPartition), one at a time.

Rules:
- Follower progress: a fetch at ``fetch_offset`` says the follower holds every
  offset below it (it truncated any divergent suffix first, see
  replication/follower.py), so its log end offset is ``fetch_offset``.
- Caught up (Kafka's ``lastCaughtUpTimeMs``): a fetch at or beyond the leader's
  log end offset makes the follower caught up now; a fetch at or beyond the
  leader's log end offset *at the follower's previous fetch* makes it caught
  up as of that previous fetch. A follower starts with the grace of "caught up
  when this leader took over".
- High watermark = the smallest log end offset over the *maximal* ISR, and
  only while that set has at least ``min_isr`` members (KIP-966): a record
  held by fewer replicas than ``min.insync.replicas`` is not committed,
  whatever the ISR shrank to. The maximal ISR is the
  committed ISR plus the members of a pending expansion (a pending shrink
  still counts the member being removed), so the high watermark never
  passes a replica that may yet be in the ISR. A follower whose offset is not
  known yet holds the high watermark where it is. The high watermark never
  moves backwards.
- Shrink: an ISR member (not the leader) not caught up within
  ``replica_lag_time_max_ms`` is proposed for removal — but the ISR keeps
  ``min_isr`` members (KIP-966's floor; the controller enforces it too):
  laggards stay, in ISR order, while fewer would remain, and replicas that
  caught up join in the same proposal. Expand: a replica
  outside the ISR whose log end offset has reached both the high watermark
  and the start of this leader's epoch is proposed for return. One proposal
  is in flight at a time, made against the current partition epoch; the
  controller's commit (``on_isr_committed``) or refusal (``on_isr_rejected``)
  clears it.
- Replica set changes (a reassignment, coordinator/metadata/reassignment.py)
  arrive within the leader epoch with the committed ISR
  (``on_replicas_changed``): a new replica starts unknown and outside the ISR
  (so the high watermark does not wait for it) and joins by the expand rule
  once it has caught up; a removed one is forgotten with its progress.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

UNKNOWN = -1


@dataclass
class FollowerProgress:
    broker_id: int
    log_end_offset: int = UNKNOWN
    last_caught_up_ms: int = 0
    last_fetch_ms: int = 0
    leader_end_at_last_fetch: int = 0
    broker_epoch: int = UNKNOWN  # of the process that fetched (KIP-903)


@dataclass(frozen=True)
class IsrProposal:
    new_isr: tuple[int, ...]
    partition_epoch: int
    reason: str


@dataclass
class LeaderState:
    local_id: int
    replicas: tuple[int, ...]
    isr: tuple[int, ...]
    leader_epoch: int
    partition_epoch: int
    log_end_offset: int
    high_watermark: int
    epoch_start_offset: int
    lag_time_max_ms: int
    now_ms: int
    pending: IsrProposal | None = None
    followers: dict[int, FollowerProgress] = field(default_factory=dict)
    min_isr: int = 1

    @classmethod
    def start(
        cls,
        local_id: int,
        replicas: Iterable[int],
        isr: Iterable[int],
        leader_epoch: int,
        partition_epoch: int,
        log_end_offset: int,
        high_watermark: int,
        lag_time_max_ms: int,
        now_ms: int,
        min_isr: int = 1,
    ) -> LeaderState:
        replicas = tuple(replicas)
        state = cls(
            local_id=local_id,
            replicas=replicas,
            isr=tuple(isr),
            leader_epoch=leader_epoch,
            partition_epoch=partition_epoch,
            log_end_offset=log_end_offset,
            high_watermark=min(high_watermark, log_end_offset),
            epoch_start_offset=log_end_offset,
            lag_time_max_ms=lag_time_max_ms,
            now_ms=now_ms,
            min_isr=min(min_isr, len(replicas)),
        )
        for broker in replicas:
            if broker != local_id:
                state.followers[broker] = FollowerProgress(broker, last_caught_up_ms=now_ms, last_fetch_ms=now_ms)
        return state

    def set_min_isr(self, min_isr: int) -> None:
        """The topic's min.insync.replicas changed (an altered config); capped at the replica count as in ``start``."""
        self.min_isr = min(min_isr, len(self.replicas))

    @property
    def maximal_isr(self) -> tuple[int, ...]:
        if self.pending is None:
            return self.isr
        return tuple(dict.fromkeys(self.isr + self.pending.new_isr))

    def on_local_append(self, log_end_offset: int) -> bool:
        """The leader's log grew; returns True if the high watermark moved."""
        self.log_end_offset = log_end_offset
        return self._advance()

    def on_follower_fetch(self, broker_id: int, fetch_offset: int, now_ms: int, broker_epoch: int = UNKNOWN) -> bool:
        """A follower fetched at ``fetch_offset``; returns True if the high watermark moved.

        A fetch from a new incarnation of the follower (another broker epoch) forgets
        what the old one reported: a restarted broker may hold less than it did."""
        progress = self.followers.get(broker_id)
        if progress is None:
            return False
        if broker_epoch != progress.broker_epoch:
            progress.broker_epoch = broker_epoch
            progress.log_end_offset = UNKNOWN
            progress.leader_end_at_last_fetch = 0
        self.now_ms = max(self.now_ms, now_ms)
        if fetch_offset >= self.log_end_offset:
            progress.last_caught_up_ms = now_ms
        elif fetch_offset >= progress.leader_end_at_last_fetch:
            progress.last_caught_up_ms = max(progress.last_caught_up_ms, progress.last_fetch_ms)
        progress.leader_end_at_last_fetch = self.log_end_offset
        progress.last_fetch_ms = now_ms
        progress.log_end_offset = min(fetch_offset, self.log_end_offset)
        return self._advance()

    def _advance(self) -> bool:
        if self.high_watermark >= self.log_end_offset:
            return False  # nothing above it to commit (the minimum below can never pass our own end)
        if len(self.maximal_isr) < self.min_isr:
            return False
        ends = [self.log_end_offset]
        for broker in self.maximal_isr:
            if broker != self.local_id:
                progress = self.followers.get(broker)
                if progress is None or progress.log_end_offset == UNKNOWN:
                    return False
                ends.append(progress.log_end_offset)
        new = min(ends)
        if new > self.high_watermark:
            self.high_watermark = new
            return True
        return False

    def out_of_sync(self, now_ms: int) -> list[int]:
        return [
            b
            for b in self.isr
            if b != self.local_id and now_ms - self.followers[b].last_caught_up_ms > self.lag_time_max_ms
        ]

    def caught_up_outsiders(self) -> list[int]:
        return [
            b
            for b, p in self.followers.items()
            if b not in self.isr
            and p.log_end_offset != UNKNOWN
            and p.log_end_offset >= self.high_watermark
            and p.log_end_offset >= self.epoch_start_offset
        ]

    def propose_isr_change(self, now_ms: int) -> IsrProposal | None:
        """A shrink or an expansion to send to the controller, or None (one at a time)."""
        self.now_ms = max(self.now_ms, now_ms)
        if self.pending is not None:
            return None
        lagging = self.out_of_sync(now_ms)
        joining = sorted(self.caught_up_outsiders())
        if lagging:
            # The floor (KIP-966): keep laggards, in ISR order, while the ISR (with joiners) would fall below
            # min_isr.
            staying = len(self.isr) - len(lagging) + len(joining)
            keep = [b for b in self.isr if b in lagging][: max(self.min_isr - staying, 0)]
            new_isr = tuple(b for b in self.isr if b not in lagging or b in keep) + tuple(joining)
            if set(new_isr) == set(self.isr):
                return None
            reason = f"shrink: {[b for b in lagging if b not in keep]} not caught up within {self.lag_time_max_ms} ms"
            if joining:
                reason += f"; expand: {joining} caught up to {self.high_watermark}"
        else:
            if not joining:
                return None
            new_isr = self.isr + tuple(joining)
            reason = f"expand: {joining} caught up to {self.high_watermark}"
        self.pending = IsrProposal(new_isr, self.partition_epoch, reason)
        return self.pending

    def on_replicas_changed(self, replicas: Iterable[int], min_isr: int, now_ms: int) -> None:
        """The controller changed the replica set within this leader epoch (a reassignment): a new
        replica is a follower whose offset is not known yet (it is outside the ISR, so it holds
        nothing back); a removed one is forgotten. Call it before ``on_isr_committed``."""
        self.replicas = tuple(replicas)
        for broker in self.replicas:
            if broker != self.local_id and broker not in self.followers:
                self.followers[broker] = FollowerProgress(broker, last_caught_up_ms=now_ms, last_fetch_ms=now_ms)
        for broker in list(self.followers):
            if broker not in self.replicas:
                del self.followers[broker]
        self.set_min_isr(min_isr)

    def on_isr_committed(self, isr: Iterable[int], partition_epoch: int) -> bool:
        """The controller committed a new ISR (ours or not); returns True if the HW moved."""
        self.isr = tuple(isr)
        self.partition_epoch = partition_epoch
        self.pending = None
        return self._advance()

    def isr_broker_epochs(self, isr: Iterable[int]) -> dict[int, int]:
        """The broker epoch each follower in ``isr`` last fetched with (for AlterPartition)."""
        return {
            b: self.followers[b].broker_epoch
            for b in isr
            if b in self.followers and self.followers[b].broker_epoch != UNKNOWN
        }

    def on_isr_rejected(self) -> None:
        self.pending = None
