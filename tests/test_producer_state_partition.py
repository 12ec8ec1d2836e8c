"""Partition.append with idempotent batches (KIP-98), over MemoryPartitionLogs: the leader's
checks, duplicates answered with the original offsets and stored once, followers deriving the
same producer state from the leader's bytes, and a new leader that already has it."""

from __future__ import annotations

import pytest

from ketch.errors import ErrorCode, KetchError
from replication.follower import FetchAnswer
from replication.memory_log import MemoryPartitionLog
from replication.partition import AppendResult, Partition
from tests.batches import make_batch, values

PID = 31


def batch(seq: int, epoch: int = 0, count: int = 2, tag: str = "v", ts: int = 1000) -> bytes:
    return make_batch(0, count, tag=tag, producer_id=PID, producer_epoch=epoch, base_sequence=seq, timestamp_ms=ts)


def leader(broker: int = 1, epoch: int = 1, log: MemoryPartitionLog | None = None) -> Partition:
    part = Partition("t", 0, log or MemoryPartitionLog())
    part.become_leader(broker, (1, 2), (1, 2), epoch, epoch, lag_time_max_ms=1000, now_ms=0)
    return part


def append(part: Partition, records: bytes, acks: int = 1) -> AppendResult:
    return part.append(records, max_message_bytes=1 << 20, acks=acks, min_insync_replicas=1, sync=False)


def test_a_retry_gets_the_original_offsets_and_stores_nothing() -> None:
    part = leader()
    append(part, make_batch(0, 1, tag="plain"))
    first = append(part, batch(0))
    assert (first.base_offset, first.last_offset, first.duplicate) == (1, 2, False)
    second = append(part, batch(2, count=3))
    again = append(part, batch(0))
    assert (again.base_offset, again.last_offset, again.duplicate, again.bytes) == (1, 2, True, 0)
    assert append(part, batch(2, count=3)).base_offset == second.base_offset
    assert part.log.log_end_offset == 6


@pytest.mark.parametrize(
    ("records", "code"),
    [
        (batch(3), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER),  # a gap after sequence 1
        (batch(1, epoch=1), ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER),  # a bump must start at 0
        (batch(2) + batch(4), ErrorCode.INVALID_RECORD),  # one idempotent batch per partition
        (batch(2) + make_batch(0, 1), ErrorCode.INVALID_RECORD),
        (make_batch(0, 1) + batch(2), ErrorCode.INVALID_RECORD),
    ],
)
def test_refusals_store_nothing(records: bytes, code: ErrorCode) -> None:
    part = leader()
    append(part, batch(0))
    with pytest.raises(KetchError) as info:
        append(part, records)
    assert info.value.code == code and "t-0" in info.value.message
    assert part.log.log_end_offset == 2


def test_an_older_epoch_is_refused() -> None:
    part = leader()
    append(part, batch(0, epoch=3))
    with pytest.raises(KetchError) as info:
        append(part, batch(2, epoch=2))
    assert info.value.code == ErrorCode.INVALID_PRODUCER_EPOCH


def test_followers_derive_the_state_and_a_new_leader_answers_the_retry() -> None:
    old = leader()
    follower = Partition("t", 0, MemoryPartitionLog())
    follower.become_follower(1, 1)
    stored = [append(old, batch(seq, tag=f"b{seq}")) for seq in (0, 2, 4)]
    data = old.log.read(0, 1 << 20)
    update = follower.apply_fetch_answer(FetchAnswer(1, 0, 0, 6, 0, data, None))
    assert update.appended and follower.log.producer_state == old.log.producer_state
    follower.become_leader(2, (1, 2), (2,), 2, 2, lag_time_max_ms=1000, now_ms=0)
    retry = append(follower, batch(4, tag="b4"))  # the answer from the old leader was lost
    assert (retry.base_offset, retry.duplicate) == (stored[2].base_offset, True)
    assert append(follower, batch(6, tag="b6")).base_offset == 6
    assert [v for _, v in values(follower.log.read(0, 1 << 20))].count(b"b4:0") == 1


def test_truncation_rolls_back_so_the_lost_batch_is_accepted_again() -> None:
    log = MemoryPartitionLog(snapshot_interval=2)
    part = leader(log=log)
    for seq in range(0, 12, 2):
        append(part, batch(seq))
    part.become_follower(2, 2)
    log.truncate_to(8)  # the divergent suffix: the batches of sequences 8..11
    part.become_leader(1, (1, 2), (1, 2), 3, 3, lag_time_max_ms=1000, now_ms=0)
    assert append(part, batch(8)).base_offset == 8  # not a duplicate: it is gone
    with pytest.raises(KetchError):
        append(part, batch(12))


def test_idle_producers_expire_and_are_then_unknown() -> None:
    part = leader()
    append(part, batch(0, ts=1000))
    assert part.expire_producers(now_ms=1000 + 86_400_000 - 1) == 0
    assert part.expire_producers(now_ms=1000 + 86_400_000) == 1
    assert part.log.producer_state.get(PID) is None
    assert append(part, batch(40)).duplicate is False  # KIP-360: an unknown producer, any sequence
