"""The producer state (replication/producer_state.py): its rules, encodings and, with Hypothesis,
sequences of appends, retries, reorders, epoch bumps, truncations, retention and expiry.

``LogMachine`` drives a MemoryPartitionLog and a RocksPartitionLog (small snapshot interval, reopened
now and then) with one producer workload checked as the leader checks it (``table.check`` before an
append). After every step: no (producer, epoch, sequence) is stored twice; a retry of any of a
producer's last 5 stored batches gets its original offsets; both logs hold the same table, which is
what a rebuild from the whole history (retention-deleted batches included) gives for every producer
that never expired.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from ketch.errors import ErrorCode
from ketch.recordbatch import BatchHeader, iter_headers, parse_header
from replication.memory_log import MemoryPartitionLog
from replication.producer_state import (
    ACCEPT,
    MAX_SEQUENCE,
    BatchMetadata,
    Duplicate,
    IdempotentBatch,
    ProducerEntry,
    ProducerStateTable,
    Refuse,
    add_sequence,
    check,
    update,
)
from replication.rocks_store import NodeStore
from tests.batches import make_batch

WHERE = "t-0"


def batch(pid: int, epoch: int, seq: int, count: int = 1, offset: int = 0, ts: int = 0) -> IdempotentBatch:
    return IdempotentBatch(pid, epoch, seq, add_sequence(seq, count - 1), offset, offset + count - 1, ts)


def entry_of(*batches: IdempotentBatch) -> ProducerEntry | None:
    entry = None
    for b in batches:
        entry = update(entry, b)
    return entry


def test_unknown_producer_is_accepted_with_any_sequence() -> None:
    assert check(None, batch(1, 0, 0), WHERE) == ACCEPT
    assert check(None, batch(1, 3, 12345), WHERE) == ACCEPT  # KIP-360: expired or new, the broker cannot tell


def test_in_sequence_duplicate_gap_and_epochs() -> None:
    entry = entry_of(batch(1, 2, 0, 3, offset=10), batch(1, 2, 3, 2, offset=20))
    assert check(entry, batch(1, 2, 5), WHERE) == ACCEPT
    assert check(entry, batch(1, 2, 0, 3), WHERE) == Duplicate(10, 12)
    assert check(entry, batch(1, 2, 3, 2), WHERE) == Duplicate(20, 21)
    gap = check(entry, batch(1, 2, 6), WHERE)
    assert isinstance(gap, Refuse) and gap.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert "t-0" in gap.message and "producer 1 epoch 2" in gap.message
    assert "expected sequence 5" in gap.message and "received 6" in gap.message
    partial = check(entry, batch(1, 2, 0, 2), WHERE)  # not an exact retry: same first, other last
    assert isinstance(partial, Refuse) and partial.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    old = check(entry, batch(1, 1, 5), WHERE)
    assert isinstance(old, Refuse) and old.code == ErrorCode.INVALID_PRODUCER_EPOCH
    assert "current epoch 2" in old.message
    assert check(entry, batch(1, 3, 0), WHERE) == ACCEPT  # a bump starts at 0
    bump = check(entry, batch(1, 3, 5), WHERE)
    assert isinstance(bump, Refuse) and bump.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    bad = check(entry, batch(1, -1, 0), WHERE)
    assert isinstance(bad, Refuse) and bad.code == ErrorCode.INVALID_RECORD


def test_only_the_last_five_batches_are_remembered() -> None:
    batches = [batch(1, 0, i, offset=i) for i in range(7)]
    entry = entry_of(*batches)
    assert entry is not None and [m.first_seq for m in entry.batches] == [2, 3, 4, 5, 6]
    assert check(entry, batches[2], WHERE) == Duplicate(2, 2)
    assert isinstance(check(entry, batches[1], WHERE), Refuse)
    bumped = update(entry, batch(1, 1, 0, offset=9))
    assert bumped.epoch == 1 and len(bumped.batches) == 1  # a new epoch forgets the old batches


def test_sequences_wrap_at_int32_max() -> None:
    near = batch(1, 0, MAX_SEQUENCE - 1, count=2)
    assert near.last_seq == MAX_SEQUENCE
    entry = entry_of(near)
    assert check(entry, batch(1, 0, 0), WHERE) == ACCEPT
    across = batch(1, 0, MAX_SEQUENCE, count=3)
    assert across.last_seq == 1


def test_idempotent_batch_from_header() -> None:
    raw = make_batch(40, 3, producer_id=9, producer_epoch=4, base_sequence=17, timestamp_ms=77)
    b = IdempotentBatch.of(parse_header(raw))
    assert b == IdempotentBatch(9, 4, 17, 19, 40, 42, 77)
    assert IdempotentBatch.of(parse_header(make_batch(0, 2))) is None


def test_expiry_removes_idle_producers() -> None:
    table = ProducerStateTable()
    table.entries = {1: ProducerEntry(1, 0, (), 1000), 2: ProducerEntry(2, 0, (), 5000)}
    assert table.remove_expired(now_ms=5999, expiration_ms=4999) == [1]
    assert list(table.entries) == [2]


entries = st.builds(
    ProducerEntry,
    st.integers(0, 2**63 - 1),
    st.integers(0, 2**15 - 1),
    st.lists(
        st.builds(
            BatchMetadata,
            st.integers(0, MAX_SEQUENCE),
            st.integers(0, MAX_SEQUENCE),
            st.integers(0, 2**63 - 1),
            st.integers(0, 2**63 - 1),
            st.integers(-(2**63), 2**63 - 1),
        ),
        max_size=5,
    ).map(tuple),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(-1, 2**63 - 1),  # txn_first_offset: -1, no open transaction
)


@given(st.lists(entries, max_size=5))
def test_encodings_round_trip(values: list[ProducerEntry]) -> None:
    for e in values:
        assert ProducerEntry.decode(e.encode()) == e
    table = ProducerStateTable({e.producer_id: e for e in values})
    assert ProducerStateTable.decode(table.encode()) == table


@pytest.mark.parametrize("data", [b"", b"\x02" + bytes(22), bytes(22) + b"\x01", b"\x01\x00\x00\x00\x02"])
def test_bad_encodings_are_value_errors(data: bytes) -> None:
    with pytest.raises(ValueError):
        ProducerEntry.decode(data)
    with pytest.raises(ValueError):
        ProducerStateTable.decode(data)


# -- the state machine over both logs ----------------------------------------------------------

PIDS = (7, 8)


class LogMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.store = NodeStore.open(str(Path(self.dir.name) / "db"))
        self.rocks = self.store.partition_log(0, snapshot_interval=3)
        self.memory = MemoryPartitionLog(snapshot_interval=3)
        self.clock = itertools.count(1000)
        self.epoch = dict.fromkeys(PIDS, 0)
        self.next_seq = dict.fromkeys(PIDS, 0)
        self.history: list[bytes] = []  # every stored batch, retention-deleted ones included
        self.expired: set[int] = set()

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    @property
    def end(self) -> int:
        return self.memory.log_end_offset

    def produce(self, pid: int, epoch: int, seq: int, count: int) -> object:
        """The leader's path: check, then append what is accepted, on both logs."""
        ts = next(self.clock)
        raw = make_batch(self.end, count, producer_id=pid, producer_epoch=epoch, base_sequence=seq, timestamp_ms=ts)
        header = parse_header(raw)
        verdict = self.memory.producer_state.check(IdempotentBatch.of(header), WHERE)  # type: ignore[arg-type]
        assert self.rocks.producer_state.check(IdempotentBatch.of(header), WHERE) == verdict  # type: ignore[arg-type]
        if verdict == ACCEPT:
            self.memory.append([raw])
            self.rocks.append([raw])
            self.history.append(raw)
        return verdict

    @rule(pid=st.sampled_from(PIDS), count=st.integers(1, 3))
    def send(self, pid: int, count: int) -> None:
        assert self.produce(pid, self.epoch[pid], self.next_seq[pid], count) == ACCEPT
        self.next_seq[pid] = add_sequence(self.next_seq[pid], count)

    @rule(pid=st.sampled_from(PIDS), back=st.integers(0, 8))
    def retry(self, pid: int, back: int) -> None:
        """Resend one of the producer's stored batches: a duplicate within the last 5, else refused."""
        mine = [h for h in self.headers(self.history) if h.producer_id == pid]
        if not mine or self.memory.producer_state.get(pid) is None:
            return  # an unknown producer's retry is stored again (KIP-360): the client's risk
        h = mine[-1 - min(back, len(mine) - 1)]
        verdict = self.produce(pid, h.producer_epoch, h.base_sequence, h.records_count)
        assert verdict != ACCEPT, f"a retry of {h} was stored again"
        entry = self.memory.producer_state.get(pid)
        same_epoch = [m for m in mine if m.producer_epoch == h.producer_epoch]
        if entry is not None and entry.epoch == h.producer_epoch and h in same_epoch[-5:] and pid not in self.expired:
            assert verdict == Duplicate(h.base_offset, h.last_offset)

    @rule(pid=st.sampled_from(PIDS), skip=st.integers(1, 3))
    def gap(self, pid: int, skip: int) -> None:
        if self.memory.producer_state.get(pid) is None:
            return
        verdict = self.produce(pid, self.epoch[pid], add_sequence(self.next_seq[pid], skip), 1)
        assert isinstance(verdict, Refuse) and verdict.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER

    @rule(pid=st.sampled_from(PIDS))
    def older_epoch(self, pid: int) -> None:
        entry = self.memory.producer_state.get(pid)
        if entry is None or entry.epoch == 0:
            return
        verdict = self.produce(pid, entry.epoch - 1, 0, 1)
        assert isinstance(verdict, Refuse) and verdict.code == ErrorCode.INVALID_PRODUCER_EPOCH

    @rule(pid=st.sampled_from(PIDS), wrong=st.booleans())
    def bump_epoch(self, pid: int, wrong: bool) -> None:
        """KIP-360: the client bumps its epoch and starts at 0 (a bump that does not is refused)."""
        self.epoch[pid] += 1
        self.next_seq[pid] = 0
        if wrong and self.memory.producer_state.get(pid) is not None:
            verdict = self.produce(pid, self.epoch[pid], 4, 1)
            assert isinstance(verdict, Refuse) and verdict.code == ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER

    @rule(back=st.integers(0, 6))
    def truncate(self, back: int) -> None:
        """A follower's divergent suffix: both logs roll their producer state back."""
        kept = [h for h in self.headers(self.history) if h.base_offset >= self.memory.log_start_offset]
        cut = kept[-1 - back].base_offset if back < len(kept) else self.memory.log_start_offset
        for log in (self.memory, self.rocks):
            log.truncate_to(cut)
        self.history = [b for b in self.history if parse_header(b).base_offset < cut]
        for pid in PIDS:  # the producer learns its lost batches from OUT_OF_ORDER and bumps its epoch
            self.epoch[pid] += 1
            self.next_seq[pid] = 0

    @rule(keep=st.integers(0, 4))
    def retention(self, keep: int) -> None:
        kept = [h for h in self.headers(self.history) if h.base_offset >= self.memory.log_start_offset]
        offset = kept[-keep].base_offset if 0 < keep <= len(kept) else self.end
        for log in (self.memory, self.rocks):
            log.delete_before(offset)

    @rule(idle=st.integers(0, 20))
    def expire(self, idle: int) -> None:
        now = next(self.clock)
        gone = {pid for pid, e in self.memory.producer_state.entries.items() if now - e.last_timestamp >= idle}
        assert self.memory.expire_producers(now, idle) == len(gone)
        assert self.rocks.expire_producers(now, idle) == len(gone)
        self.expired |= gone

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = NodeStore.open(str(Path(self.dir.name) / "db"))
        self.rocks = self.store.partition_log(0, snapshot_interval=3)

    @staticmethod
    def headers(history: list[bytes]) -> list[BatchHeader]:
        return [h for raw in history for h in iter_headers(raw)]

    @invariant()
    def no_sequence_stored_twice(self) -> None:
        seen: set[tuple[int, int, int]] = set()
        for h in self.headers(self.history):
            for i in range(h.records_count):
                key = (h.producer_id, h.producer_epoch, add_sequence(h.base_sequence, i))
                assert key not in seen, f"{key} stored twice"
                seen.add(key)

    @invariant()
    def both_logs_agree_with_a_rebuild(self) -> None:
        assert self.memory.producer_state == self.rocks.producer_state
        for log in (self.memory, self.rocks):  # a snapshot at the start once the front moved
            snaps, start = log.producer_snapshot_offsets(), log.log_start_offset
            assert all(start <= o <= log.log_end_offset for o in snaps) and (start == 0 or snaps[0] == start)
        rebuilt = ProducerStateTable()
        rebuilt.apply(self.headers(self.history))
        for pid in PIDS:
            if pid not in self.expired:
                assert self.memory.producer_state.get(pid) == rebuilt.get(pid)


def test_producer_state_machine() -> None:
    """Suite time: kept as is (~10-16 s on 2 cores: 60 examples of 40 steps, on a real RocksDB
    reopened now and then): the Hypothesis test of the producer state rules."""
    run_state_machine_as_test(LogMachine, settings=settings(max_examples=60, stateful_step_count=40, deadline=None))
