"""Log compaction (replication/compaction.py), through the cleaner's own pass
(node/log_cleaner.clean_once) over both PartitionLog kinds.

The Hypothesis test drives appends of keyed records and tombstones, clock
steps and cleanings, and after every cleaning reads the whole log back:
- every record still there is exactly what was written at that offset;
- every key's latest value is there, at its original offset;
- a key's latest record that is gone is a tombstone whose first covering
  pass ran at least delete.retention.ms ago (no tombstone goes early);
- a read from any offset, inside a gap or not, starts at the next record
  that exists; the size counts exactly the bytes stored; the log end and
  the last batch are never touched.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ketch.recordbatch import assign, build_marker_batch, iter_headers, parse_header
from ketch.records import decode_batches
from node.log_cleaner import Bounds, CleanerStats, clean_once
from replication.compaction import CleanerCheckpoint, CleanerConfig
from replication.log import PartitionLog, RetentionPolicy
from replication.memory_log import MemoryPartitionLog
from replication.rocks_store import NodeStore
from tests.batches import keyed_batch, keyed_records

RETENTION = 1_000
KEY = ("t", 0)


@contextmanager
def memory_log() -> Iterator[PartitionLog]:
    yield MemoryPartitionLog()


@contextmanager
def rocks_log() -> Iterator[PartitionLog]:
    with tempfile.TemporaryDirectory() as d:
        store = NodeStore.open(d)
        try:
            yield store.partition_log(0)
        finally:
            store.close()


KINDS: dict[str, Callable[[], AbstractContextManager[PartitionLog]]] = {"memory": memory_log, "rocks": rocks_log}


def clean(log: PartitionLog, now: int, ratio: float = 0.0, live: frozenset[int] = frozenset()) -> bool:
    end = log.log_end_offset
    bounds = Bounds(end, end, log.generation, live, CleanerConfig(RETENTION, ratio, 0))
    return clean_once(log, bounds, now, CleanerStats(), KEY)


def everything(log: PartitionLog) -> bytes:
    return log.read(log.log_start_offset, 1 << 30) if log.log_end_offset > log.log_start_offset else b""


def check(log: PartitionLog, written: dict[int, tuple[bytes, bytes | None]], covered: dict[int, int], now: int) -> None:
    data = everything(log)
    present = keyed_records(data)
    assert log.size_bytes == len(data)
    for offset, record in present.items():
        assert written[offset] == record, f"offset {offset} holds {record}, not what was written"
    latest: dict[bytes, int] = {}
    for offset in sorted(written):
        latest[written[offset][0]] = offset
    for key, offset in latest.items():
        if offset in present:
            continue
        assert written[offset][1] is None, f"the latest value of {key!r} (offset {offset}) is gone"
        assert offset in covered and covered[offset] + RETENTION <= now, f"tombstone at {offset} went early"
    headers = iter_headers(data)
    if headers:
        last = headers[-1]
        assert last.next_offset == log.log_end_offset
        assert all(o in present for o in range(last.base_offset, last.next_offset)), "the last batch was cleaned"
    for offset in range(log.log_start_offset, log.log_end_offset):
        records = decode_batches("t", 0, log.read(offset, 1 << 30), offset).records
        expected = min((o for o in present if o >= offset), default=None)
        assert (records[0].offset if records else None) == expected


record = st.tuples(st.integers(0, 5), st.one_of(st.none(), st.integers(0, 99)))
append = st.tuples(st.just("append"), st.lists(record, min_size=1, max_size=4), st.integers(0, 400))
cleaning = st.tuples(st.just("clean"), st.integers(0, 700))
ops = st.lists(st.one_of(append, cleaning), max_size=40)


def run(log: PartitionLog, steps: list[tuple], ratio: float) -> None:
    now = 10_000
    written: dict[int, tuple[bytes, bytes | None]] = {}
    covered: dict[int, int] = {}  # offset -> time of the first pass whose range covered it
    for step in steps:
        if step[0] == "append":
            records = [(b"k%d" % k, None if v is None else b"v%d" % v) for k, v in step[1]]
            base = log.log_end_offset
            log.append([keyed_batch(base, records, timestamp_ms=now)])
            written.update((base + i, r) for i, r in enumerate(records))
            now += step[2]
            continue
        now += step[1]
        before = log.cleaner_checkpoint.cleaned_offset
        clean(log, now, ratio)
        for offset in range(before, log.cleaner_checkpoint.cleaned_offset):
            covered.setdefault(offset, now)
        check(log, written, covered, now)


@pytest.mark.parametrize("kind", ["memory", "rocks"])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=ops, ratio=st.sampled_from([0.0, 0.5]))
def test_cleaning_keeps_every_latest_value_and_no_tombstone_goes_early(
    kind: str,
    steps: list[tuple],
    ratio: float,
) -> None:
    with KINDS[kind]() as log:
        run(log, steps, ratio)


@pytest.mark.parametrize("kind", ["memory", "rocks"])
def test_a_tombstone_goes_after_delete_retention_and_superseded_values_at_once(kind: str) -> None:
    with KINDS[kind]() as log:
        log.append([keyed_batch(0, [(b"a", b"1"), (b"b", b"1")], timestamp_ms=0)])
        log.append([keyed_batch(2, [(b"a", b"2"), (b"b", None)], timestamp_ms=0)])
        log.append([keyed_batch(4, [(b"c", b"1")], timestamp_ms=0)])
        assert clean(log, now=100)
        assert keyed_records(everything(log)) == {2: (b"a", b"2"), 3: (b"b", None), 4: (b"c", b"1")}
        log.append([keyed_batch(5, [(b"d", b"1")], timestamp_ms=0)])
        assert clean(log, now=100 + RETENTION - 1)  # covered at 100: kept until 100 + RETENTION
        assert 3 in keyed_records(everything(log))
        log.append([keyed_batch(6, [(b"e", b"1")], timestamp_ms=0)])
        assert clean(log, now=100 + RETENTION)
        assert keyed_records(everything(log)) == {2: (b"a", b"2"), 4: (b"c", b"1"), 5: (b"d", b"1"), 6: (b"e", b"1")}
        assert log.log_start_offset == 0 and log.log_end_offset == 7
        assert log.read(0, 1) == log.read(2, 1)  # the removed first batch leaves a gap at the start


@pytest.mark.parametrize("kind", ["memory", "rocks"])
def test_aborted_records_go_and_never_hide_an_older_committed_value(kind: str) -> None:
    with KINDS[kind]() as log:
        log.append([keyed_batch(0, [(b"a", b"committed")])])
        txn = dict(producer_id=7, producer_epoch=0, base_sequence=0, transactional=True)
        log.append([keyed_batch(1, [(b"a", b"aborted"), (b"b", b"aborted")], **txn)])  # type: ignore[arg-type]
        log.append([assign(build_marker_batch(7, 1, False, 0, 0), 3, 0)])
        log.append([keyed_batch(4, [(b"z", b"1")])])
        assert clean(log, now=10)
        data = everything(log)
        assert keyed_records(data) == {0: (b"a", b"committed"), 4: (b"z", b"1")}
        assert [h.base_offset for h in iter_headers(data) if h.is_control] == [3]  # markers stay


@pytest.mark.parametrize("kind", ["memory", "rocks"])
def test_a_live_producers_last_batch_stays_as_an_empty_batch_and_compressed_batches_are_rewritten(kind: str) -> None:
    with KINDS[kind]() as log:
        idem = dict(producer_id=3, producer_epoch=0)
        log.append([keyed_batch(0, [(b"a", b"1"), (b"b", b"1")], base_sequence=0, compression=1, **idem)])  # type: ignore[arg-type]
        log.append([keyed_batch(2, [(b"a", b"2")], base_sequence=2, **idem)])  # type: ignore[arg-type]
        log.append([keyed_batch(3, [(b"a", b"3")], base_sequence=3, producer_id=4, producer_epoch=0)])
        log.append([keyed_batch(4, [(b"z", b"1")])])
        assert clean(log, now=10, live=frozenset({3, 4}))
        data = everything(log)
        assert keyed_records(data) == {1: (b"b", b"1"), 3: (b"a", b"3"), 4: (b"z", b"1")}
        first, empty = iter_headers(data)[:2]
        assert (first.base_offset, first.last_offset_delta, first.base_sequence, first.compression) == (0, 1, 0, "gzip")
        assert (empty.base_offset, empty.records_count, empty.producer_id, empty.base_sequence) == (2, 0, 3, 2)
        assert decode_batches("t", 0, data).next_offset == 5


@pytest.mark.parametrize("kind", ["memory", "rocks"])
def test_a_timestamp_lookup_skips_what_cleaning_removed(kind: str) -> None:
    with KINDS[kind]() as log:
        log.append([keyed_batch(0, [(b"a", b"1")], timestamp_ms=500)])
        log.append([keyed_batch(1, [(b"b", b"1"), (b"a", b"2")], timestamp_ms=100)])  # ts 100, 101
        log.append([keyed_batch(3, [(b"z", b"1")], timestamp_ms=900)])
        assert clean(log, now=2000)
        found = log.batch_for_timestamp(100)  # the index names batch 0 (it raised the max to 500): gone
        assert found is not None and keyed_records(found) == {1: (b"b", b"1"), 2: (b"a", b"2")}
        found = log.batch_for_timestamp(400)  # nothing left before offset 3 reaches 400
        assert found is not None and parse_header(found).base_offset == 3


def test_a_stale_generation_applies_nothing_and_truncation_clamps_the_checkpoint() -> None:
    log = MemoryPartitionLog()
    for i in range(4):
        log.append([keyed_batch(i, [(b"a", b"%d" % i)])])
    generation = log.generation
    log.truncate_to(3)
    assert not log.apply_cleaning(generation, [], CleanerCheckpoint(3, ((3, 0),)))
    assert log.cleaner_checkpoint == CleanerCheckpoint()
    assert clean(log, now=10)
    assert log.cleaner_checkpoint.cleaned_offset == 2
    log.truncate_to(1)
    assert log.cleaner_checkpoint.cleaned_offset == 1
    assert all(end <= 1 for end, _ in log.cleaner_checkpoint.horizons)


def test_checkpoint_round_trips_and_keeps_one_expired_horizon() -> None:
    cp = CleanerCheckpoint()
    for at, end in ((0, 10), (5, 12), (50, 20), (2000, 30)):
        cp = cp.after_pass(end, at, RETENTION)
    assert cp.horizons == ((20, 50), (30, 2000))  # (12, 5) was too close to (10, 0); (10, 0) expired
    assert CleanerCheckpoint.decode(cp.encode()) == cp
    assert cp.tombstone_removable(15, 1050, RETENTION) and not cp.tombstone_removable(25, 2999, RETENTION)
    with pytest.raises(ValueError):
        CleanerCheckpoint.decode(cp.encode()[:-1])


def test_after_cleaning_truncation_retention_and_a_reopen_agree_on_both_kinds(tmp_path: Path) -> None:
    """A cleaned log (gaps, an emptied batch) truncated into a gap, trimmed from the front and
    reopened: the RocksDB log answers exactly as the memory log does."""
    memory = MemoryPartitionLog()
    store = NodeStore.open(str(tmp_path / "db"))
    rocks: PartitionLog = store.partition_log(0)
    try:
        for log in (memory, rocks):
            for i in range(12):
                records = [(b"k%d" % (i % 3), b"%d" % i)] + ([(b"u%d" % i, b"x")] if i % 2 else [])
                idem = {"producer_id": 5, "producer_epoch": 0, "base_sequence": 0} if i == 4 else {}
                log.append([keyed_batch(log.log_end_offset, records, timestamp_ms=i, **idem)])  # type: ignore[arg-type]
            assert clean(log, now=100, live=frozenset({5}))
        assert everything(memory) == everything(rocks)
        headers = iter_headers(everything(memory))
        assert any(a.next_offset < b.base_offset for a, b in itertools.pairwise(headers))  # gaps
        assert any(h.records_count == 0 and h.producer_id == 5 for h in headers)  # an emptied batch
        store.close()
        store = NodeStore.open(str(tmp_path / "db"))
        rocks = store.partition_log(0)
        assert rocks.cleaner_checkpoint == memory.cleaner_checkpoint
        assert everything(memory) == everything(rocks) and rocks.size_bytes == memory.size_bytes
        for log in (memory, rocks):
            log.truncate_to(9)  # inside the gap left by batch [9]
            log.delete_before(5)
            log.apply_retention(RetentionPolicy(retention_ms=3), now_ms=9)
        for offset in range(memory.log_start_offset, memory.log_end_offset + 1):
            assert memory.read(offset, 1 << 20) == rocks.read(offset, 1 << 20), offset
        assert (memory.log_start_offset, memory.log_end_offset, memory.size_bytes) == (
            rocks.log_start_offset,
            rocks.log_end_offset,
            rocks.size_bytes,
        )
        assert memory.cleaner_checkpoint == rocks.cleaner_checkpoint
        assert [memory.batch_for_timestamp(t) for t in range(12)] == [rocks.batch_for_timestamp(t) for t in range(12)]
    finally:
        store.close()
