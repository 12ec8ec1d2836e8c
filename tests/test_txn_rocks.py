"""The aborted-transactions index and open transactions in a real RocksDB.

- The index rows (column family ``txnindex``) are written with the batches, read back on
  reopen, removed with a truncation (and the open transactions rebuilt from the kept log)
  and trimmed by retention; ``drop_partition`` removes them.
- kill -9: a child process appends transactional batches and markers of three producers
  (mostly unsynced, a truncation now and then, a small snapshot interval) and prints one line
  per returned call. After SIGKILL the reopened store's index and open transactions are
  exactly what a replay of the surviving batches gives.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ketch.recordbatch import assign, build_marker_batch, iter_headers, marker_is_commit
from replication.log import RetentionPolicy
from replication.partition import Partition
from replication.rocks_log import RocksPartitionLog
from replication.rocks_store import NodeStore
from tests.batches import make_batch
from tests.harness import sigkill_after

PID = 3


def txn(at: int, pid: int, ts: int = 0, epoch: int = 0) -> bytes:
    return make_batch(
        at, 2, producer_id=pid, producer_epoch=epoch, base_sequence=0, transactional=True, timestamp_ms=ts
    )


def marker(at: int, pid: int, commit: bool, ts: int = 0, epoch: int = 1, leader_epoch: int = 0) -> bytes:
    return assign(build_marker_batch(pid, epoch, commit, 0, ts), at, leader_epoch)


def replay(log: RocksPartitionLog) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    """(pid -> open transaction's first offset, aborted (marker offset, pid, first offset))."""
    data = log.read(log.log_start_offset, 1 << 40) if log.log_end_offset > log.log_start_offset else b""
    open_first: dict[int, int] = {}
    aborted = []
    at = 0
    for h in iter_headers(data):
        raw = data[at : at + h.size]
        at += h.size
        if h.is_control:
            first = open_first.pop(h.producer_id, None)
            if first is not None and not marker_is_commit(raw):
                aborted.append((h.base_offset, h.producer_id, first))
        elif h.is_transactional:
            open_first.setdefault(h.producer_id, h.base_offset)
    return open_first, aborted


def state(log: RocksPartitionLog) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
    table = log.producer_state.entries
    open_first = {pid: e.txn_first_offset for pid, e in table.items() if e.in_transaction}
    return open_first, [(t.last_offset, t.producer_id, t.first_offset) for t in log.aborted_index()]


def test_the_index_survives_reopen_truncation_and_retention(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        log.append([txn(0, 1, ts=1), txn(2, 2, ts=1)])
        log.append([marker(4, 1, False, ts=2)], sync=True)  # abort pid 1: (1, 0, 4)
        log.append([marker(5, 2, True, ts=3), txn(6, 1, ts=4, epoch=1)])
        log.append([marker(8, 1, False, ts=5, epoch=2)])  # abort pid 1: (1, 6, 8)
        assert state(log) == ({}, [(4, 1, 0), (8, 1, 6)])
    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        assert state(log) == ({}, [(4, 1, 0), (8, 1, 6)])
        log.truncate_to(8)  # the second abort goes; pid 1's transaction is open again
        assert state(log) == ({1: 6}, [(4, 1, 0)]) == replay(log)
        part = Partition("t", 0, log)
        part.become_leader(1, (1,), (1,), 1, 1, lag_time_max_ms=1000, now_ms=0)
        assert part.last_stable_offset == 6
    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        assert state(log) == ({1: 6}, [(4, 1, 0)])
        log.apply_retention(RetentionPolicy(retention_ms=1), now_ms=4)  # drops the batches at ts <= 2
        assert log.log_start_offset == 5 and state(log) == ({1: 6}, [])
    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        assert state(log) == ({1: 6}, [])
        log.append([marker(8, 1, False, epoch=2, leader_epoch=1)])
        assert state(log) == ({}, [(8, 1, 6)])
        store.drop_partition(PID)
    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        assert (log.log_end_offset, state(log)) == (0, ({}, []))
        assert list(store.cf["txnindex"].keys()) == []


def test_reset_clears_the_index(tmp_path: Path) -> None:
    with NodeStore.open(str(tmp_path / "db")) as store:
        log = store.partition_log(PID)
        log.append([txn(0, 1), marker(2, 1, False)])
        assert state(log) == ({}, [(2, 1, 0)])
        log.reset_to(10)
        assert state(log) == ({}, [])
        log.append([txn(10, 1), marker(12, 1, False)])
        assert state(log) == ({}, [(12, 1, 10)])


def child_main(path: str) -> None:
    log = NodeStore.open(path).partition_log(PID, snapshot_interval=7)
    epoch = dict.fromkeys((1, 2, 3), 0)
    for j in range(10**9):
        if j % 53 == 52:
            log.truncate_to(max(log.log_end_offset - 7, 0))
        pid = 1 + j % 3
        end = log.log_end_offset
        if j % 5 in (3, 4):
            epoch[pid] += 1
            batch = marker(end, pid, j % 5 == 3, ts=j, epoch=epoch[pid])
        else:
            batch = txn(end, pid, ts=j, epoch=epoch[pid])
        log.append([batch], sync=j % 10 == 0)
        sys.stdout.write(f"{j} {log.log_end_offset}\n")
        sys.stdout.flush()


@pytest.mark.timeout(60)
def test_the_index_survives_sigkill_and_matches_the_batches(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    code = f"from tests.test_txn_rocks import child_main; child_main({db!r})"
    last = int(sigkill_after(code, 1200)[-1].split()[1])
    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        assert log.log_end_offset >= last
        open_first, aborted = replay(log)
        assert state(log) == (open_first, aborted) and aborted
