"""The reassignment throttle: the token bucket (replication/throttle.py) and who it applies to
(node/replication_throttle.py over reassignment.is_throttled)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.metadata import MetadataImage, PartitionRegistration, TopicImage
from node.replication_throttle import ReplicationThrottle
from replication.throttle import TokenBucket


def test_the_bucket_starts_full_refills_at_the_rate_and_may_owe_one_batch() -> None:
    b = TokenBucket(1000, now_ms=0)
    assert b.allowance(0) == 1000
    b.take(1500, 0)  # one whole batch larger than the allowance
    assert b.allowance(0) == 0 and b.allowance(400) == 0  # still owes 100 bytes
    assert b.allowance(600) == 100
    assert b.allowance(10_000) == 1000  # never more than one second of tokens
    b.take(10, 5_000)  # an older time refills nothing
    assert b.allowance(10_000) == 990
    with pytest.raises(ValueError, match="positive rate"):
        TokenBucket(0, 0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 10_000),
    steps=st.lists(
        st.tuples(st.integers(0, 2_000), st.lists(st.integers(1, 5_000), min_size=1, max_size=5)), max_size=60
    ),
)
def test_served_bytes_stay_within_the_rate_and_a_positive_allowance_always_serves_a_batch(
    rate: int, steps: list[tuple[int, list[int]]]
) -> None:
    """A reader that asks every ``advance`` ms for the next batches (whole batches, at least one
    while the allowance is positive) is served at most rate * (1 + T/1000) plus one batch."""
    bucket = TokenBucket(rate, now_ms=0)
    now = served = 0
    biggest = 0
    for advance, batches in steps:
        now += advance
        allowance = bucket.allowance(now)
        taken = 0
        for size in batches:
            if allowance <= 0 or (taken and taken + size > allowance):
                break
            taken += size
        assert (taken > 0) == (allowance > 0)
        bucket.take(taken, now)
        served += taken
        biggest = max(biggest, *batches)
        assert served <= rate * (1 + now / 1000) + biggest
        assert -biggest <= bucket.tokens <= rate


def image_with(p: PartitionRegistration) -> MetadataImage:
    return MetadataImage(offset=1, topics={"T": TopicImage("T", "t", partitions={0: p})})


def test_only_adding_replicas_outside_the_isr_are_throttled() -> None:
    now = [0]
    throttle = ReplicationThrottle(1000, clock_ms=lambda: now[0])
    moving = image_with(PartitionRegistration((2, 3, 4, 1), (1, 2, 3), 1, adding=(4,), removing=(1,)))
    assert throttle.fetch_limit(moving, "t", 0, 2, 1 << 20) == (1 << 20, False)  # an ISR member
    assert throttle.fetch_limit(moving, "t", 0, 4, 1 << 20) == (1000, True)
    assert throttle.fetch_limit(moving, "other", 0, 4, 1 << 20) == (1 << 20, False)
    throttle.served(1200)
    assert throttle.fetch_limit(moving, "t", 0, 4, 1 << 20) == (0, True) and throttle.delayed_fetches == 1
    now[0] = 500
    assert throttle.fetch_limit(moving, "t", 0, 4, 1 << 20) == (300, True)
    joined = image_with(PartitionRegistration((2, 3, 4, 1), (1, 2, 3, 4), 1, adding=(4,), removing=(1,)))
    assert throttle.fetch_limit(joined, "t", 0, 4, 1 << 20) == (1 << 20, False)  # in sync: never held back
    unlimited = ReplicationThrottle(0)
    assert unlimited.fetch_limit(moving, "t", 0, 4, 1 << 20) == (1 << 20, True)
    unlimited.served(5000)
    assert unlimited.throttled_bytes == 5000 and throttle.throttled_bytes == 1200
