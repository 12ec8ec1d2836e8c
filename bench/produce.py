"""Producer throughput and latency, in the manner of kafka-producer-perf-test.

What it does: one ``ketch.aio.Producer`` sends ``num_records`` records of
``record_size`` bytes (one payload of random upper-case letters, reused for
every record, no key, as Kafka's tool does) to one topic, as fast as the
producer takes them or capped at ``throughput`` records/s, then flushes.

What it measures:
- **latency** of a record = wall-clock time from just before its
  ``send()`` call to the moment its future is done (the broker's
  acknowledgement has arrived and been handed to the caller). It is measured
  with a done-callback on every record's future, so the tool never waits for
  a single record; it includes the time the record spent in the producer's
  accumulator (linger, waiting for an in-flight slot or for buffer memory),
  the request and the broker's append, as Kafka's figure does. With acks=0
  a future is done as soon as its request has been issued.
- **throughput** = acknowledged records (and their value bytes) divided by the
  time from the first ``send()`` to the last acknowledgement. Topic creation
  and the first metadata lookup happen before the clock starts.

The producer runs on one asyncio loop; its ``send()`` does not yield to the
loop, so the tool hands the loop to the producer's sender task (one
``asyncio.sleep(0)``) every ``yield_every`` records: by default once per
``batch_size`` bytes of values, about when a batch fills (Kafka's Java
producer has a separate I/O thread instead). Yielding much less often queues
more records per request and raises the latency figures without raising the
throughput; much more often costs throughput. Every ``report_interval`` seconds a progress line covers that window;
the final line has the whole run's figures and latency percentiles.

Once the producer has its metadata, the tool freezes what start-up built (``gc.freeze``), as a
node does (node/main.py): a producer keeps up to ``buffer_memory`` worth of records in flight,
each with its future (~80,000 at 100 B in 32 MiB), so CPython's full collections come often,
and each walked every module, gRPC and protobuf object too. In three alternating pairs of
500,000 x 100 B acks=all runs on one cluster, freezing took the client from 3.7-3.8 to 3.0-3.5
CPU-seconds and the rate from 148-157k to 161-196k rec/s. The client library leaves the
collector alone (it is the application's); an application that keeps many records in flight
can freeze its own start-up the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from bench.stats import ProduceResult, ProduceStats
from coordinator.metadata.topic_config import MIN_INSYNC_REPLICAS
from ketch.records import DEFAULT_BATCH_SIZE
from ketch.tls import PLAINTEXT, SecurityConfig

ACKS_CHOICES = ("all", "-1", "1", "0")
COMPRESSION_CHOICES = ("none", "gzip", "snappy", "lz4", "zstd")


@dataclass(frozen=True)
class ProduceConfig:
    topic: str
    num_records: int
    bootstrap: str
    record_size: int = 100
    throughput: float = -1
    acks: str = "1"
    linger_ms: float = 5
    batch_size: int = DEFAULT_BATCH_SIZE
    compression: str = "none"
    partitions: int | None = None
    replication_factor: int = 1
    min_insync_replicas: int | None = None
    yield_every: int | None = None  # default: batch_size // record_size
    report_interval: float = 5.0
    enable_idempotence: bool | None = None  # the producer's default: on unless acks is 0 or 1
    transactional_id: str | None = None  # set: every ``transaction_size`` records are one transaction
    transaction_size: int = 100
    security: SecurityConfig = PLAINTEXT  # KETCH_SECURITY_PROTOCOL and KETCH_SSL_* for `ketch perf`


def make_payload(size: int, seed: int = 0) -> bytes:
    """``size`` random upper-case ASCII letters (Kafka's perf-test payload)."""
    rng = random.Random(seed)
    return bytes(rng.randrange(65, 91) for _ in range(size))


def acks_value(acks: str) -> int | str:
    return "all" if acks in ("all", "-1") else int(acks)


async def ensure_topic(
    bootstrap: str,
    topic: str,
    partitions: int | None,
    out: TextIO,
    replication_factor: int = 1,
    min_insync_replicas: int | None = None,
    security: SecurityConfig = PLAINTEXT,
) -> int:
    """Create ``topic`` if it is missing; returns its partition count."""
    from ketch.aio import Admin, NewTopic
    from ketch.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

    async with Admin(bootstrap_servers=bootstrap, **security.client_kwargs()) as admin:
        try:
            (found,) = await admin.describe_topics([topic])
        except UnknownTopicOrPartitionError:
            with contextlib.suppress(TopicAlreadyExistsError):  # created meanwhile by someone else
                configs = {MIN_INSYNC_REPLICAS: str(min_insync_replicas)} if min_insync_replicas else {}
                await admin.create_topics([NewTopic(topic, partitions or 1, replication_factor, configs=configs)])
            (found,) = await admin.describe_topics([topic])
            print(f"created topic {topic} with {len(found.partitions)} partition(s)", file=out, flush=True)
        count = len(found.partitions)
        if partitions is not None and count != partitions:
            print(
                f"note: topic {topic} already exists with {count} partition(s), not {partitions}",
                file=sys.stderr,
                flush=True,
            )
        return count


class _Throttle:
    """Keeps the send rate at or below ``rate`` records/s (<= 0: no limit)."""

    def __init__(self, rate: float, start: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.start = start

    async def wait(self, sent: int, now: float) -> bool:
        """Sleep while ``sent`` records are ahead of schedule; whether it slept."""
        ahead = self.start + sent * self.interval - now
        if ahead > 0.0005:
            await asyncio.sleep(ahead)
            return True
        return False


async def run_produce(cfg: ProduceConfig, out: TextIO | None = None) -> ProduceResult:
    """Run the benchmark; progress and summary lines go to ``out`` (stdout)."""
    from ketch.aio import Producer

    out = out if out is not None else sys.stdout
    if cfg.num_records <= 0:
        raise ValueError("--num-records must be positive")
    if cfg.record_size < 0:
        raise ValueError("--record-size must be >= 0")
    if cfg.transaction_size < 1:
        raise ValueError("--transaction-size must be >= 1")
    await ensure_topic(
        cfg.bootstrap, cfg.topic, cfg.partitions, out, cfg.replication_factor, cfg.min_insync_replicas, cfg.security
    )
    payload = make_payload(cfg.record_size)
    size = len(payload)
    topic = cfg.topic
    clock = time.perf_counter
    async with Producer(
        bootstrap_servers=cfg.bootstrap,
        **cfg.security.client_kwargs(),
        acks=acks_value(cfg.acks),
        linger_ms=cfg.linger_ms,
        batch_size=cfg.batch_size,
        compression_type=None if cfg.compression == "none" else cfg.compression,
        enable_idempotence=cfg.enable_idempotence,
        transactional_id=cfg.transactional_id,
    ) as producer:
        await producer.topic_info(topic)  # metadata before the clock starts
        # The tool's start-up objects (modules, gRPC, protobuf, the producer) out of the cyclic
        # collector, as a node does (node/main.py): with ~80,000 records in flight, full collections
        # come often, and each walked all of them (see the module docstring).
        gc.freeze()
        transactional = cfg.transactional_id is not None
        if transactional:
            await producer.init_transactions()
        stats = ProduceStats(cfg.report_interval, out)
        record = stats.record

        def done(sent_at: float, fut: asyncio.Future[Any]) -> None:
            now = clock()
            if fut.cancelled():
                stats.error(asyncio.CancelledError())
            elif (exc := fut.exception()) is not None:
                stats.error(exc)
            else:
                record(now - sent_at, size, now)

        throttle = _Throttle(cfg.throughput, stats.start)
        yield_every = max(1, cfg.yield_every or cfg.batch_size // max(1, size))
        send = producer.send
        for i in range(1, cfg.num_records + 1):
            if transactional and (i - 1) % cfg.transaction_size == 0:
                producer.begin_transaction()
            sent_at = clock()
            fut = await send(topic, payload)
            fut.add_done_callback(functools.partial(done, sent_at))
            if transactional and (i % cfg.transaction_size == 0 or i == cfg.num_records):
                await producer.commit_transaction()  # waits for every send of the transaction
                continue
            if throttle.interval and await throttle.wait(i, clock()):
                continue  # sleeping let the sender run
            if i % yield_every == 0:
                await asyncio.sleep(0)
        await producer.flush()
        # the last futures' callbacks run on the next loop iteration
        while stats.count + stats.errors < cfg.num_records:
            await asyncio.sleep(0)
        end = clock()
    result = stats.result(end)
    print(result.line(), file=out, flush=True)
    if stats.first_error is not None:
        print(f"{stats.errors} record(s) failed; the first: {stats.first_error!r}", file=sys.stderr, flush=True)
    return result
