"""The produce purgatory: wait until the ISR holds an acks=all append (Kafka's DelayedProduce).

Used by Produce (node/service.py) and by the group coordinator's writes to
``__consumer_offsets`` (node/group_coordinator.py).

``await_replication`` asks replication/acks.py (whose docstring states the
rules: done, NOT_LEADER_OR_FOLLOWER, NOT_ENOUGH_REPLICAS_AFTER_APPEND,
REQUEST_TIMED_OUT) each time the partition moves, and raises its error as a
``KetchError``. The deadline is ``timeout_ms`` (30 s when not positive); a
closed set of waiters (the broker is stopping) counts as the deadline. It
sleeps in the fetch waiters (node/fetch_waiters.py), woken by every append
and high-watermark move of the partition.
"""

from __future__ import annotations

import time

from ketch.errors import KetchError
from node.fetch_waiters import FetchWaiters
from node.metrics import NodeMetrics
from replication.acks import acks_all_outcome
from replication.partition import Partition


async def await_replication(
    part: Partition, last_offset: int, timeout_ms: int, min_isr: int, waiters: FetchWaiters, metrics: NodeMetrics
) -> None:
    epoch = part.leader_epoch
    deadline = time.monotonic() + (timeout_ms if timeout_ms > 0 else 30_000) / 1000
    key = (part.topic, part.index)
    metrics.produce_waiting.inc()
    try:
        while True:
            remaining = deadline - time.monotonic()
            timed_out = remaining <= 0 or waiters.closed
            outcome = acks_all_outcome(part, epoch, last_offset, min_isr, timed_out=timed_out, timeout_ms=timeout_ms)
            if outcome is not None:
                break
            await waiters.wait_any([key], remaining)
        if outcome.error:
            raise KetchError(outcome.message, code=outcome.error)
    finally:
        metrics.produce_waiting.dec()
