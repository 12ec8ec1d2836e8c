"""RocksPartitionLog under stress: kill -9, and writers on two threads.

A child process appends to a NodeStore and prints one line per append AFTER
``append`` returns (so every printed line is an acknowledged append). The
test reads until it has seen ``ACKED`` lines, SIGKILLs the child mid-stream,
reopens the store and checks: every acknowledged batch is present,
byte-identical, in order and contiguous; the log ends at an append-call
boundary at or past the last acknowledged one (the in-flight call is all
there or not at all); the state (start, end, size, time index, leader-epoch
cache) agrees with the records, and the high-watermark checkpoint is at
least the last acknowledged one. The child raises the leader epoch every 50
calls, half of the time announcing it first with ``assign_epoch``. Most
appends use ``sync=False``: the WAL alone must survive the death of the
process.

The node appends with fsync in a worker thread while retention runs on the
event loop; ``test_concurrent_append_and_retention`` checks the per-log lock
keeps the cached and stored state equal to the records.
"""

from __future__ import annotations

import itertools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ketch.recordbatch import iter_headers
from replication.log import RetentionPolicy
from replication.rocks_store import NodeStore
from tests.batches import make_batch
from tests.harness import sigkill_after

ACKED = 2000
PID = 3


def append_calls() -> Iterator[list[bytes]]:
    """The deterministic sequence of append calls: call j holds 1-3 batches
    of 1-4 records, all with timestamp j and leader epoch j // 50."""
    base = 0
    j = 0
    while True:
        call = []
        for k in range(1 + j % 3):
            count = 1 + (j + k) % 4
            call.append(make_batch(base, count, timestamp_ms=j, leader_epoch=j // 50, tag=f"c{j}.{k}", pad=j % 37))
            base += count
        yield call
        j += 1


def child_main(path: str) -> None:
    """Runs in the child: append forever, acknowledging each call on stdout
    with its end offset and the high watermark checkpointed after it (the
    end before the call)."""
    log = NodeStore.open(path).partition_log(PID)
    for j, call in enumerate(append_calls()):
        if j % 100 == 0:
            log.assign_epoch(j // 50, log.log_end_offset)
        hw = log.log_end_offset
        log.append(call, sync=j % 10 == 0)
        log.checkpoint_high_watermark(hw)
        sys.stdout.write(f"{j} {log.log_end_offset} {hw}\n")
        sys.stdout.flush()


@pytest.mark.timeout(60)
def test_acknowledged_appends_survive_sigkill(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    code = f"from tests.test_rocks_crash import child_main; child_main({db!r})"
    acks = [(int(a), int(b), int(c)) for a, b, c in (line.split() for line in sigkill_after(code, ACKED))]
    assert [j for j, _, _ in acks] == list(range(len(acks)))
    _, last_acked_end, last_acked_hw = acks[-1]

    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        data = log.read(0, 1 << 40)
        headers = iter_headers(data)
        assert log.log_start_offset == 0
        assert log.log_end_offset >= last_acked_end
        assert log.size_bytes == len(data)
        assert headers[-1].next_offset == log.log_end_offset
        at = 0
        calls = append_calls()
        expected_end = stored = 0
        while at < len(data):  # whole calls only, byte-identical, in order, contiguous
            call = b"".join(next(calls))
            assert data[at : at + len(call)] == call, f"mismatch at byte {at}"
            at += len(call)
            expected_end = iter_headers(call)[-1].next_offset
            stored += 1
        assert expected_end == log.log_end_offset
        # Every acknowledged call, plus at most the one that returned but was not yet printed.
        assert len(acks) <= stored <= len(acks) + 1
        for j in (0, 1, len(acks) // 2, len(acks) - 1):  # the time index was written with the records
            batch = log.batch_for_timestamp(j)
            assert batch is not None and iter_headers(batch)[0].max_timestamp == j
        # The epoch cache was written with the records: it is exactly what the batches say,
        # plus (killed between assign_epoch and the append) an assigned epoch at the end.
        derived: list[tuple[int, int]] = []
        for header in headers:
            if header.leader_epoch > (derived[-1][0] if derived else -1):
                derived.append((header.leader_epoch, header.base_offset))
        entries = log.epoch_entries()
        assigned = [(stored // 50, log.log_end_offset)] if stored % 100 == 0 else []
        assert entries in (derived, derived + assigned)
        assert entries[-1][0] >= headers[-1].leader_epoch == (stored - 1) // 50
        assert last_acked_hw <= log.high_watermark <= log.log_end_offset
        log.append([make_batch(log.log_end_offset, 2, leader_epoch=log.latest_epoch)], sync=True)
        assert log.log_end_offset == expected_end + 2


def test_concurrent_append_and_retention(tmp_path: Path) -> None:
    store = NodeStore.open(str(tmp_path / "db"))
    log = store.partition_log(0)
    done = threading.Event()

    def appender() -> None:
        try:
            for call in itertools.islice(append_calls(), 1500):
                log.append(call, sync=False)
        finally:
            done.set()

    thread = threading.Thread(target=appender)
    thread.start()
    removed = 0
    while not done.is_set():
        removed += log.apply_retention(RetentionPolicy(retention_bytes=20_000), now_ms=0)
        # Give the appender the GIL: a bare busy loop starved it (the appender waits for the GIL after
        # every RocksDB call; one full-suite run took 135 s here instead of about 3).
        time.sleep(0.001)
    thread.join()
    data = log.read(log.log_start_offset, 1 << 40)
    assert removed > 0 and log.size_bytes == len(data)
    log.apply_retention(RetentionPolicy(retention_bytes=20_000), now_ms=0)
    data = log.read(log.log_start_offset, 1 << 40)
    first = iter_headers(data)[0]
    assert log.size_bytes == len(data) >= 20_000 > len(data) - first.size  # never below retention.bytes
    assert first.base_offset == log.log_start_offset
    state = (log.log_start_offset, log.log_end_offset, log.size_bytes)
    store.close()
    with NodeStore.open(str(tmp_path / "db")) as store:
        log = store.partition_log(0)
        assert (log.log_start_offset, log.log_end_offset, log.size_bytes) == state
        assert log.read(log.log_start_offset, 1 << 40) == data


def _wal_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.log"))


@pytest.mark.parametrize(("cap", "bounded"), [(4 << 20, True), (1 << 40, False)])
def test_the_wal_files_kept_on_disk_are_bounded(tmp_path: Path, cap: int, bounded: bool) -> None:
    """Appends write the log and the small state families in one WriteBatch; a WAL file goes
    only once every family in it has flushed. With the bound, the node's WAL stays near it;
    without one (the control, RocksDB's default), every WAL file of ~35 MiB of appends stays.
    Every append is still there after a reopen either way."""
    batch = make_batch(0, 7, pad=128 << 10)  # ~900 KiB
    with NodeStore.open(str(tmp_path), max_total_wal_bytes=cap) as store:
        log = store.partition_log(PID)
        for _ in range(40):
            log.append([make_batch(log.log_end_offset, 7, pad=128 << 10)], sync=False)
        kept = _wal_bytes(tmp_path)
        end = log.log_end_offset
    if bounded:
        assert kept < 4 * cap, f"{kept} bytes of WAL files kept with a {cap}-byte bound"
    else:
        assert kept > 40 * len(batch) * 0.9
    with NodeStore.open(str(tmp_path), max_total_wal_bytes=cap) as store:
        log = store.partition_log(PID)
        assert (log.log_start_offset, log.log_end_offset) == (0, end)
        assert len(log.read(0, 1 << 30)) == 40 * len(batch)
