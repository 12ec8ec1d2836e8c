"""The producer's accumulator: batching, readiness, draining, retries, memory."""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

from ketch._future import FutureRecordMetadata
from ketch.aio.accumulator import Accumulator, ProducerBatch
from ketch.aio.connection import Broker, Cluster, PartitionInfo, TopicInfo
from ketch.errors import RequestTimedOutError, UnknownTopicOrPartitionError
from ketch.partitioner import StickyPartitioner, key_partition
from ketch.records import RecordMetadata, decode_batches


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def topic(name: str = "t", partitions: int = 3, leaders: list[int] | None = None) -> TopicInfo:
    leaders = leaders or [1] * partitions
    return TopicInfo.make(name, 0, "", "id", {i: PartitionInfo(i, leaders[i], 0) for i in range(partitions)})


def cluster(*topics: TopicInfo) -> Cluster:
    brokers = {1: Broker(1, "h1", 1), 2: Broker(2, "h2", 2)}
    return Cluster("c", 1, brokers, {t.name: t for t in topics}, 1.0)


def make(linger_ms: float = 5, batch_size: int = 1024, **kw: Any) -> tuple[Accumulator, Clock, list[int]]:
    clock = Clock()
    acc = Accumulator(batch_size, 0, linger_ms, partitioner=StickyPartitioner(random.Random(1)), clock=clock, **kw)
    wakes: list[int] = []
    acc.wakeup = lambda: wakes.append(1)
    return acc, clock, wakes


def always(node: int) -> bool:
    return True


def test_records_fill_batches_of_batch_size() -> None:
    acc, clock, wakes = make(batch_size=1024)
    t = topic(partitions=1)
    futures = [FutureRecordMetadata() for _ in range(40)]
    for i, fut in enumerate(futures):
        acc.append(t, 0, None, b"x" * 100, [], 1000 + i, fut)
    out, next_in, unknown = acc.drain(cluster(t), always, 1 << 20, clock.now)
    full = out[1]
    assert not unknown and len(full) >= 4  # every batch but the open last one is ready
    assert all(b.size() <= 1024 for b in full)
    assert next_in is not None and 0 < next_in <= 0.005  # the open batch lingers
    assert len(wakes) == len(full) + 1  # one wake per opened batch
    clock.now += 0.005
    rest, _, _ = acc.drain(cluster(t), always, 1 << 20, clock.now)
    batches = full + rest[1]
    assert sum(b.record_count for b in batches) == 40
    # offsets are base + index; the decoded batch holds exactly the values sent
    base = 0
    for b in batches:
        b.complete(base)
        decoded = decode_batches("t", 0, b.buffer or b"", 0)
        assert [r.offset for r in decoded.records] == list(range(b.record_count))
        base += b.record_count
    assert [f.result(0) for f in futures] == [RecordMetadata("t", 0, i, 1000 + i) for i in range(40)]


def test_linger_flush_and_close_make_batches_ready() -> None:
    acc, clock, _ = make(linger_ms=50)
    t = topic(partitions=1)
    acc.append(t, 0, None, b"v", [], None, FutureRecordMetadata())
    assert acc.drain(cluster(t), always, 1 << 20, clock.now)[0] == {}
    acc.flushing += 1
    assert len(acc.drain(cluster(t), always, 1 << 20, clock.now)[0][1]) == 1
    acc.flushing -= 1
    acc.append(t, 0, None, b"v", [], None, FutureRecordMetadata())
    clock.now += 0.049
    assert acc.drain(cluster(t), always, 1 << 20, clock.now)[0] == {}
    clock.now += 0.002
    assert len(acc.drain(cluster(t), always, 1 << 20, clock.now)[0][1]) == 1


def test_drain_groups_by_leader_and_respects_request_size_and_slots() -> None:
    acc, clock, _ = make(batch_size=300)
    t = topic(partitions=4, leaders=[1, 2, 1, -1])
    for p in range(4):
        for _ in range(8):  # 8 records of ~110 bytes: 3-4 batches per partition
            acc.append(t, p, None, b"y" * 100, [], None, FutureRecordMetadata())
    clock.now += 1
    out, _, unknown = acc.drain(cluster(t), lambda node: node == 1, 700, clock.now)
    assert unknown  # partition 3 has no leader
    assert set(out) == {1}  # broker 2 has no free in-flight slot
    assert sum(b.size() for b in out[1]) <= 700
    assert {b.tp.partition for b in out[1]} <= {0, 2}
    out2, _, _ = acc.drain(cluster(t), always, 1 << 20, clock.now)
    assert {b.tp.partition for b in out2[1]} == {0, 2} and {b.tp.partition for b in out2[2]} == {1}
    # a batch larger than the request limit still goes, alone
    one, _, _ = acc.drain(cluster(t), always, 1, clock.now)
    assert one == {}


def test_retry_goes_back_to_the_head_after_backoff() -> None:
    acc, clock, _ = make(batch_size=200, linger_ms=0)
    t = topic(partitions=1)
    for _ in range(4):
        acc.append(t, 0, None, b"z" * 100, [], None, FutureRecordMetadata())
    first = acc.drain(cluster(t), always, 150, clock.now)[0][1]
    assert len(first) == 1
    acc.reenqueue(first[0], retry_at=clock.now + 0.1)
    out, next_in, _ = acc.drain(cluster(t), always, 1 << 20, clock.now)
    assert out == {} and next_in is not None and abs(next_in - 0.1) < 1e-9  # order is kept: nothing overtakes
    clock.now += 0.1
    again = acc.drain(cluster(t), always, 1 << 20, clock.now)[0][1]
    assert again[0] is first[0] and [b.seq for b in again] == sorted(b.seq for b in again)


def test_expire_and_abort_fail_futures() -> None:
    acc, clock, _ = make()
    t = topic(partitions=1)
    fut = FutureRecordMetadata()
    acc.append(t, 0, None, b"v", [], None, fut)
    clock.now += 10
    (expired,) = acc.expire(clock.now, deadline=5)
    acc.finish(expired, None, RequestTimedOutError("expired"))
    assert isinstance(fut.exception(0), RequestTimedOutError)
    assert acc.buffered_bytes == 0 and not acc.incomplete
    other = FutureRecordMetadata()
    acc.append(t, 0, None, b"v", [], None, other)
    acc.abort_all(RequestTimedOutError("closed"))
    assert other.done() and not acc.has_queued()


def test_bad_partition_fails_at_once() -> None:
    acc, _, _ = make()
    fut = FutureRecordMetadata()
    acc.append(topic(partitions=2), 5, None, b"v", [], None, fut)
    err = fut.exception(0)
    assert isinstance(err, UnknownTopicOrPartitionError) and "0..1" in str(err)


def test_keyed_records_use_murmur2_and_null_keys_stick() -> None:
    acc, clock, _ = make(batch_size=250)
    t = topic(partitions=5)
    for i in range(20):
        acc.append(t, None, b"key-%d" % i, b"v", [], None, FutureRecordMetadata())
    acc.flushing = 1
    out = acc.drain(cluster(t), always, 1 << 20, clock.now)[0][1]
    for b in out:
        for r in decode_batches("t", b.tp.partition, b.close(), 0).records:
            assert key_partition(r.key or b"", 5) == b.tp.partition
    # null keys: one partition per batch; a new batch moves to another partition
    acc, clock, _ = make(batch_size=400)
    for _ in range(18):
        acc.append(t, None, None, b"n" * 100, [], None, FutureRecordMetadata())
    clock.now += 1
    batches = acc.drain(cluster(t), always, 1 << 20, clock.now)[0][1]
    parts = [b.tp.partition for b in sorted(batches, key=lambda b: b.seq)]
    assert len(parts) >= 5 and all(a != b for a, b in itertools.pairwise(parts))
    assert all(b.record_count == 3 for b in batches)


def test_appends_from_many_threads_lose_nothing() -> None:
    acc, clock, _ = make(batch_size=4096)
    t = topic(partitions=3)
    per_thread = 2000
    futures: list[list[FutureRecordMetadata]] = [[] for _ in range(4)]
    drained: list[ProducerBatch] = []
    stop = threading.Event()

    def producer(k: int) -> None:
        for i in range(per_thread):
            fut = FutureRecordMetadata()
            futures[k].append(fut)
            acc.append(t, None, b"%d-%d" % (k, i), b"v" * 20, [], None, fut)

    def sender() -> None:
        while not stop.is_set():
            for batches in acc.drain(cluster(t), always, 1 << 20, clock.now)[0].values():
                drained.extend(batches)

    threads = [threading.Thread(target=producer, args=(k,)) for k in range(4)]
    drainer = threading.Thread(target=sender)
    drainer.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    drainer.join()
    acc.flushing = 1
    for batches in acc.drain(cluster(t), always, 1 << 30, clock.now)[0].values():
        drained.extend(batches)
    assert sum(b.record_count for b in drained) == 4 * per_thread
    for b in drained:
        acc.finish(b, 0, None)
    assert acc.buffered_bytes == 0
    assert all(f.done() for fs in futures for f in fs)


def test_memory_limit_blocks_until_space() -> None:
    acc, clock, _ = make(buffer_memory=1000)
    t = topic(partitions=1)
    for _ in range(10):
        acc.append(t, 0, None, b"m" * 100, [], None, FutureRecordMetadata())
    assert acc.buffered_bytes >= 1000
    assert not acc.wait_for_space(0.01)
    clock.now += 1
    batches = acc.drain(cluster(t), always, 1 << 20, clock.now)[0][1]

    def release() -> None:
        for b in batches:
            acc.finish(b, 0, None)

    threading.Timer(0.05, release).start()
    assert acc.wait_for_space(5)
    assert acc.buffered_bytes == 0
