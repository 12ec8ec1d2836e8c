"""The perf tools with confluent-kafka (librdkafka) through a node's Kafka listener.

    ketch perf produce --client confluent-kafka --bootstrap KAFKA_HOST:PORT --topic T --num-records N ...
    ketch perf consume --client confluent-kafka --bootstrap KAFKA_HOST:PORT --topic T ...

Same options, same figures and the same JSON as the Ketch client's tools (bench/produce.py,
bench/consume.py), measured the same way, so ``python -m bench --compare-kafka-client`` can put
the two side by side:
- produce: the topic is made if missing (confluent-kafka's AdminClient: CreateTopics through the
  listener) and its metadata fetched before the clock starts; then one ``Producer`` gets
  ``produce()`` per record (one payload reused, no key), the latency of a record is from just
  before its ``produce()`` to its delivery report (the acknowledgement), throughput is from the
  first ``produce()`` to the last report. acks, linger.ms, batch.size and compression map to
  librdkafka's settings of the same names; enable.idempotence follows the Ketch tool's default
  (on unless acks is 0 or 1). librdkafka's queue is bounded like Ketch's ``buffer_memory`` (32 MiB
  of records): when it is full (``BufferError``) the tool serves delivery reports until there is
  room, as Kafka's perf tool blocks in ``send()``.
- consume: one ``Consumer`` assigned every partition at the earliest offset (no group
  membership), elapsed from ``assign()`` to the record that completes the count; bytes are keys
  plus values.
confluent-kafka is a dev dependency (pyproject.toml); without it these tools say so and exit 2.
"""

from __future__ import annotations

import functools
import sys
import time
from typing import Any, TextIO

from bench.consume import ConsumeConfig, ConsumeTimeout
from bench.produce import ProduceConfig, make_payload
from bench.stats import MB, ConsumeResult, ProduceResult, ProduceStats, consume_result

CLIENTS = ("ketch", "confluent-kafka")


def _confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise ValueError("--client confluent-kafka needs the confluent-kafka package (pip install .[dev])") from None
    return confluent_kafka


def ensure_topic(bootstrap: str, cfg: ProduceConfig, out: TextIO) -> int:
    """Create ``cfg.topic`` through the Kafka listener if it is missing; its partition count."""
    ck = _confluent()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = admin.list_topics(cfg.topic, timeout=30).topics
    if cfg.topic not in topics or topics[cfg.topic].error is not None:
        configs = {"min.insync.replicas": str(cfg.min_insync_replicas)} if cfg.min_insync_replicas else {}
        new = NewTopic(cfg.topic, cfg.partitions or 1, cfg.replication_factor, config=configs)
        try:
            admin.create_topics([new])[cfg.topic].result(30)
            print(f"created topic {cfg.topic} through the Kafka listener", file=out, flush=True)
        except ck.KafkaException as exc:
            if exc.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        topics = admin.list_topics(cfg.topic, timeout=30).topics
    return len(topics[cfg.topic].partitions)


def run_produce(cfg: ProduceConfig, out: TextIO | None = None) -> ProduceResult:
    ck = _confluent()
    out = out if out is not None else sys.stdout
    if cfg.num_records <= 0:
        raise ValueError("--num-records must be positive")
    if cfg.transactional_id is not None:
        raise ValueError("--transactional-id is not supported with --client confluent-kafka")
    ensure_topic(cfg.bootstrap, cfg, out)
    acks = "all" if cfg.acks in ("all", "-1") else cfg.acks
    idempotent = cfg.enable_idempotence if cfg.enable_idempotence is not None else acks == "all"
    producer = ck.Producer(
        {
            "bootstrap.servers": cfg.bootstrap,
            "acks": acks,
            "enable.idempotence": idempotent,
            "linger.ms": cfg.linger_ms,
            "batch.size": cfg.batch_size,
            "compression.type": cfg.compression,
            # Ketch's client (and Kafka's) holds at most buffer.memory = 32 MiB of unsent records;
            # librdkafka's default is 1 GiB or 100,000 records, which queues whole runs and makes
            # its latency figures a measure of its queue. The same 32 MiB bound, by bytes alone:
            "queue.buffering.max.kbytes": 32 * 1024,
            "queue.buffering.max.messages": 2_147_483_647,
        }
    )
    producer.list_topics(cfg.topic, timeout=30)  # metadata before the clock starts
    payload = make_payload(cfg.record_size)
    size = len(payload)
    clock = time.perf_counter
    stats = ProduceStats(cfg.report_interval, out)
    record, topic, produce, poll = stats.record, cfg.topic, producer.produce, producer.poll

    def delivered(sent_at: float, err: Any, _msg: Any) -> None:
        now = clock()
        if err is not None:
            stats.error(ck.KafkaException(err))
        else:
            record(now - sent_at, size, now)

    interval = 1.0 / cfg.throughput if cfg.throughput > 0 else 0.0
    for i in range(cfg.num_records):
        if interval and (ahead := stats.start + i * interval - clock()) > 0.0005:
            poll(ahead)
        while True:
            try:
                produce(topic, payload, on_delivery=functools.partial(delivered, clock()))
                break
            except BufferError:
                poll(0.005)
        if i % 256 == 0:
            poll(0)  # delivery reports run inside poll(): often enough that they time the acknowledgement
    producer.flush()
    end = clock()
    result = stats.result(end)
    print(result.line(), file=out, flush=True)
    if stats.first_error is not None:
        print(f"{stats.errors} record(s) failed; the first: {stats.first_error!r}", file=sys.stderr, flush=True)
    return result


def run_consume(cfg: ConsumeConfig, out: TextIO | None = None) -> ConsumeResult:
    ck = _confluent()
    out = out if out is not None else sys.stdout
    consumer = ck.Consumer(
        {
            "bootstrap.servers": cfg.bootstrap,
            "group.id": "ketch-perf-consume",  # required by librdkafka; the tool assigns, never joins
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest" if cfg.from_beginning else "latest",
        }
    )
    try:
        partitions = consumer.list_topics(cfg.topic, timeout=30).topics[cfg.topic].partitions
        tps = [ck.TopicPartition(cfg.topic, p) for p in sorted(partitions)]
        target = cfg.messages
        if target is None:
            if not cfg.from_beginning:
                raise ValueError("without --from-beginning, say how many records to wait for (--messages)")
            marks = [consumer.get_watermark_offsets(tp, timeout=30) for tp in tps]
            target = sum(high - low for low, high in marks)
            print(f"reading the {target} records {cfg.topic} holds", file=out, flush=True)
        start_at = ck.OFFSET_BEGINNING if cfg.from_beginning else ck.OFFSET_END
        clock = time.perf_counter
        timeout = cfg.timeout_ms / 1000
        count = size = 0
        first: float | None = None
        start = window_start = last = clock()
        window_count = window_bytes = 0
        consumer.assign([ck.TopicPartition(cfg.topic, tp.partition, start_at) for tp in tps])
        while count < target:
            batch = consumer.consume(min(target - count, 500), 0.1)
            now = clock()
            records = [m for m in batch if m.error() is None]
            if not records:
                if now - last >= timeout:
                    break
                continue
            count += len(records)
            size += sum(len(m.value() or b"") + len(m.key() or b"") for m in records)
            if first is None:
                first = now - start
            last = now
            if now - window_start >= cfg.report_interval:
                elapsed, n, b = now - window_start, count - window_count, size - window_bytes
                print(f"{n} records consumed, {n / elapsed:.1f} records/sec ({b / elapsed / MB:.2f} MB/sec).", file=out)
                window_start, window_count, window_bytes = now, count, size
    finally:
        consumer.close()
    result = consume_result(count, size, last - start, first or 0.0)
    print(result.line(), file=out, flush=True)
    if count < target:
        raise ConsumeTimeout(
            f"exiting after {count} of {target} records: no record arrived for {cfg.timeout_ms} ms (--timeout-ms)"
        )
    return result


def compare_table(steps: list[tuple[str, Any, list[str], dict[str, Any]]]) -> str:
    """``--compare-kafka-client``: each confluent-kafka step's rate as a share of the Ketch step before it.

    ``steps`` are the suite's (kind, workload, argv, figures) in pairs: Ketch's client, then
    confluent-kafka's, for the same workload."""
    from bench.run import _table

    rows = [["steps", "workload", "ketch gRPC rec/s", "confluent-kafka rec/s", "ratio", "p99 ms (ketch / ck)"]]
    for i in range(0, len(steps) - 1, 2):
        (kind, w, _a, ketch), (_k, _w, _b, kafka) = steps[i], steps[i + 1]
        ratio = kafka["records_per_sec"] / ketch["records_per_sec"] if ketch["records_per_sec"] else 0.0
        p99 = f"{ketch['p99_ms']:.1f} / {kafka['p99_ms']:.1f}" if "p99_ms" in ketch else "-"
        rows.append(
            [
                f"[{i + 1}] / [{i + 2}]",
                f"{kind.split(',')[0]}, {w.label}",
                f"{ketch['records_per_sec']:,.0f}",
                f"{kafka['records_per_sec']:,.0f}",
                f"{ratio:.2f}",
                p99,
            ]
        )
    return "confluent-kafka through the Kafka listener vs Ketch's client over gRPC (one run, same cluster):\n" + (
        _table(rows)
    )
