"""One suite for every PartitionLog: MemoryPartitionLog and RocksPartitionLog.

The ``env`` fixture yields a fresh log of each kind (rocks: a NodeStore in
tmp_path, with ``reopen()`` to close and reopen it). The model-based test that
drives both kinds and a list model together is in test_partition_log_model.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from replication.log import LogAppendError, LogOffsetError, PartitionLog, RetentionPolicy
from replication.memory_log import MemoryPartitionLog
from replication.rocks_store import NodeStore, pid_prefix
from tests.batches import make_batch, values


class Env:
    """A log of one kind; ``reopen()`` closes and reopens a RocksDB store (memory: no-op)."""

    def __init__(self, kind: str, path: Path) -> None:
        self.kind, self.path = kind, path
        self.store: NodeStore | None = NodeStore.open(str(path)) if kind == "rocks" else None
        # Typed as the Protocol, so mypy checks that both classes implement it.
        self.log: PartitionLog = self.store.partition_log(0) if self.store else MemoryPartitionLog()

    def reopen(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = NodeStore.open(str(self.path))
            self.log = self.store.partition_log(0)

    def close(self) -> None:
        self.log.close()
        if self.store is not None:
            self.store.close()


@pytest.fixture(params=["memory", "rocks"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    e = Env(request.param, tmp_path / "db")
    yield e
    e.close()


def fill(log: PartitionLog, counts: list[int], stamps: list[int] | None = None) -> list[bytes]:
    """Append one batch per count (timestamps from ``stamps``); return the batches."""
    out = []
    for i, count in enumerate(counts):
        ts = stamps[i] if stamps else 1000 + i
        out.append(make_batch(log.log_end_offset, count, timestamp_ms=ts, tag=f"b{i}"))
        log.append([out[-1]])
    return out


def test_append_read_round_trip(env: Env) -> None:
    log = env.log
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes, log.read(0, 100)) == (0, 0, 0, b"")
    first = [make_batch(0, 3, tag="a"), make_batch(3, 1, tag="b")]
    log.append(first, sync=True)
    second = make_batch(4, 2, tag="c")
    log.append([second])
    log.append([])
    assert (log.log_start_offset, log.log_end_offset) == (0, 6)
    assert log.size_bytes == sum(map(len, [*first, second]))
    data = log.read(0, 1 << 20)
    assert data == b"".join([*first, second])
    assert values(data) == [(0, b"a:0"), (1, b"a:1"), (2, b"a:2"), (3, b"b:0"), (4, b"c:0"), (5, b"c:1")]


def test_append_refuses_what_does_not_continue_the_log(env: Env) -> None:
    log = env.log
    batches = fill(log, [3])
    for bad in ([make_batch(2)], [make_batch(0)], [make_batch(3)[:-1]], [b"short"], [make_batch(3) + b"x"]):
        with pytest.raises(LogAppendError):
            log.append(bad)
    with pytest.raises(LogAppendError):  # all or nothing: the good first batch is not stored
        log.append([make_batch(3, 2), make_batch(4)])
    assert log.log_end_offset == 3 and log.read(0, 1 << 20) == batches[0]


def test_a_gap_left_by_compaction_is_appended_read_past_and_truncated_into(env: Env) -> None:
    """A follower copying a compacted leader appends batches with gaps between them."""
    log = env.log
    first = fill(log, [3])[0]
    after_gap = make_batch(10, 2, tag="g")
    log.append([after_gap])
    assert log.log_end_offset == 12
    assert log.read(1, 1 << 20) == first + after_gap
    for inside in (3, 7, 9):  # a read inside the gap starts at the next batch
        assert log.read(inside, 1) == after_gap
    log.truncate_to(7)  # into the gap: the end is the offset itself
    assert (log.log_end_offset, log.read(0, 1 << 20)) == (7, first)
    assert log.read(5, 1 << 20) == b""


def test_read_from_mid_batch_and_max_bytes(env: Env) -> None:
    b = fill(env.log, [3, 2, 4])
    assert env.log.read(1, 1 << 20) == b"".join(b)
    assert env.log.read(4, 1 << 20) == b[1] + b[2]
    assert env.log.read(8, 1 << 20) == b[2]
    assert env.log.read(0, 0) == b[0]  # always at least one batch (KIP-74)
    assert env.log.read(4, 1) == b[1]
    assert env.log.read(0, len(b[0]) + len(b[1])) == b[0] + b[1]
    assert env.log.read(0, len(b[0]) + len(b[1]) - 1) == b[0]


def test_read_at_end_and_out_of_range(env: Env) -> None:
    fill(env.log, [2, 2])
    assert env.log.read(4, 100) == b""
    for offset in (-1, 5, 100):
        with pytest.raises(LogOffsetError) as info:
            env.log.read(offset, 100)
        assert (info.value.start, info.value.end) == (0, 4)
    env.log.delete_before(2)
    with pytest.raises(LogOffsetError):
        env.log.read(1, 100)


@pytest.mark.parametrize(("offset", "kept"), [(5, 2), (3, 1), (4, 1), (7, 2), (9, 3), (0, 0)])
def test_truncate_to(env: Env, offset: int, kept: int) -> None:
    b = fill(env.log, [3, 2, 4])
    env.log.truncate_to(offset)
    end = [0, 3, 5, 9][kept]
    assert (env.log.log_start_offset, env.log.log_end_offset) == (0, end)
    assert env.log.size_bytes == sum(map(len, b[:kept]))
    assert env.log.read(0, 1 << 20) == b"".join(b[:kept])
    fill(env.log, [1])
    assert env.log.log_end_offset == end + 1
    env.reopen()
    assert env.log.log_end_offset == end + 1
    assert [o for o, _ in values(env.log.read(0, 1 << 20))] == list(range(end + 1))


def test_truncate_out_of_range(env: Env) -> None:
    fill(env.log, [2, 2])
    env.log.delete_before(2)
    for offset in (1, 5):
        with pytest.raises(LogOffsetError):
            env.log.truncate_to(offset)


def test_delete_before(env: Env) -> None:
    b = fill(env.log, [3, 2, 4])
    env.log.delete_before(0)
    env.log.delete_before(4)  # mid-batch: [3, 5) is not wholly below 4, so it stays
    assert (env.log.log_start_offset, env.log.size_bytes) == (3, len(b[1]) + len(b[2]))
    assert env.log.read(3, 1 << 20) == b[1] + b[2]
    env.log.delete_before(1)  # below the start: nothing to do
    assert env.log.log_start_offset == 3
    with pytest.raises(LogOffsetError):
        env.log.delete_before(10)
    env.log.delete_before(9)  # everything: start == end, and the end is kept
    env.reopen()
    assert (env.log.log_start_offset, env.log.log_end_offset, env.log.size_bytes) == (9, 9, 0)
    assert env.log.read(9, 100) == b""
    assert env.log.batch_for_timestamp(0) is None
    more = fill(env.log, [2])
    assert (env.log.log_start_offset, env.log.log_end_offset) == (9, 11)
    assert env.log.read(9, 100) == more[0]


def test_retention_by_time_stops_at_first_unexpired_batch(env: Env) -> None:
    b = fill(env.log, [1, 2, 1, 1], stamps=[100, 200, 50, 300])
    assert env.log.apply_retention(RetentionPolicy(), now_ms=10_000) == 0
    assert env.log.apply_retention(RetentionPolicy(retention_ms=250), now_ms=400) == len(b[0])
    assert env.log.log_start_offset == 1  # the batch at 50 after 200 stays
    assert env.log.apply_retention(RetentionPolicy(retention_ms=250), now_ms=400) == 0
    removed = env.log.apply_retention(RetentionPolicy(retention_ms=0), now_ms=301)
    assert removed == len(b[1]) + len(b[2]) + len(b[3])
    assert (env.log.log_start_offset, env.log.log_end_offset, env.log.size_bytes) == (5, 5, 0)


def test_retention_by_size_never_goes_below_retention_bytes(env: Env) -> None:
    b = fill(env.log, [1, 2, 3, 1])
    keep = len(b[2]) + len(b[3])
    # Kafka's rule: drop the oldest only while what is left stays >= retention.bytes.
    assert env.log.apply_retention(RetentionPolicy(retention_bytes=keep + 1), 0) == len(b[0])
    assert (env.log.log_start_offset, env.log.size_bytes) == (1, len(b[1]) + keep)
    assert env.log.apply_retention(RetentionPolicy(retention_bytes=keep), 0) == len(b[1])
    assert (env.log.log_start_offset, env.log.size_bytes) == (3, keep)
    assert env.log.apply_retention(RetentionPolicy(retention_bytes=keep), 0) == 0
    assert env.log.apply_retention(RetentionPolicy(retention_bytes=len(b[3]) + 1), 0) == 0
    both = RetentionPolicy(retention_ms=10**9, retention_bytes=0)
    assert env.log.apply_retention(both, 0) == keep
    assert (env.log.log_start_offset, env.log.log_end_offset) == (7, 7)


def test_batch_for_timestamp(env: Env) -> None:
    log = env.log
    assert log.batch_for_timestamp(0) is None
    b = fill(log, [1, 2, 1, 1, 1], stamps=[100, 50, 300, 200, 400])
    expect = {-(2**70): 0, 0: 0, 100: 0, 101: 2, 250: 2, 300: 2, 301: 4, 400: 4}
    for ts, i in expect.items():
        assert log.batch_for_timestamp(ts) == b[i], ts
    assert log.batch_for_timestamp(401) is None
    assert log.batch_for_timestamp(2**70) is None
    log.delete_before(1)  # drops the batch at 100, which hid the one at 50
    for ts, want in {0: b[1], 40: b[1], 50: b[1], 51: b[2], 100: b[2], 301: b[4]}.items():
        assert log.batch_for_timestamp(ts) == want, ts
    log.truncate_to(4)  # keeps 50, 300
    env.reopen()
    log = env.log
    assert log.batch_for_timestamp(301) is None
    assert log.batch_for_timestamp(250) == b[2]
    late = fill(log, [1], stamps=[350])[0]
    assert log.batch_for_timestamp(301) == late
    log.delete_before(4)  # only the batch at 350 is left
    assert [log.batch_for_timestamp(ts) for ts in (0, 350, 351)] == [late, late, None]


def epoch_fill(log: PartitionLog, plan: list[tuple[int, int]]) -> list[bytes]:
    """Append one batch per (count, leader epoch); return the batches."""
    out = []
    for count, epoch in plan:
        out.append(make_batch(log.log_end_offset, count, leader_epoch=epoch))
        log.append([out[-1]])
    return out


def test_epoch_cache_follows_appended_batches(env: Env) -> None:
    log = env.log
    assert (log.latest_epoch, log.epoch_entries(), log.end_offset_for_epoch(0)) == (-1, [], (-1, -1))
    epoch_fill(log, [(2, -1), (1, 0), (2, 0), (3, 2), (1, 2), (2, 5)])  # no epoch, then 0 at 2, 2 at 5, 5 at 9
    assert (log.latest_epoch, log.epoch_entries()) == (5, [(0, 2), (2, 5), (5, 9)])
    answers = {-1: (-1, -1), 0: (0, 5), 1: (0, 5), 2: (2, 9), 4: (2, 9), 5: (5, 11), 9: (5, 11)}
    for epoch, answer in answers.items():
        assert log.end_offset_for_epoch(epoch) == answer, epoch
    for stale in ([make_batch(11, leader_epoch=4)], [make_batch(11, leader_epoch=-1)]):
        with pytest.raises(LogAppendError):  # a stale leader's batch is never stored
            log.append(stale)
    with pytest.raises(LogAppendError):  # nor a call whose epochs go down, even above the cache
        log.append([make_batch(11, leader_epoch=7), make_batch(12, leader_epoch=6)])
    assert (log.log_end_offset, log.latest_epoch) == (11, 5)
    log.append([make_batch(11, leader_epoch=6), make_batch(12, leader_epoch=8)], sync=True)
    env.reopen()
    assert env.log.epoch_entries() == [(0, 2), (2, 5), (5, 9), (6, 11), (8, 12)]
    assert env.log.end_offset_for_epoch(7) == (6, 12)


def test_truncation_forgets_epochs_of_removed_batches(env: Env) -> None:
    log = env.log
    epoch_fill(log, [(2, 1), (2, 1), (2, 3), (2, 3), (2, 4)])  # 1 at 0, 3 at 4, 4 at 8
    log.truncate_to(9)  # mid-batch: the end becomes 8, so epoch 4 is gone
    assert (log.log_end_offset, log.epoch_entries()) == (8, [(1, 0), (3, 4)])
    log.truncate_to(5)
    assert (log.epoch_entries(), log.end_offset_for_epoch(3)) == ([(1, 0)], (1, 4))
    epoch_fill(log, [(1, 2)])  # a new branch may start at an epoch below the removed ones
    assert log.epoch_entries() == [(1, 0), (2, 4)]
    env.reopen()
    env.log.truncate_to(0)
    assert (env.log.epoch_entries(), env.log.latest_epoch) == ([], -1)


def test_assign_epoch(env: Env) -> None:
    log = env.log
    epoch_fill(log, [(2, 1)])
    log.assign_epoch(3, 2)  # the new leader's epoch, at its log end offset
    assert (log.epoch_entries(), log.end_offset_for_epoch(3), log.end_offset_for_epoch(2)) == (
        [(1, 0), (3, 2)],
        (3, 2),
        (1, 2),
    )
    for bad in ((2, 2), (4, 1), (4, 3)):  # a lower epoch, or not at the end
        with pytest.raises(LogAppendError):
            log.assign_epoch(*bad)
    log.assign_epoch(3, 2)  # the latest epoch again: nothing to do
    log.assign_epoch(4, 2)  # epoch 3 wrote nothing: epoch 4 replaces it at the same offset
    assert log.epoch_entries() == [(1, 0), (4, 2)]
    epoch_fill(log, [(2, 4)])  # appends in the assigned epoch add no entry
    log.truncate_to(4)  # at the end: a no-op, the assigned epoch stays
    env.reopen()
    log = env.log
    assert (log.epoch_entries(), log.end_offset_for_epoch(4)) == ([(1, 0), (4, 2)], (4, 4))
    with pytest.raises(LogAppendError):
        log.append([make_batch(4, leader_epoch=3)])
    log.assign_epoch(6, 4)
    log.truncate_to(2)  # the assigned epoch and epoch 4's batch go
    assert log.epoch_entries() == [(1, 0)]


def test_front_removal_moves_the_first_epoch_to_the_new_start(env: Env) -> None:
    log = env.log
    epoch_fill(log, [(2, 1), (2, 1), (2, 3), (2, 4)])  # 1 at 0, 3 at 4, 4 at 6
    log.delete_before(3)
    assert (log.log_start_offset, log.epoch_entries()) == (2, [(1, 2), (3, 4), (4, 6)])
    log.delete_before(4)
    assert log.epoch_entries() == [(3, 4), (4, 6)]
    assert log.end_offset_for_epoch(1) == (-1, -1)  # below every cached epoch
    log.apply_retention(RetentionPolicy(retention_bytes=0), 0)  # everything: the latest epoch stays
    assert (log.log_start_offset, log.log_end_offset, log.epoch_entries()) == (8, 8, [(4, 8)])
    env.reopen()
    with pytest.raises(LogAppendError):
        env.log.append([make_batch(8, leader_epoch=3)])
    epoch_fill(env.log, [(1, 4), (1, 5)])
    assert env.log.epoch_entries() == [(4, 8), (5, 9)]


def test_high_watermark_checkpoint(env: Env) -> None:
    log = env.log
    assert log.high_watermark == 0
    fill(log, [2, 2, 2, 2])
    log.checkpoint_high_watermark(5)
    env.reopen()
    assert env.log.high_watermark == 5
    env.log.checkpoint_high_watermark(100)  # clamped to the log
    assert env.log.high_watermark == 8
    env.log.truncate_to(5)  # truncation below lowers it (to the batch boundary 4)
    assert env.log.high_watermark == 4
    env.log.checkpoint_high_watermark(1)
    env.log.delete_before(2)  # the start passing it raises it
    assert env.log.high_watermark == 2
    env.log.checkpoint_high_watermark(-5)
    env.reopen()
    assert (env.log.log_start_offset, env.log.high_watermark) == (2, 2)


def test_rocks_clamps_a_stale_high_watermark_on_open(tmp_path: Path) -> None:
    with NodeStore.open(str(tmp_path)) as store:
        fill(store.partition_log(2), [3])
        store.cf["state"][pid_prefix(2) + b"hw"] = (10).to_bytes(8, "big")
    with NodeStore.open(str(tmp_path)) as store:
        assert store.partition_log(2).high_watermark == 3


def test_reset_to(env: Env) -> None:
    log = env.log
    fill(log, [2, 3], stamps=[500, 600])
    log.assign_epoch(4, 5)
    log.checkpoint_high_watermark(4)
    log.reset_to(100)  # the leader's log starts beyond ours
    assert (log.log_start_offset, log.log_end_offset, log.size_bytes, log.high_watermark) == (100, 100, 0, 100)
    assert (log.epoch_entries(), log.read(100, 10), log.batch_for_timestamp(0)) == ([], b"", None)
    env.reopen()
    log = env.log
    assert (log.log_start_offset, log.log_end_offset, log.latest_epoch) == (100, 100, -1)
    with pytest.raises(LogOffsetError):
        log.read(0, 10)
    new = fill(log, [2], stamps=[10])  # earlier than every removed batch: the time index starts afresh
    assert log.batch_for_timestamp(0) == new[0] and log.read(100, 1 << 20) == new[0]
    epoch_fill(log, [(1, 2)])
    log.reset_to(1)  # below the end works too
    env.reopen()
    assert (env.log.log_start_offset, env.log.log_end_offset, env.log.epoch_entries()) == (1, 1, [])
    assert env.log.read(1, 100) == b""


def test_reopen_keeps_everything(tmp_path: Path) -> None:
    with NodeStore.open(str(tmp_path)) as store:
        b = fill(store.partition_log(7), [2, 1, 3, 2], stamps=[10, 30, 20, 40])
        store.partition_log(7).delete_before(2)
        store.partition_log(7).truncate_to(7)
    with NodeStore.open(str(tmp_path)) as store:
        log = store.partition_log(7)
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == (2, 6, len(b[1]) + len(b[2]))
        assert log.read(2, 1 << 20) == b[1] + b[2]
        assert [log.batch_for_timestamp(ts) for ts in (0, 21, 31)] == [b[1], b[1], None]


def test_partitions_are_independent_and_drop_partition(tmp_path: Path) -> None:
    store = NodeStore.open(str(tmp_path))
    zero, one = store.partition_log(0), store.partition_log(1)
    assert store.partition_log(0) is zero
    a = fill(zero, [2, 2], stamps=[5, 6])
    c = fill(one, [1, 1, 1], stamps=[7, 8, 9])
    assert zero.read(0, 1 << 20) == b"".join(a) and one.read(0, 1 << 20) == b"".join(c)
    assert zero.batch_for_timestamp(7) is None and one.batch_for_timestamp(0) == c[0]
    zero.truncate_to(2)
    one.delete_before(1)
    assert (one.log_start_offset, one.log_end_offset) == (1, 3)
    zero.close()
    store.drop_partition(0)
    store.close()
    store = NodeStore.open(str(tmp_path))
    zero, one = store.partition_log(0), store.partition_log(1)
    assert (zero.log_start_offset, zero.log_end_offset, zero.size_bytes) == (0, 0, 0)
    assert zero.batch_for_timestamp(0) is None and zero.read(0, 100) == b""
    assert one.read(1, 1 << 20) == c[1] + c[2]
    store.drop_partition(1)  # an open log is closed by the drop
    with pytest.raises(RuntimeError):
        one.read(1, 100)
    assert store.partition_log(1).log_end_offset == 0
    store.close()
    with pytest.raises(RuntimeError):
        zero.append([make_batch(0)])


def test_meta_catalogue(tmp_path: Path) -> None:
    with NodeStore.open(str(tmp_path)) as store:
        store.meta_put(b"topic/a", b"1")
        store.meta_put(b"topic/b", b"2", sync=False)
        store.meta_update({b"topic/c": b"3", b"topic/b": None, b"other": b"x"})
        store.sync_wal()
    with NodeStore.open(str(tmp_path)) as store:
        assert store.meta_items(b"topic/") == [(b"topic/a", b"1"), (b"topic/c", b"3")]
        assert store.meta_get(b"other") == b"x" and store.meta_get(b"nope") is None
        store.meta_delete(b"other")
        assert store.meta_items(b"") == [(b"topic/a", b"1"), (b"topic/c", b"3")]


def test_memory_crash_restores_the_last_synced_state() -> None:
    log = MemoryPartitionLog()
    epoch_fill(log, [(2, 1)])
    log.assign_epoch(2, 2)  # synced, with the append before it
    log.checkpoint_high_watermark(2)
    epoch_fill(log, [(1, 2), (1, 3)])
    log.checkpoint_high_watermark(4)
    log.crash()  # the appends, the epoch 3 they started and the checkpoint are lost
    assert (log.log_end_offset, log.epoch_entries(), log.high_watermark) == (2, [(1, 0), (2, 2)], 0)
    log.truncate_to(0)
    log.crash()
    assert (log.log_end_offset, log.epoch_entries()) == (0, [])


def test_memory_crash_loses_only_unsynced_appends() -> None:
    log = MemoryPartitionLog()
    b = fill(log, [2])
    log.crash()
    assert log.log_end_offset == 0
    log.append(b, sync=True)
    log.append([make_batch(2, 3)])
    assert log.synced_end_offset == 2
    log.crash()
    assert (log.log_end_offset, log.read(0, 1 << 20)) == (2, b[0])
    log.append([make_batch(2, 1)])
    log.delete_before(2)  # structural changes are synced, and sync what came before
    log.crash()
    assert (log.log_start_offset, log.log_end_offset) == (2, 3)


def test_truncate_at_the_end_drops_an_epoch_that_started_there(env: Env) -> None:
    fill(env.log, [2])
    env.log.assign_epoch(3, env.log.log_end_offset)  # led epoch 3, appended nothing
    assert env.log.latest_epoch == 3
    env.log.truncate_to(env.log.log_end_offset)  # as a follower: Kafka's truncateTo keeps no such entry
    assert env.log.latest_epoch == 0
    env.reopen()
    assert env.log.latest_epoch == 0


# -- producer state (KIP-98; the rules are in replication/log.py) -------------------------------


def idem(log: PartitionLog, pid: int, seq: int, count: int = 2, epoch: int = 0, ts: int = 1000) -> bytes:
    batch = make_batch(
        log.log_end_offset, count, producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamp_ms=ts
    )
    log.append([batch])
    return batch


def seqs(log: PartitionLog, pid: int) -> list[tuple[int, int, int]]:
    """(first sequence, last sequence, first offset) of the producer's remembered batches."""
    entry = log.producer_state.get(pid)
    return [] if entry is None else [(m.first_seq, m.last_seq, m.first_offset) for m in entry.batches]


def test_producer_state_follows_appends_truncation_and_reopen(env: Env) -> None:
    log = env.log
    for seq in range(0, 14, 2):  # 7 batches of producer 5 at offsets 0, 2, ..., 12; producer 6 between
        idem(log, 5, seq)
        if seq == 6:
            idem(log, 6, 0, count=1)
    assert seqs(log, 5) == [(4, 5, 4), (6, 7, 6), (8, 9, 9), (10, 11, 11), (12, 13, 13)]
    assert seqs(log, 6) == [(0, 0, 8)]
    env.reopen()
    assert seqs(env.log, 5) == [(4, 5, 4), (6, 7, 6), (8, 9, 9), (10, 11, 11), (12, 13, 13)]
    env.log.truncate_to(9)  # producer 5 goes back to its batch at 6; producer 6 keeps its one
    assert seqs(env.log, 5) == [(0, 1, 0), (2, 3, 2), (4, 5, 4), (6, 7, 6)]
    assert seqs(env.log, 6) == [(0, 0, 8)]
    env.log.truncate_to(8)
    assert env.log.producer_state.get(6) is None
    env.reopen()
    assert seqs(env.log, 5) == [(0, 1, 0), (2, 3, 2), (4, 5, 4), (6, 7, 6)] and env.log.producer_state.get(6) is None


def test_retention_keeps_producers_and_a_later_truncation_still_rebuilds(env: Env) -> None:
    log = env.log
    for seq in range(0, 8, 2):
        idem(log, 5, seq)
    idem(log, 6, 0, count=1)
    idem(log, 5, 8)  # offsets: 5 at 0, 2, 4, 6, 9; 6 at 8
    log.delete_before(8)
    assert log.log_start_offset == 8 and log.producer_snapshot_offsets()[0] == 8
    assert seqs(log, 5) == [(0, 1, 0), (2, 3, 2), (4, 5, 4), (6, 7, 6), (8, 9, 9)]  # kept until expiry (KIP-360)
    env.reopen()
    env.log.truncate_to(9)  # rebuilt from the snapshot at the log start
    assert seqs(env.log, 5) == [(0, 1, 0), (2, 3, 2), (4, 5, 4), (6, 7, 6)]
    env.log.delete_before(9)  # everything: the table is the snapshot at the end
    assert seqs(env.log, 5) == [(0, 1, 0), (2, 3, 2), (4, 5, 4), (6, 7, 6)] and seqs(env.log, 6) == [(0, 0, 8)]
    env.log.reset_to(20)
    env.reopen()
    assert len(env.log.producer_state) == 0 and env.log.producer_snapshot_offsets() == []


def test_expired_producers_are_removed_for_good(env: Env) -> None:
    idem(env.log, 5, 0, ts=1000)
    idem(env.log, 6, 0, ts=5000)
    assert env.log.expire_producers(now_ms=5999, expiration_ms=1000) == 1
    env.reopen()
    assert env.log.producer_state.get(5) is None and env.log.producer_state.get(6) is not None
    idem(env.log, 6, 1, ts=6000)
    env.log.truncate_to(5)  # a rollback does not bring the expired producer back
    assert env.log.producer_state.get(5) is None and seqs(env.log, 6) == [(0, 1, 2)]


def test_snapshots_bound_the_rebuild_and_go_with_truncation(tmp_path: Path) -> None:
    with NodeStore.open(str(tmp_path / "db")) as store:
        for log in (MemoryPartitionLog(snapshot_interval=3), store.partition_log(0, snapshot_interval=3)):
            for seq in range(10):
                idem(log, 5, seq, count=1)
            assert log.producer_snapshot_offsets() == [3, 6, 9]
            log.truncate_to(7)
            assert log.producer_snapshot_offsets() == [3, 6]
            assert seqs(log, 5)[-1] == (6, 6, 6)


def test_memory_crash_loses_the_producer_state_of_unsynced_appends() -> None:
    log = MemoryPartitionLog()
    idem(log, 5, 0)
    log.append([make_batch(2, 1)], sync=True)
    idem(log, 5, 2)
    log.crash()
    assert seqs(log, 5) == [(0, 1, 0)]


@pytest.mark.parametrize(
    ("cf", "key", "what"),
    [
        ("state", b"start", "field 'start' has 0 bytes"),
        ("state", b"maxts", "field 'maxts' has 0 bytes"),
        ("state", b"hw", "field 'hw' has 0 bytes"),
        ("producers", b"s", "producer snapshot key"),
        ("txnindex", b"", "aborted-transaction key"),
    ],
)
def test_opening_over_a_damaged_stored_field_is_value_error(tmp_path: Path, cf: str, key: bytes, what: str) -> None:
    """Found by tests/test_fuzz_decoders.py: an integer field or a row key of the wrong length
    escaped ``partition_log`` as struct.error."""
    with NodeStore.open(str(tmp_path / "db")) as store:
        store.cf[cf][pid_prefix(7) + key] = b""
        with pytest.raises(ValueError, match=what):
            store.partition_log(7)
