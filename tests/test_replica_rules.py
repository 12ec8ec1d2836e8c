"""The replica rules the node's drivers and the replication simulation both call.

Serving a follower fetch (``Partition.serve_follower_fetch``), applying the
leader's answer on the follower (``Partition.apply_fetch_answer``), when an
acks=all produce is done (``acks_all_outcome``) and when a broker may act on
an image (``caught_up_to_registration``). The Hypothesis test runs a leader
and a follower over a lossy, reordering link.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch.errors import ErrorCode, OffsetOutOfRangeError
from replication.acks import REPLICATED, AcksOutcome, acks_all_outcome
from replication.follower import FetchAnswer, FollowerUpdate, changes_nothing
from replication.leader_state import UNKNOWN
from replication.memory_log import MemoryPartitionLog
from replication.partition import FollowerFetch, Partition, caught_up_to_registration
from tests.batches import make_batch, values

LEADER, FOLLOWER = 1, 2
MAX = 1 << 20


def leader(epoch: int = 1, isr: tuple[int, ...] = (LEADER, FOLLOWER)) -> Partition:
    part = Partition("t", 0, MemoryPartitionLog())
    part.become_leader(LEADER, (LEADER, FOLLOWER), isr, epoch, 1, lag_time_max_ms=1000, now_ms=0)
    return part


def follower(epoch: int = 1) -> Partition:
    part = Partition("t", 0, MemoryPartitionLog())
    part.become_follower(LEADER, epoch)
    return part


def produce(part: Partition, count: int, tag: str = "v") -> None:
    part.append(make_batch(0, count, tag=tag), max_message_bytes=MAX, acks=1, min_insync_replicas=1, sync=False)


def fetch_from(part: Partition, follower: Partition, max_bytes: int = MAX, now_ms: int = 0) -> FollowerFetch:
    log = follower.log
    return part.serve_follower_fetch(FOLLOWER, 7, log.log_end_offset, log.latest_epoch, max_bytes, now_ms)


def content(part: Partition) -> bytes:
    log = part.log
    return log.read(log.log_start_offset, MAX) if log.log_end_offset > log.log_start_offset else b""


def answer(follower: Partition, fetch: FollowerFetch) -> FetchAnswer:
    read, log = fetch.read, follower.log
    code = fetch.error.code if fetch.error is not None else 0
    return FetchAnswer(
        follower.leader_epoch,
        log.log_end_offset,
        code,
        read.high_watermark,
        read.log_start_offset,
        read.records,
        read.diverging,
    )


# -- serving a follower fetch (the leader) --------------------------------------------------


def test_a_matching_fetch_counts_as_progress_and_reads_to_the_log_end() -> None:
    part, f = leader(), follower()
    produce(part, 3)
    first = fetch_from(part, f)
    assert values(first.read.records) == [(0, b"v:0"), (1, b"v:1"), (2, b"v:2")]  # beyond the HW (0)
    assert not first.high_watermark_moved and first.read.high_watermark == 0
    f.log.append([first.read.records])
    second = fetch_from(part, f)  # the follower now holds [0, 3)
    assert second.high_watermark_moved and second.read.high_watermark == 3 and second.read.records == b""
    assert part.leader is not None and part.leader.followers[FOLLOWER].broker_epoch == 7


def test_a_diverging_fetch_is_answered_with_the_epoch_and_counts_for_nothing() -> None:
    part = leader(epoch=1)
    produce(part, 3)  # epoch 1: [0, 3)
    part.become_follower(FOLLOWER, 2)
    part.become_leader(LEADER, (LEADER, FOLLOWER), (LEADER, FOLLOWER), 3, 2, lag_time_max_ms=1000, now_ms=0)
    produce(part, 2)  # epoch 3: [3, 5)
    f = follower(epoch=3)
    f.log.append([make_batch(0, 3, leader_epoch=1), make_batch(3, 3, leader_epoch=2)])  # epoch 2 never reached it
    fetch = fetch_from(part, f)
    assert fetch.read.diverging == (1, 3) and fetch.read.records == b"" and not fetch.high_watermark_moved
    assert part.leader is not None and part.leader.followers[FOLLOWER].log_end_offset == UNKNOWN
    assert fetch_from(part, f, max_bytes=0).read.diverging is None  # a full response carries offsets only


def test_a_full_response_carries_offsets_only_but_the_fetch_still_counts() -> None:
    part, f = leader(), follower()
    produce(part, 3)
    f.log.append([fetch_from(part, f).read.records])
    fetch = fetch_from(part, f, max_bytes=0)
    assert fetch.high_watermark_moved and fetch.read.records == b"" and fetch.read.high_watermark == 3


def test_an_out_of_range_fetch_still_counts_and_reports_the_error() -> None:
    part = leader()
    produce(part, 3)
    fetch = part.serve_follower_fetch(FOLLOWER, 7, 9, -1, MAX, 0)  # a follower with no epochs, past our end
    assert isinstance(fetch.error, OffsetOutOfRangeError) and fetch.read.records == b""
    assert fetch.high_watermark_moved and part.high_watermark == 3  # counted at our log end, as before


def test_consumers_read_below_the_high_watermark_only() -> None:
    part = leader(isr=(LEADER,))
    produce(part, 2, tag="a")
    part.become_leader(LEADER, (LEADER, FOLLOWER), (LEADER, FOLLOWER), 1, 2, lag_time_max_ms=1000, now_ms=0)
    produce(part, 1, tag="b")  # waits for the follower
    assert values(part.read(0, MAX).records) == [(0, b"a:0"), (1, b"a:1")]
    assert part.read(0, 0).records == b"" and part.read(2, MAX).records == b""
    with pytest.raises(OffsetOutOfRangeError):
        part.read(4, MAX)


# -- applying the answer (the follower) ------------------------------------------------------


def test_records_are_appended_and_the_high_watermark_follows() -> None:
    part, f = leader(), follower()
    produce(part, 3)
    update = f.apply_fetch_answer(answer(f, fetch_from(part, f)))
    assert update.changed and update.appended and update.note is None
    assert f.log.log_end_offset == 3 and f.high_watermark == 0
    update = f.apply_fetch_answer(answer(f, fetch_from(part, f)))
    assert not update.changed and f.high_watermark == 3


def test_a_divergence_truncates_where_the_epochs_agree() -> None:
    f = follower(epoch=3)
    f.log.append([make_batch(0, 3, leader_epoch=1), make_batch(3, 3, leader_epoch=2)])
    update = f.apply_fetch_answer(FetchAnswer(3, 6, diverging=(1, 3)))
    assert update.changed and not update.appended
    assert update.note == "diverged at epoch 1 (leader ends it at 3); truncating 6 -> 3"
    assert f.log.log_end_offset == 3 and f.log.latest_epoch == 1


def test_a_follower_with_only_newer_epochs_truncates_to_its_first_epoch() -> None:
    f = follower(epoch=5)
    f.log.reset_to(2)
    f.log.append([make_batch(2, 4, leader_epoch=4)])  # only an epoch the leader never had, from 2
    assert f.divergence_target(3, 9) == 2  # not min(leader's end 9, own end 6): that livelocks


def test_below_the_leaders_log_start_the_follower_starts_over_there() -> None:
    f = follower()
    f.log.append([make_batch(0, 2, leader_epoch=1)])
    update = f.apply_fetch_answer(FetchAnswer(1, 2, ErrorCode.OFFSET_OUT_OF_RANGE, log_start_offset=10))
    assert update.changed and update.note == "leader starts at 10, beyond our end; starting over there"
    assert (f.log.log_start_offset, f.log.log_end_offset) == (10, 10)


def test_errors_and_stale_answers_change_nothing() -> None:
    f = follower(epoch=2)
    f.log.append([make_batch(0, 2, leader_epoch=1)])
    records = make_batch(2, 1, leader_epoch=2)
    for stale in (
        FetchAnswer(2, 2, ErrorCode.NOT_LEADER_OR_FOLLOWER),
        FetchAnswer(2, 2, ErrorCode.OFFSET_OUT_OF_RANGE, log_start_offset=1),  # not beyond our end
        FetchAnswer(1, 2, records=records, high_watermark=3),  # sent in an older epoch
        FetchAnswer(2, 1, records=records, high_watermark=3),  # sent from another log end
    ):
        assert f.apply_fetch_answer(stale) == FollowerUpdate()
        assert f.log.log_end_offset == 2 and f.high_watermark == 0
    f.become_leader(FOLLOWER, (LEADER, FOLLOWER), (FOLLOWER,), 3, 2, lag_time_max_ms=1000, now_ms=0)
    assert not f.apply_fetch_answer(FetchAnswer(3, 2, records=records)).changed  # a leader takes no answers


@given(st.lists(st.tuples(st.sampled_from(["produce", "fetch", "lose", "late"]), st.integers(1, 3)), max_size=40))
def test_a_follower_over_a_lossy_link_stays_a_prefix_of_its_leader(steps: list[tuple[str, int]]) -> None:
    part, f = leader(), follower()
    held: list[FetchAnswer] = []
    leader_hw = follower_hw = 0
    for now, (op, n) in enumerate(steps):
        if op == "produce":
            produce(part, n, tag=f"p{now}")
        else:
            sent = answer(f, fetch_from(part, f, now_ms=now))
            if op == "fetch":
                f.apply_fetch_answer(sent)
            elif op == "late":
                held.append(sent)
            if held and op != "late":
                f.apply_fetch_answer(held.pop(0))  # an old answer arrives: applied only if still current
        mine = content(f)
        assert content(part)[: len(mine)] == mine
        assert f.high_watermark <= min(f.log.log_end_offset, part.high_watermark)
        assert part.high_watermark <= f.log.log_end_offset  # the leader never commits past the follower
        assert part.high_watermark >= leader_hw and f.high_watermark >= follower_hw
        leader_hw, follower_hw = part.high_watermark, f.high_watermark
    for _ in range(2):
        f.apply_fetch_answer(answer(f, fetch_from(part, f)))
    assert content(f) == content(part)
    assert f.high_watermark == part.high_watermark == part.log.log_end_offset


@given(st.lists(st.tuples(st.sampled_from(["produce", "fetch", "late"]), st.integers(1, 3)), max_size=40))
def test_an_answer_the_leader_may_leave_out_would_change_nothing(steps: list[tuple[str, int]]) -> None:
    """node/service.py leaves a partition out of a follower's answer when ``changes_nothing``
    says so: applying that answer anyway leaves the follower exactly as it was."""
    part, f = leader(), follower()
    held: list[tuple[FetchAnswer, int]] = []
    left_out = 0
    for now, (op, n) in enumerate(steps):
        if op == "produce":
            produce(part, n, tag=f"p{now}")
            continue
        sent = answer(f, fetch_from(part, f, now_ms=now))
        held.append((sent, f.high_watermark))  # the follower's high watermark, sent with its fetch
        if op == "late" and len(held) < 3:
            continue
        got, its_hw = held.pop(0)
        before = (content(f), f.log.log_end_offset, f.high_watermark)
        omit = got.error == 0 and changes_nothing(
            got.records, got.diverging, got.high_watermark, got.fetch_offset, its_hw
        )
        f.apply_fetch_answer(got)
        if omit:
            left_out += 1
            assert (content(f), f.log.log_end_offset, f.high_watermark) == before
    for _ in range(3):  # the answers that are not left out still bring the follower level
        sent = answer(f, fetch_from(part, f))
        if not changes_nothing(sent.records, sent.diverging, sent.high_watermark, sent.fetch_offset, f.high_watermark):
            f.apply_fetch_answer(sent)
    assert content(f) == content(part)
    assert f.high_watermark == part.high_watermark == part.log.log_end_offset


def test_answers_with_records_a_divergence_or_a_higher_watermark_are_never_left_out() -> None:
    assert changes_nothing(b"", None, 5, 5, 5)
    assert changes_nothing(b"", None, 9, 5, 5)  # the leader is ahead, but the follower ends at 5
    assert not changes_nothing(make_batch(5, 1), None, 5, 5, 5)
    assert not changes_nothing(b"", (1, 3), 5, 5, 5)
    assert not changes_nothing(b"", None, 6, 7, 5)


# -- acks=all -----------------------------------------------------------------------------------


def outcome(part: Partition, timed_out: bool = False) -> AcksOutcome | None:
    """An acks=all append up to offset 1 under leader epoch 1, with min.insync.replicas 2."""
    return acks_all_outcome(part, 1, 1, 2, timed_out=timed_out, timeout_ms=100)


def test_acks_all_outcomes() -> None:
    part, f = leader(), follower()
    produce(part, 2)
    assert outcome(part) is None  # not replicated yet: keep waiting
    timed_out = outcome(part, timed_out=True)
    assert timed_out == AcksOutcome(
        ErrorCode.REQUEST_TIMED_OUT, "t-0: offset 1 not replicated to the ISR [1, 2] within 100 ms"
    )
    f.log.append([fetch_from(part, f).read.records])
    fetch_from(part, f)  # the HW passes offset 1
    assert outcome(part) == outcome(part, timed_out=True) == REPLICATED  # done beats the deadline
    part.become_leader(LEADER, (LEADER, FOLLOWER), (LEADER,), 1, 2, lag_time_max_ms=1000, now_ms=0)  # ISR shrank
    assert outcome(part) == AcksOutcome(
        ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        "t-0: offset 1 is written but the ISR shrank to 1 replica(s), below min.insync.replicas=2",
    )
    part.become_follower(FOLLOWER, 2)
    deposed = outcome(part)
    assert deposed is not None and deposed.error == ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert deposed.message.startswith("t-0: leadership moved before offset 1 was replicated")
    part.become_leader(LEADER, (LEADER, FOLLOWER), (LEADER, FOLLOWER), 3, 3, lag_time_max_ms=1000, now_ms=0)
    assert outcome(part) == deposed  # leading again, in a later epoch: the new leader may lack the records


def test_a_broker_acts_on_images_from_its_own_registration_on() -> None:
    assert not caught_up_to_registration(10, -1)  # not registered yet
    assert not caught_up_to_registration(9, 10)  # an image older than this process's registration
    assert caught_up_to_registration(10, 10) and caught_up_to_registration(11, 10)
