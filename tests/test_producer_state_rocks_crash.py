"""The RocksDB producer state under kill -9: rows written in the same WriteBatch as the batches.

A child process appends idempotent batches of three producers to a NodeStore (mostly unsynced,
a truncation now and then, a small snapshot interval) and prints one line per call after it
returned. The test SIGKILLs it mid-stream, reopens the store and checks that the producer table
read back from the rows is exactly what a rebuild from the surviving batches gives, and that every
acknowledged batch is there.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ketch.recordbatch import iter_headers
from replication.producer_state import ProducerStateTable
from replication.rocks_store import NodeStore
from tests.batches import make_batch
from tests.harness import sigkill_after

ACKED = 1500
PID = 4


def child_main(path: str) -> None:
    log = NodeStore.open(path).partition_log(PID, snapshot_interval=7)
    seq = dict.fromkeys((1, 2, 3), 0)
    for j in range(10**9):
        if j % 97 == 96:  # a divergent suffix: the producers lose their last batches and bump
            log.truncate_to(max(log.log_end_offset - 5, 0))
            for pid in seq:
                seq[pid] = 0
            epoch_bump = True
        else:
            epoch_bump = False
        pid = 1 + j % 3
        count = 1 + j % 4
        epoch = j // 97 + (1 if epoch_bump else 0)
        batch = make_batch(
            log.log_end_offset, count, producer_id=pid, producer_epoch=epoch, base_sequence=seq[pid], timestamp_ms=j
        )
        log.append([batch], sync=j % 10 == 0)
        seq[pid] += count
        sys.stdout.write(f"{j} {log.log_end_offset}\n")
        sys.stdout.flush()


@pytest.mark.timeout(60)
def test_producer_rows_survive_sigkill_and_match_the_batches(tmp_path: Path) -> None:
    db = str(tmp_path / "db")
    code = f"from tests.test_producer_state_rocks_crash import child_main; child_main({db!r})"
    last = int(sigkill_after(code, ACKED)[-1].split()[1])

    with NodeStore.open(db) as store:
        log = store.partition_log(PID)
        assert log.log_end_offset >= last
        rebuilt = ProducerStateTable()
        rebuilt.apply(iter_headers(log.read(0, 1 << 40)))
        assert log.producer_state == rebuilt and len(rebuilt) == 3
        assert all(o <= log.log_end_offset for o in log.producer_snapshot_offsets())
