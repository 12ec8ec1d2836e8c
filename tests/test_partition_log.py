"""One suite for every PartitionLog: MemoryPartitionLog and RocksPartitionLog.

The ``env`` fixture yields a fresh log of each kind (rocks: a NodeStore in
tmp_path, with ``reopen()`` to close and reopen it). ``test_model_agreement``
drives both kinds and a plain list model with the same random operations and
checks all three agree after every step (and after reopening the RocksDB).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine as Machine
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

from ketch.recordbatch import parse_header
from replication.log import LogAppendError, LogOffsetError, PartitionLog, RetentionPolicy
from replication.memory_log import MemoryPartitionLog
from replication.rocks_store import NodeStore
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
    with pytest.raises(LogAppendError):
        log.append([make_batch(1)])
    batches = fill(log, [3])
    for bad in ([make_batch(2)], [make_batch(4)], [make_batch(3)[:-1]], [b"short"], [make_batch(3) + b"x"]):
        with pytest.raises(LogAppendError):
            log.append(bad)
    with pytest.raises(LogAppendError):  # all or nothing: the good first batch is not stored
        log.append([make_batch(3, 2), make_batch(6)])
    assert log.log_end_offset == 3 and log.read(0, 1 << 20) == batches[0]


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


def test_retention_by_size(env: Env) -> None:
    b = fill(env.log, [1, 2, 3, 1])
    keep = len(b[2]) + len(b[3])
    assert env.log.apply_retention(RetentionPolicy(retention_bytes=keep + 1), 0) == len(b[0]) + len(b[1])
    assert (env.log.log_start_offset, env.log.size_bytes) == (3, keep)
    assert env.log.apply_retention(RetentionPolicy(retention_bytes=keep), 0) == 0
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


# -- model-based test -------------------------------------------------------


class Model:
    """The spec as a list: (base, next offset, max timestamp, bytes) per batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int, bytes]] = []
        self.start = self.end = 0

    def drop_front(self, keep: int) -> int:
        removed = sum(len(b[3]) for b in self.batches[:keep])
        self.batches = self.batches[keep:]
        self.start = self.batches[0][0] if self.batches else self.end
        return removed

    def retention(self, policy: RetentionPolicy, now: int) -> int:
        n = 0
        while policy.retention_ms >= 0 and n < len(self.batches):
            if now - self.batches[n][2] <= policy.retention_ms:
                break
            n += 1
        while policy.retention_bytes >= 0 and n < len(self.batches):
            if sum(len(b[3]) for b in self.batches[n:]) <= policy.retention_bytes:
                break
            n += 1
        return self.drop_front(n)


class LogMachine(Machine):
    dirs = itertools.count()
    root = Path()

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        self.changes = 0  # reopen after a few changes only: opening RocksDB is the slow part
        self.envs = [Env("memory", Path()), Env("rocks", self.root / str(next(self.dirs)))]

    def pick(self, eighths: int) -> int:
        return self.model.start + (self.model.end - self.model.start) * eighths // 8

    @rule(
        counts=st.lists(st.integers(1, 4), min_size=1, max_size=3),
        ts=st.integers(-3, 12),
        sync=st.booleans(),
    )
    def append(self, counts: list[int], ts: int, sync: bool) -> None:
        batch_list = []
        for i, count in enumerate(counts):
            batch = make_batch(self.model.end, count, timestamp_ms=ts + 3 * i, pad=ts % 7)
            batch_list.append(batch)
            self.model.batches.append((self.model.end, self.model.end + count, ts + 3 * i, batch))
            self.model.end += count
        self.changes += 1
        for e in self.envs:
            e.log.append(batch_list, sync=sync)

    @rule(eighths=st.integers(0, 8))
    def truncate(self, eighths: int) -> None:
        offset = self.pick(eighths)
        kept = [b for b in self.model.batches if b[1] <= offset]
        if offset < self.model.end:
            self.model.end = kept[-1][1] if kept else self.model.start
            self.model.batches = kept
        self.changes += 1
        for e in self.envs:
            e.log.truncate_to(offset)

    @rule(eighths=st.integers(0, 8))
    def delete_before(self, eighths: int) -> None:
        offset = self.pick(eighths)
        self.model.drop_front(sum(1 for b in self.model.batches if b[1] <= offset))
        self.changes += 1
        for e in self.envs:
            e.log.delete_before(offset)

    @rule(ms=st.integers(-1, 25), size=st.integers(-1, 800), now=st.integers(0, 30))
    def retention(self, ms: int, size: int, now: int) -> None:
        policy = RetentionPolicy(retention_ms=ms, retention_bytes=size)
        removed = self.model.retention(policy, now)
        self.changes += 1
        assert [e.log.apply_retention(policy, now) for e in self.envs] == [removed, removed]

    @precondition(lambda self: self.changes >= 4)
    @rule()
    def reopen(self) -> None:
        self.envs[1].reopen()
        self.changes = 0

    @invariant()
    def agree(self) -> None:
        m = self.model
        for e in self.envs:
            log = e.log
            assert (log.log_start_offset, log.log_end_offset) == (m.start, m.end), e.kind
            assert log.size_bytes == sum(len(b[3]) for b in m.batches)
            for offset in range(m.start, m.end + 1):
                want = [b[3] for b in m.batches if b[1] > offset][:1]
                assert log.read(offset, 0) == b"".join(want)
            assert log.read(m.start, 1 << 30) == b"".join(b[3] for b in m.batches)
            for ts in range(-4, 30, 2):
                want = [b[3] for b in m.batches if b[2] >= ts][:1]
                assert log.batch_for_timestamp(ts) == (want[0] if want else None), (e.kind, ts)
        for b in m.batches:
            assert parse_header(b[3]).base_offset == b[0]

    def teardown(self) -> None:
        for e in self.envs:
            e.close()


def test_model_agreement(tmp_path: Path) -> None:
    LogMachine.root = tmp_path
    run_state_machine_as_test(LogMachine, settings=settings(max_examples=50, stateful_step_count=40, deadline=None))
