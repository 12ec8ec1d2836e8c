"""The produce purgatory: wait until the ISR holds an acks=all append (Kafka's DelayedProduce).

Used by Produce (node/service.py) and by the group coordinator's writes to
``__consumer_offsets`` (node/group_coordinator.py).

Rules (``await_replication``):
- Returns once the high watermark passes ``last_offset``.
- Fails with NOT_LEADER_OR_FOLLOWER if this replica stops leading first
  (never succeeds after a leadership change: the new leader may not have the
  records), with NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR shrank below
  ``min.insync.replicas`` before the records were replicated (Kafka's rule: a
  high watermark reached by fewer replicas is no promise), and with
  REQUEST_TIMED_OUT after ``timeout_ms`` (30 s when not positive).
- It sleeps in the fetch waiters (node/fetch_waiters.py), woken by every
  append and high-watermark move of the partition.
"""

from __future__ import annotations

import time

from ketch.errors import ErrorCode, KetchError
from node.fetch_waiters import FetchWaiters
from node.metrics import NodeMetrics
from replication.partition import Partition


async def await_replication(
    part: Partition, last_offset: int, timeout_ms: int, min_isr: int, waiters: FetchWaiters, metrics: NodeMetrics
) -> None:
    epoch = part.leader_epoch
    deadline = time.monotonic() + (timeout_ms if timeout_ms > 0 else 30_000) / 1000
    key = (part.topic, part.index)
    metrics.produce_waiting.inc()
    try:
        while part.high_watermark <= last_offset or not part.is_leader or part.leader_epoch != epoch:
            if not part.is_leader or part.leader_epoch != epoch:
                raise KetchError(
                    f"{part.topic}-{part.index}: leadership moved before offset {last_offset} was replicated; "
                    "the write may or may not survive — retry at the new leader",
                    code=ErrorCode.NOT_LEADER_OR_FOLLOWER,
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or waiters.closed:
                raise KetchError(
                    f"{part.topic}-{part.index}: offset {last_offset} not replicated to the ISR "
                    f"{list(part.leader.isr) if part.leader else []} within {timeout_ms} ms",
                    code=ErrorCode.REQUEST_TIMED_OUT,
                )
            await waiters.wait_any([key], remaining)
        if part.isr_size < min_isr:
            raise KetchError(
                f"{part.topic}-{part.index}: offset {last_offset} is written but the ISR shrank to "
                f"{part.isr_size} replica(s), below min.insync.replicas={min_isr}",
                code=ErrorCode.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
            )
    finally:
        metrics.produce_waiting.dec()
