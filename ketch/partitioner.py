"""Kafka's default partitioner: murmur2 for keys, sticky for null keys.

Rules (the same as the Java client, so a key lands on the same partition
whichever Kafka-compatible client wrote it):
- A record with a key goes to ``(murmur2(key) & 0x7fffffff) % num_partitions``,
  over *all* partitions, available or not: the mapping must not change while a
  leader is down.
- A record with no key (and no explicit partition) follows KIP-480's sticky
  partitioner: every null-key record of a topic goes to the topic's current
  sticky partition until the producer has to open a new batch there (the
  previous one filled up or was sent); then a new partition is chosen at
  random among those with a leader, different from the previous one when
  there is a choice. This fills batches instead of spreading records thinly.

``murmur2`` returns Java's signed 32-bit result (``Utils.murmur2``).
The partitioner is pure: its ``random.Random`` is injected (the producer's
accumulator makes one), and the producer calls it under the accumulator lock.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import random

__all__ = ["StickyPartitioner", "key_partition", "murmur2"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes | bytearray | memoryview) -> int:
    """MurmurHash2 as Kafka computes it (seed 0x9747b28c), signed 32-bit."""
    data = bytes(data)
    length = len(data)
    h = (_SEED ^ length) & _MASK
    n4 = length // 4
    if n4:
        for k in struct.unpack_from(f"<{n4}I", data):
            k = (k * _M) & _MASK
            k ^= k >> 24
            k = (k * _M) & _MASK
            h = ((h * _M) & _MASK) ^ k
    rest = length & 3
    tail = n4 * 4
    if rest == 3:
        h ^= data[tail + 2] << 16
    if rest >= 2:
        h ^= data[tail + 1] << 8
    if rest >= 1:
        h ^= data[tail]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes | bytearray | memoryview, num_partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class StickyPartitioner:
    """Per-topic sticky partition for null-key records (KIP-480)."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._sticky: dict[str, int] = {}

    def partition(self, topic: str, num_partitions: int, available: Sequence[int]) -> int:
        """The topic's current sticky partition (choosing one the first time)."""
        p = self._sticky.get(topic)
        if p is None or p >= num_partitions:
            p = self._choose(num_partitions, available, previous=None)
            self._sticky[topic] = p
        return p

    def on_new_batch(self, topic: str, num_partitions: int, available: Sequence[int], previous: int) -> int:
        """A new batch is needed for ``previous``: move to another partition."""
        if self._sticky.get(topic, previous) != previous:
            return self._sticky[topic]  # someone already moved on
        p = self._choose(num_partitions, available, previous)
        self._sticky[topic] = p
        return p

    def _choose(self, num_partitions: int, available: Sequence[int], previous: int | None) -> int:
        pool = [p for p in available if p < num_partitions] or list(range(num_partitions))
        if len(pool) > 1 and previous is not None:
            pool = [p for p in pool if p != previous]
        return pool[self._rng.randrange(len(pool))]
