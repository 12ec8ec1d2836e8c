"""LeaderState rules: high watermark over the maximal ISR, caught-up time, ISR proposals."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replication.follower import divergence_truncation, plan_append
from replication.leader_state import LeaderState
from replication.memory_log import MemoryPartitionLog
from replication.partition import Partition
from tests.batches import make_batch


def leader(isr: tuple[int, ...] = (1, 2, 3), end: int = 10, hw: int = 0, now: int = 0) -> LeaderState:
    return LeaderState.start(1, (1, 2, 3), isr, 5, 7, end, hw, lag_time_max_ms=1000, now_ms=now)


def test_high_watermark_waits_for_every_isr_member() -> None:
    s = leader()
    assert not s.on_follower_fetch(2, 10, 1)  # 3 has not fetched yet
    assert s.high_watermark == 0
    assert s.on_follower_fetch(3, 6, 2)
    assert s.high_watermark == 6
    assert s.on_local_append(20) is False  # followers at 10 and 6
    assert s.on_follower_fetch(3, 20, 3) and s.high_watermark == 10


def test_lagging_follower_is_proposed_for_removal_and_hw_then_advances() -> None:
    s = leader(now=0)
    s.on_follower_fetch(2, 10, 100)
    s.on_follower_fetch(3, 4, 100)
    assert s.high_watermark == 4
    assert s.propose_isr_change(500) is None  # within replica.lag.time.max.ms
    s.on_follower_fetch(2, 10, 1400)  # 2 keeps up, 3 stays behind
    proposal = s.propose_isr_change(1500)
    assert proposal is not None and proposal.new_isr == (1, 2) and proposal.partition_epoch == 7
    assert s.maximal_isr == (1, 2, 3)  # a pending shrink still counts the member
    assert s.high_watermark == 4
    assert s.on_isr_committed((1, 2), 8)
    assert s.high_watermark == 10


def test_caught_up_replica_is_proposed_for_return_only_past_hw_and_epoch_start() -> None:
    s = leader(isr=(1, 2), end=10, hw=10)
    s.on_follower_fetch(2, 10, 1)
    s.on_follower_fetch(3, 9, 1)
    assert s.propose_isr_change(2) is None
    s.on_follower_fetch(3, 10, 3)
    proposal = s.propose_isr_change(4)
    assert proposal is not None and proposal.new_isr == (1, 2, 3)
    s.on_isr_rejected()
    assert s.pending is None


def test_follower_rules() -> None:
    assert divergence_truncation(4, 30, (4, 50), 60) == 30
    assert divergence_truncation(4, 30, (3, 20), 60) == 20
    assert divergence_truncation(4, 30, (-1, -1), 25) == 25
    records = make_batch(0, 3) + make_batch(3, 2) + make_batch(5, 4)
    plan = plan_append(records, 5)
    assert plan.truncate_to is None and len(plan.batches) == 1 and plan.next_offset == 9
    plan = plan_append(records, 4)  # our tail batch ends inside the leader's [3, 5)
    assert plan.truncate_to == 3 and plan.next_offset == 9
    log = MemoryPartitionLog()
    log.append([make_batch(0, 7)])
    log.checkpoint_high_watermark(5)
    follower = Partition("t", 0, log)
    follower.set_follower_high_watermark(3)  # never backwards
    assert follower.high_watermark == 5
    follower.set_follower_high_watermark(9)  # at most its own log end
    assert follower.high_watermark == 7 and log.high_watermark == 7


@given(st.lists(st.tuples(st.sampled_from(["append", "f2", "f3", "tick", "commit"]), st.integers(0, 50)), max_size=60))
def test_high_watermark_is_monotonic_and_bounded_by_every_maximal_isr_member(
    steps: list[tuple[str, int]],
) -> None:
    s = leader(end=0)
    now = 0
    ends = {2: -1, 3: -1}
    for op, n in steps:
        now += 10
        before = s.high_watermark
        if op == "append":
            s.on_local_append(s.log_end_offset + n)
        elif op in ("f2", "f3"):
            broker = int(op[1])
            ends[broker] = min(max(ends[broker], 0) + n, s.log_end_offset)
            s.on_follower_fetch(broker, ends[broker], now)
        elif op == "tick":
            now += n * 50
            s.propose_isr_change(now)
        elif op == "commit" and s.pending is not None:
            s.on_isr_committed(s.pending.new_isr, s.partition_epoch + 1)
        assert s.high_watermark >= before
        assert s.high_watermark <= s.log_end_offset
        for broker in s.maximal_isr:
            if broker != 1:
                assert s.high_watermark <= max(ends[broker], 0) or s.high_watermark == 0
        assert 1 in s.isr


def test_a_restarted_follower_is_judged_on_its_new_fetches_only() -> None:
    s = leader(isr=(1, 2), end=10, hw=10)
    s.on_follower_fetch(2, 10, 1, broker_epoch=5)
    s.on_follower_fetch(3, 10, 1, broker_epoch=7)  # caught up ...
    s.on_follower_fetch(3, 4, 2, broker_epoch=9)  # ... then restarted with less (KIP-903)
    assert s.caught_up_outsiders() == []
    s.on_follower_fetch(3, 10, 3, broker_epoch=9)
    proposal = s.propose_isr_change(4)
    assert proposal is not None and proposal.new_isr == (1, 2, 3)
    assert s.isr_broker_epochs(proposal.new_isr) == {2: 5, 3: 9}


def test_a_shrink_keeps_min_insync_members() -> None:
    """KIP-966's floor: with min.insync.replicas 2, two laggards leave one behind, in ISR order."""
    s = LeaderState.start(1, (1, 2, 3), (1, 2, 3), 5, 7, 10, 0, lag_time_max_ms=1000, now_ms=0, min_isr=2)
    proposal = s.propose_isr_change(1500)  # neither follower fetched
    assert proposal is not None and proposal.new_isr == (1, 2) and "[3]" in proposal.reason
    s.on_isr_committed((1, 2), 8)
    assert s.propose_isr_change(3000) is None  # 2 still lags, but the ISR is at the floor
    s.on_follower_fetch(3, 10, 3100)  # 3 caught up: it joins and takes 2's place
    proposal = s.propose_isr_change(3200)
    assert proposal is not None and proposal.new_isr == (1, 3)


def test_a_changed_replica_set_adds_an_unknown_follower_outside_the_isr_and_forgets_removed_ones() -> None:
    s = leader(end=10)
    s.on_follower_fetch(2, 10, 1)
    s.on_follower_fetch(3, 10, 1)
    assert s.high_watermark == 10
    s.on_replicas_changed((2, 3, 4, 1), 2, now_ms=2)  # a reassignment adds 4 (and will remove 1)
    assert set(s.followers) == {2, 3, 4} and s.followers[4].log_end_offset == -1 and s.min_isr == 2
    assert s.on_local_append(20) is False and not s.on_isr_committed((1, 2, 3), 8)
    s.on_follower_fetch(2, 20, 3)
    assert s.on_follower_fetch(3, 20, 3) and s.high_watermark == 20  # the new replica holds nothing back
    s.on_follower_fetch(4, 20, 4)
    proposal = s.propose_isr_change(5)
    assert proposal is not None and proposal.new_isr == (1, 2, 3, 4)
    s.on_replicas_changed((1, 2, 4), 2, now_ms=6)  # 3 removed (this leader stays)
    s.on_isr_committed((1, 2, 4), 9)
    assert set(s.followers) == {2, 4} and s.pending is None and s.propose_isr_change(7) is None
