"""ReplicationThrottle: a leader limits what it sends to replicas a reassignment is adding.

The rule of who is throttled is ``is_throttled`` (coordinator/metadata/
reassignment.py: an adding replica not yet in the ISR, read from this
broker's image); the bucket is replication/throttle.py. This driver only
joins them for the Fetch handler (node/service.py): ``fetch_limit`` gives a
follower fetch its byte limit for one partition, ``served`` spends what the
read returned. The rate is the node setting ``reassignment_throttle_bytes``
(bytes/s for the whole broker, Kafka's ``leader.replication.throttled.rate``;
0 = unlimited). Counters for the metrics: bytes served to throttled replicas
and fetches answered empty because the bucket was empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from coordinator.metadata import MetadataImage
from coordinator.metadata.reassignment import is_throttled
from replication.throttle import TokenBucket


class ReplicationThrottle:
    def __init__(self, rate_bytes: int, clock_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000)) -> None:
        self.rate_bytes = rate_bytes
        self._clock_ms = clock_ms
        self._bucket = TokenBucket(rate_bytes, clock_ms()) if rate_bytes > 0 else None
        self.throttled_bytes = 0  # bytes served to throttled replicas
        self.delayed_fetches = 0  # throttled partition reads answered empty (the bucket was empty)

    def fetch_limit(
        self, image: MetadataImage, topic: str, partition: int, replica_id: int, max_bytes: int
    ) -> tuple[int, bool]:
        """(max bytes for this follower's read of ``topic``-``partition``, whether it is throttled)."""
        t = image.topic(topic)
        p = None if t is None else t.partitions.get(partition)
        if p is None or not is_throttled(p, replica_id):
            return max_bytes, False
        if self._bucket is None or max_bytes <= 0:
            return max_bytes, True
        allowance = self._bucket.allowance(self._clock_ms())
        if allowance <= 0:
            self.delayed_fetches += 1
        return min(max_bytes, allowance), True

    def served(self, n: int) -> None:
        """A throttled read returned ``n`` bytes."""
        self.throttled_bytes += n
        if self._bucket is not None and n:
            self._bucket.take(n, self._clock_ms())
