"""A token bucket of replication bytes: the leader's reassignment throttle (pure).

Kafka's ``leader.replication.throttled.rate`` (a ``ReplicationQuotaManager``)
in small: a leader serves the fetches of replicas a reassignment is adding
(and that are not in the ISR yet) from one bucket per broker, so a move cannot
take the bandwidth producers and in-sync followers need.

Rules:
- ``rate`` is bytes per second; the bucket holds at most one second of it
  (``rate`` bytes) and starts full. Time (``now_ms``, monotonic) only moves
  forward: an older ``now_ms`` refills nothing.
- ``allowance(now_ms)`` is what a read may take now: the whole tokens when
  there are any, else 0 (serve nothing this time; the fetch long-polls and
  asks again). A positive allowance smaller than a batch still returns that
  one whole batch — the log reads whole batches — so a follower always
  progresses while the rate is positive.
- ``take(n, now_ms)`` spends what a read returned. The bucket may go negative
  by that one batch's overshoot; nothing more is served until it refills above
  zero. So over any span of T ms a bucket serves at most
  ``rate * (1 + T / 1000)`` bytes plus one batch.
"""

from __future__ import annotations


class TokenBucket:
    def __init__(self, rate: int, now_ms: int) -> None:
        if rate <= 0:
            raise ValueError(f"a token bucket needs a positive rate, got {rate} (0 means: no bucket)")
        self.rate = rate
        self.tokens = float(rate)
        self._last_ms = now_ms

    def _refill(self, now_ms: int) -> None:
        if now_ms > self._last_ms:
            self.tokens = min(float(self.rate), self.tokens + self.rate * (now_ms - self._last_ms) / 1000)
            self._last_ms = now_ms

    def allowance(self, now_ms: int) -> int:
        """Bytes a read may take now (0: none)."""
        self._refill(now_ms)
        return max(int(self.tokens), 0)

    def take(self, n: int, now_ms: int) -> None:
        """Spend ``n`` bytes that were served."""
        self._refill(now_ms)
        self.tokens -= n
