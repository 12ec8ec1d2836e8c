"""The producer and the partitioner when a topic gains partitions (against test_client_errors.py's fake broker).

- Keyless records go to the new partitions once the producer's metadata is
  refreshed (``metadata_max_age_ms``): the sticky partitioner picks among the
  partitions the latest metadata lists.
- A record for a partition number the cached metadata lacks refreshes the
  metadata and waits for it (Kafka's ``waitOnMetadata``) instead of failing.
- Keyed records follow ``murmur2(key) % count`` over the new count, as in Kafka:
  adding partitions moves keys (the README says so).
"""

from __future__ import annotations

import asyncio
import random

from ketch.aio.accumulator import Accumulator
from ketch.partitioner import StickyPartitioner, key_partition
from tests.test_client_accumulator import topic
from tests.test_client_errors import FakeBroker, producer, run


def test_keyless_records_reach_new_partitions_after_a_refresh() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake, metadata_max_age_ms=200, linger_ms=0) as p:
            for i in range(20):
                await p.send_and_wait("t", f"a{i}".encode())
            assert {pt for (_, pt) in fake.next_offset} <= {0, 1}
            fake.topics["t"] = 4
            await asyncio.sleep(0.3)  # older than metadata_max_age_ms: the next send refreshes
            used: set[int] = set()
            for i in range(400):
                used.add((await p.send_and_wait("t", f"b{i}".encode())).partition)
                if {2, 3} <= used:
                    break
            assert {2, 3} <= used

    run(body)


def test_a_partition_missing_from_cached_metadata_is_waited_for() -> None:
    async def body(fake: FakeBroker) -> None:
        async with producer(fake, max_block_ms=5000) as p:
            await p.send_and_wait("t", b"v", partition=1)
            calls = fake.metadata_calls

            async def grow() -> None:
                await asyncio.sleep(0.2)
                fake.topics["t"] = 3

            grower = asyncio.ensure_future(grow())
            meta = await p.send_and_wait("t", b"w", partition=2)
            await grower
            assert meta.partition == 2 and fake.metadata_calls > calls + 1

    run(body)


def test_the_accumulator_uses_the_partition_count_it_is_given() -> None:
    acc = Accumulator(64, 0, 0, partitioner=StickyPartitioner(random.Random(3)))
    acc.wakeup = lambda: None
    small, big = topic(partitions=2), topic(partitions=4)
    for _ in range(50):
        acc.append(small, None, None, b"x" * 40, [], None, None)
    assert {tp.partition for tp in acc._deques} <= {0, 1}
    for _ in range(200):
        acc.append(big, None, None, b"x" * 40, [], None, None)
    assert {2, 3} <= {tp.partition for tp in acc._deques}
    keys = [f"k{i}".encode() for i in range(100)]
    moved = [k for k in keys if key_partition(k, 2) != key_partition(k, 4)]
    assert moved and all(key_partition(k, 4) in (key_partition(k, 2), key_partition(k, 2) + 2) for k in keys)
