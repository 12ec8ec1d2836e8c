"""Model-based test: both PartitionLogs and a plain list model, the same random operations.

``test_model_agreement`` drives MemoryPartitionLog, RocksPartitionLog and the
list model with one Hypothesis sequence (appends with epochs, truncation,
front removal, retention, assign_epoch, HW checkpoints, reset_to, transactional
data and commit/abort markers) and checks all three agree after every step, and
after reopening the RocksDB. The model derives the open transactions and the
aborted-transactions index by replaying every batch appended and not truncated
(those removed from the front included), so truncation's rebuild and retention's
trim are checked against a plain replay.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine as Machine
from hypothesis.stateful import invariant, precondition, rule, run_state_machine_as_test

from ketch.recordbatch import assign, build_marker_batch, marker_is_commit, parse_header
from replication.log import LogAppendError, RetentionPolicy
from tests.batches import make_batch
from tests.test_partition_log import Env

# -- model-based test -------------------------------------------------------


class Model:
    """The spec as lists: (base, next offset, max timestamp, bytes) per batch,
    (epoch, start) per cached leader epoch, and the high watermark."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, int, bytes]] = []
        self.start = self.end = self.hw = 0
        self.epochs: list[tuple[int, int]] = []
        self.history: list[bytes] = []  # every batch appended and not truncated, oldest first

    def transactions(self) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
        """(producer id -> first offset of its open transaction, aborted (marker, pid, first) kept)."""
        open_first: dict[int, int] = {}
        aborted = []
        for raw in self.history:
            h = parse_header(raw)
            if h.is_control:
                first = open_first.pop(h.producer_id, None)
                if first is not None and not marker_is_commit(raw) and h.base_offset >= self.start:
                    aborted.append((h.base_offset, h.producer_id, first))
            elif h.is_transactional:
                open_first.setdefault(h.producer_id, h.base_offset)
        return open_first, aborted

    @property
    def latest(self) -> int:
        return self.epochs[-1][0] if self.epochs else -1

    def add_epoch(self, epoch: int, start: int) -> None:
        self.epochs = [(e, s) for e, s in self.epochs if e < epoch and s < start] + [(epoch, start)]

    def truncate(self, offset: int) -> None:
        if offset < self.end:
            kept = [b for b in self.batches if b[1] <= offset]
            self.end = kept[-1][1] if kept else self.start
            self.batches = kept
            self.history = [b for b in self.history if parse_header(b).base_offset < self.end]
            self.hw = min(self.hw, self.end)
        # Even at the end: an epoch assigned at the end without batches goes (Kafka's truncateTo).
        self.epochs = [(e, s) for e, s in self.epochs if s < self.end]

    def drop_front(self, keep: int) -> int:
        removed = sum(len(b[3]) for b in self.batches[:keep])
        self.batches = self.batches[keep:]
        self.start = self.batches[0][0] if self.batches else self.end
        covering = [e for e, s in self.epochs if s <= self.start][-1:]
        self.epochs = [(e, self.start) for e in covering] + [(e, s) for e, s in self.epochs if s > self.start]
        self.hw = max(self.hw, self.start)
        return removed

    def retention(self, policy: RetentionPolicy, now: int) -> int:
        n = 0
        while policy.retention_ms >= 0 and n < len(self.batches):
            if now - self.batches[n][2] <= policy.retention_ms:
                break
            n += 1
        while policy.retention_bytes >= 0 and n < len(self.batches):
            if sum(len(b[3]) for b in self.batches[n + 1 :]) < policy.retention_bytes:
                break
            n += 1
        return self.drop_front(n)

    def end_offset_for(self, epoch: int) -> tuple[int, int]:
        below = [i for i, (e, _) in enumerate(self.epochs) if e <= epoch]
        if not below:
            return (-1, -1)
        i = below[-1]
        return (self.epochs[i][0], self.epochs[i + 1][1] if i + 1 < len(self.epochs) else self.end)


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
        steps=st.lists(st.sampled_from([0, 0, 1, 1, 1, 2, 0, -1]), min_size=3, max_size=3),
    )
    def append(self, counts: list[int], ts: int, sync: bool, steps: list[int]) -> None:
        """Epochs: the latest plus a running sum of ``steps`` (-1: a stale leader)."""
        m = self.model
        batch_list, rows, end, epoch = [], [], m.end, m.latest
        for i, count in enumerate(counts):
            epoch += steps[i]
            batch = make_batch(end, count, timestamp_ms=ts + 3 * i, pad=ts % 7, leader_epoch=epoch)
            batch_list.append(batch)
            rows.append((end, end + count, ts + 3 * i, batch))
            end += count
        self.changes += 1
        if any(step < 0 for step in steps[: len(counts)]):
            for e in self.envs:
                with pytest.raises(LogAppendError):
                    e.log.append(batch_list, sync=sync)
            return
        for row in rows:
            epoch = parse_header(row[3]).leader_epoch
            if epoch > m.latest:
                m.add_epoch(epoch, row[0])
        m.batches += rows
        m.history += batch_list
        m.end = end
        for e in self.envs:
            e.log.append(batch_list, sync=sync)

    @rule(pid=st.integers(1, 2), kind=st.sampled_from(["data", "data", "commit", "abort"]), ts=st.integers(0, 12))
    def txn_append(self, pid: int, kind: str, ts: int) -> None:
        """Transactional data or a marker of producer ``pid`` (the log applies no producer rules)."""
        m = self.model
        if kind == "data":
            raw = make_batch(
                m.end,
                2,
                timestamp_ms=ts,
                leader_epoch=m.latest,
                producer_id=pid,
                producer_epoch=0,
                base_sequence=0,
                transactional=True,
            )
        else:
            raw = assign(build_marker_batch(pid, 1, kind == "commit", 0, ts), m.end, m.latest)
        count = parse_header(raw).records_count
        m.batches.append((m.end, m.end + count, ts, raw))
        m.history.append(raw)
        m.end += count
        self.changes += 1
        for e in self.envs:
            e.log.append([raw])

    @rule(step=st.integers(-1, 2), at_end=st.booleans())
    def assign_epoch(self, step: int, at_end: bool) -> None:
        m = self.model
        epoch, start = m.latest + step, m.end if at_end else m.end - 1
        self.changes += 1
        if epoch < 0 or step < 0 or not at_end:
            for e in self.envs:
                with pytest.raises(LogAppendError):
                    e.log.assign_epoch(epoch, start)
            return
        if step > 0:
            m.add_epoch(epoch, start)
        for e in self.envs:
            e.log.assign_epoch(epoch, start)

    @rule(eighths=st.integers(0, 8))
    def truncate(self, eighths: int) -> None:
        offset = self.pick(eighths)
        self.model.truncate(offset)
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

    @rule(hw=st.integers(-2, 60))
    def checkpoint_high_watermark(self, hw: int) -> None:
        self.model.hw = min(max(hw, self.model.start), self.model.end)
        self.changes += 1
        for e in self.envs:
            e.log.checkpoint_high_watermark(hw)

    @rule(delta=st.integers(-3, 6))
    def reset_to(self, delta: int) -> None:
        m = self.model
        offset = max(0, m.end + delta)
        m.batches, m.epochs, m.history = [], [], []
        m.start = m.end = m.hw = offset
        self.changes += 1
        for e in self.envs:
            e.log.reset_to(offset)

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
            assert (log.epoch_entries(), log.latest_epoch) == (m.epochs, m.latest), e.kind
            for epoch in range(-2, m.latest + 3):
                assert log.end_offset_for_epoch(epoch) == m.end_offset_for(epoch), (e.kind, epoch)
            assert log.high_watermark == m.hw, e.kind
            open_first, aborted = m.transactions()
            table = log.producer_state.entries
            assert {pid: t.txn_first_offset for pid, t in table.items() if t.in_transaction} == open_first, e.kind
            assert [(t.last_offset, t.producer_id, t.first_offset) for t in log.aborted_index()] == aborted, e.kind
        for b in m.batches:
            assert parse_header(b[3]).base_offset == b[0]
        check_epochs_describe_batches(m)

    def teardown(self) -> None:
        for e in self.envs:
            e.close()


def check_epochs_describe_batches(m: Model) -> None:
    """The cache is what the stored batches say: every batch carries the epoch of
    the entry covering it (-1 before the first), every entry but an assigned
    last one starts at a batch, and 0 <= start <= hw <= end."""
    assert m.start <= m.hw <= m.end
    bases = [b[0] for b in m.batches]
    for i, (_, start) in enumerate(m.epochs):
        assert start in bases or (i == len(m.epochs) - 1 and start == m.end), m.epochs
    for base, _, _, batch in m.batches:
        covering = [e for e, s in m.epochs if s <= base][-1:] or [-1]
        assert parse_header(batch).leader_epoch == covering[0], (base, m.epochs)


def test_model_agreement(tmp_path: Path) -> None:
    LogMachine.root = tmp_path
    run_state_machine_as_test(LogMachine, settings=settings(max_examples=50, stateful_step_count=60, deadline=None))
