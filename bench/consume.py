"""Consumer throughput, in the manner of kafka-consumer-perf-test.

What it does: one ``ketch.aio.Consumer`` is assigned every partition of a
topic (no consumer group), starts at the earliest offset (``--from-beginning``,
the default) or at the end, and polls until it has read ``messages`` records,
or until ``timeout_ms`` passes without a new record. Without ``--messages``
it reads what the topic holds when the tool starts (end minus start offsets).

What it measures:
- **records** and **bytes** (key plus value of every record, as Kafka counts);
  MB is 2**20 bytes.
- **elapsed** = time from ``assign()`` (when the consumer starts fetching)
  to the poll that returned the last record counted. Metadata and offset
  lookups happen before the clock starts; an idle wait at the end, up to
  ``timeout_ms``, is not counted. Rates are records and MB divided by that.
- **first record** = time from ``assign()`` to the first record returned:
  mostly the first fetch round trip.

Polls ask for at most ``max_poll_records`` records (the client's default,
500, as Kafka's ``max.poll.records``), so the client can prefetch the next
batches while the tool counts the current ones.

There is no per-record latency for a consumer here: records were written
before they are read, so what counts is how fast the client fetches and
decodes batches. A progress line covers each ``report_interval`` window.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO

from bench.stats import MB, ConsumeResult, consume_result
from ketch.tls import PLAINTEXT, SecurityConfig


@dataclass(frozen=True)
class ConsumeConfig:
    topic: str
    bootstrap: str
    messages: int | None = None
    from_beginning: bool = True
    timeout_ms: int = 10000
    report_interval: float = 5.0
    security: SecurityConfig = PLAINTEXT


class ConsumeTimeout(Exception):
    """Fewer records than asked for arrived before ``timeout_ms`` of silence."""


async def run_consume(cfg: ConsumeConfig, out: TextIO | None = None) -> ConsumeResult:
    """Run the benchmark; progress and summary lines go to ``out`` (stdout).

    Raises ``ConsumeTimeout`` (after printing the figures so far) when the
    topic goes quiet for ``timeout_ms`` before ``messages`` records were read.
    """
    from ketch.aio import Admin, Consumer
    from ketch.records import TopicPartition

    out = out if out is not None else sys.stdout
    async with Admin(bootstrap_servers=cfg.bootstrap, **cfg.security.client_kwargs()) as admin:
        (description,) = await admin.describe_topics([cfg.topic])  # typed error if missing
    tps = [TopicPartition(cfg.topic, p.partition) for p in description.partitions]
    consumer = Consumer(
        bootstrap_servers=cfg.bootstrap,
        auto_offset_reset="earliest" if cfg.from_beginning else "latest",
        **cfg.security.client_kwargs(),
    )
    try:
        await consumer.start()
        target = cfg.messages
        if target is None:
            if not cfg.from_beginning:
                raise ValueError("without --from-beginning, say how many records to wait for (--messages)")
            ends = await consumer.end_offsets(tps)
            starts = await consumer.beginning_offsets(tps)
            target = sum(ends[tp] - starts[tp] for tp in tps)
            print(f"reading the {target} records {cfg.topic} holds", file=out, flush=True)
        timeout = cfg.timeout_ms / 1000
        limit = consumer.max_poll_records
        clock = time.perf_counter
        count = size = 0
        start = window_start = last = clock()
        await consumer.assign(tps)  # the fetcher starts fetching now
        window_count = window_bytes = 0  # count and size when the window started
        first: float | None = None
        while count < target:
            batch = await consumer.poll(timeout_ms=100, max_records=min(target - count, limit))
            now = clock()
            if not batch:
                if now - last >= timeout:
                    break
                continue
            for records in batch.values():
                count += len(records)
                for r in records:
                    size += (len(r.value) if r.value is not None else 0) + (len(r.key) if r.key is not None else 0)
            if first is None:
                first = now - start
            last = now
            if now - window_start >= cfg.report_interval:
                elapsed = now - window_start
                n, b = count - window_count, size - window_bytes
                print(
                    f"{n} records consumed, {n / elapsed:.1f} records/sec ({b / elapsed / MB:.2f} MB/sec).",
                    file=out,
                    flush=True,
                )
                window_start, window_count, window_bytes = now, count, size
    finally:
        await consumer.close()
    result = consume_result(count, size, last - start, first or 0.0)
    print(result.line(), file=out, flush=True)
    if count < target:
        raise ConsumeTimeout(
            f"exiting after {count} of {target} records: no record arrived for {cfg.timeout_ms} ms (--timeout-ms)"
        )
    return result
