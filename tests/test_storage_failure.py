"""A full disk, for real: RocksDB on a small tmpfs (needs root to mount it, as the chaos
suite's disk-full fault does), filled with chaos.faults.fill.

What is pinned here: a failed write is KAFKA_STORAGE_ERROR and changes nothing; RocksDB
keeps refusing writes after the space is freed (the reason a node stops on a storage
failure, replication/rocks_store.py), and reopening recovers every acknowledged record;
a real node whose disk fills answers the produce with KAFKA_STORAGE_ERROR, stops with
exit status 1 instead of staying up as a leader that refuses every write, and serves
everything it acknowledged once restarted with room on the disk.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ketch
from chaos.cluster import tmpfs
from chaos.faults import fill
from ketch import NewTopic, TopicPartition
from ketch.errors import ErrorCode, KetchError
from replication.rocks_store import NodeStore
from tests.batches import make_batch
from tests.harness import start_node

PID = 3
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "disk", 16) as path:
        yield path


def test_a_failed_write_changes_nothing_and_only_reopening_recovers(small_disk: Path) -> None:
    path = str(small_disk / "db")
    failures: list[KetchError] = []
    store = NodeStore.open(path)
    try:
        store.on_failure = failures.append
        log = store.partition_log(PID)
        log.append([make_batch(0, 3)], sync=True)
        filler = small_disk / "filler"
        fill(str(filler))
        end = log.log_end_offset
        with pytest.raises(KetchError) as err:  # RocksDB may have room preallocated for a few
            for _ in range(10_000):
                log.append([make_batch(end, 50)], sync=True)
                end = log.log_end_offset
        assert err.value.code == ErrorCode.KAFKA_STORAGE_ERROR and "No space left" in err.value.message
        assert log.log_end_offset == end  # nothing of the failed append is visible
        assert failures == [err.value] and store.failure is err.value

        filler.unlink()
        with pytest.raises(KetchError):  # room again, yet RocksDB still refuses: its error is sticky
            log.append([make_batch(end, 1)], sync=True)
        assert log.log_end_offset == end and len(failures) == 1  # reported once
    finally:
        store.close()
    with NodeStore.open(path) as store:  # reopening replays the WAL and clears the error
        log = store.partition_log(PID)
        assert log.log_end_offset == end and store.failure is None
        log.append([make_batch(end, 2)], sync=True)
        assert log.log_end_offset == end + 2


def test_a_node_whose_disk_fills_stops_and_restarts_with_every_acknowledged_record(tmp_path: Path) -> None:
    """Suite time: kept as is (~9 s on 2 cores): the only test of a real node on a full disk."""
    data_dir = tmp_path / "node-1"
    with tmpfs(data_dir / "rocksdb", 32), contextlib.ExitStack() as cleanup:  # node.log stays on the real disk
        node = start_node(tmp_path)
        cleanup.callback(node.close)
        with ketch.Admin(node.bootstrap) as admin:
            admin.create_topics([NewTopic("t", 1, 1)])
        acked: list[bytes] = []
        with ketch.Producer(node.bootstrap, acks="all", retries=0, linger_ms=0) as producer:
            for i in range(20):
                producer.send("t", b"before-%d" % i).get(10)
                acked.append(b"before-%d" % i)
            fill(str(data_dir / "rocksdb" / "filler"))
            value = b"x" * 4096
            with pytest.raises(KetchError) as err:
                for i in range(5_000):
                    producer.send("t", value + b"%d" % i).get(10)
                    acked.append(value + b"%d" % i)
            assert err.value.code == ErrorCode.KAFKA_STORAGE_ERROR and "No space left" in str(err.value)

        assert node.proc is not None
        deadline = time.monotonic() + 30
        while node.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert node.proc.returncode == 1, node.log_text()[-3000:]
        assert "storage failed, stopping the node" in node.log_text()

        (data_dir / "rocksdb" / "filler").unlink()
        node.start()
        node.wait_broker_alive()
        with ketch.Consumer(bootstrap_servers=node.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([TopicPartition("t", 0)])
            got: list[bytes] = []
            deadline = time.monotonic() + 20
            while len(got) < len(acked) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=200).values():
                    got.extend(r.value or b"" for r in records)
        assert got[: len(acked)] == acked
