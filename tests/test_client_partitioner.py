"""Kafka's default partitioner: murmur2 vectors and KIP-480 sticky choice."""

from __future__ import annotations

import os
import random

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2

from ketch.partitioner import StickyPartitioner, key_partition, murmur2

# org.apache.kafka.common.utils.UtilsTest#testMurmur2
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("data", "expected"), KAFKA_VECTORS.items())
def test_murmur2_matches_java(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


# kafka-python / aiokafka test_murmur2_java_compatibility: partition over 1000
@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_key_partition_matches_java_client(key: bytes, partition: int) -> None:
    assert key_partition(key, 1000) == partition


def test_murmur2_agrees_with_aiokafka_on_random_input() -> None:
    rng = random.Random(7)
    for _ in range(500):
        data = os.urandom(rng.randrange(0, 40))
        theirs = aiokafka_murmur2(data)
        assert murmur2(data) == (theirs - (1 << 32) if theirs >= 1 << 31 else theirs)


def test_key_partition_is_stable_and_in_range() -> None:
    for n in (1, 3, 7, 64):
        for i in range(200):
            key = b"user-%d" % i
            p = key_partition(key, n)
            assert 0 <= p < n and p == key_partition(bytearray(key), n)


def test_sticky_partition_holds_until_a_new_batch() -> None:
    sticky = StickyPartitioner(random.Random(1))
    first = sticky.partition("t", 6, range(6))
    assert all(sticky.partition("t", 6, range(6)) == first for _ in range(50))
    second = sticky.on_new_batch("t", 6, range(6), first)
    assert second != first
    assert sticky.partition("t", 6, range(6)) == second
    # a stale report about the old partition does not move it again
    assert sticky.on_new_batch("t", 6, range(6), first) == second
    # topics are independent
    assert 0 <= sticky.partition("other", 2, range(2)) < 2


def test_sticky_prefers_partitions_with_a_leader() -> None:
    sticky = StickyPartitioner(random.Random(3))
    seen = set()
    previous = sticky.partition("t", 5, [1, 3])
    seen.add(previous)
    for _ in range(40):
        previous = sticky.on_new_batch("t", 5, [1, 3], previous)
        seen.add(previous)
    assert seen == {1, 3}
    # nobody has a leader: any partition will do
    assert 0 <= StickyPartitioner(random.Random()).partition("u", 4, []) < 4
    # one partition: it stays
    single = StickyPartitioner(random.Random())
    assert single.on_new_batch("v", 1, [0], single.partition("v", 1, [0])) == 0


def test_sticky_spreads_over_all_partitions() -> None:
    sticky = StickyPartitioner(random.Random(5))
    p = sticky.partition("t", 4, range(4))
    counts = [0] * 4
    for _ in range(400):
        p = sticky.on_new_batch("t", 4, range(4), p)
        counts[p] += 1
    assert all(c > 50 for c in counts), counts
