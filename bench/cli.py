"""``ketch perf produce|consume|suite``: the benchmark tools on the command line.

    ketch perf produce --topic T --num-records N [--record-size 100] [--throughput -1]
                       [--acks 1] [--linger-ms 5] [--batch-size 262144] [--compression none]
                       [--partitions P] [--json]
    ketch perf consume --topic T [--messages N] [--from-beginning] [--timeout-ms 10000] [--json]
    (both take --client confluent-kafka: the same measurement through a Kafka listener, bench/kafka_client.py)
    ketch perf suite   [--workload 500000x100 --workload 200000x1024 ...]
    ketch perf group-load [--commits 1000000] [--keys 1000] [--groups 10] [--json]

The options are kafka-producer-perf-test's and kafka-consumer-perf-test's;
what each tool measures (and what "latency" means) is in bench/produce.py and
bench/consume.py, the suite in bench/run.py. ``--json`` prints the final
figures once more, as one JSON object on the last line of stdout. The same
commands run as ``python -m bench produce|consume|suite|group-load``; plain
``python -m bench`` runs the suite. ``group-load`` (bench/group_load.py) needs
no node: it times a group coordinator's load of ``__consumer_offsets`` before
and after compaction. ``compare`` (bench/compare.py) puts Ketch beside NATS
JetStream; ``memory`` (bench/memory.py) reports the nodes' RSS, idle and with
1,000 partitions; ``follower-fetch`` (bench/follower_fetch.py) times a leader's
work per partition for a follower fetch in-process, with and without a fetch session;
``rpc-cost`` (bench/rpc_cost.py) a server's CPU per unary gRPC call, the floor under every RPC.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from bench import kafka_client
from bench.consume import ConsumeConfig, ConsumeTimeout, run_consume
from bench.kafka_client import CLIENTS
from bench.produce import ACKS_CHOICES, COMPRESSION_CHOICES, ProduceConfig, run_produce
from ketch import _loop as event_loop
from ketch.bootstrap import bootstrap_arg, client_security
from ketch.records import DEFAULT_BATCH_SIZE


def add_actions(sub: Any) -> None:
    """The produce, consume and suite parsers, under ``sub`` (a subparsers action)."""
    produce = sub.add_parser(
        "produce",
        help="producer throughput and latency (kafka-producer-perf-test)",
        description="Send records as fast as allowed; print records/s, MB/s and send-to-ack latency.",
    )
    produce.add_argument("--topic", required=True)
    produce.add_argument("--num-records", type=int, required=True, help="records to send")
    produce.add_argument("--record-size", type=int, default=100, help="value bytes per record (default 100)")
    produce.add_argument(
        "--throughput", type=float, default=-1, help="cap in records/s; -1: as fast as possible (default)"
    )
    produce.add_argument("--acks", default="1", choices=ACKS_CHOICES, help="default: 1")
    produce.add_argument("--linger-ms", type=float, default=5, help="default: 5")
    produce.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="bytes per partition batch (default 262144)"
    )
    produce.add_argument("--compression", default="none", choices=COMPRESSION_CHOICES, help="default: none")
    produce.add_argument(
        "--partitions", type=int, help="create the topic with this many partitions if missing (default 1)"
    )
    produce.add_argument("--replication-factor", type=int, default=1, help="for a created topic (default 1)")
    produce.add_argument("--min-insync-replicas", type=int, help="topic config for a created topic")
    produce.add_argument(
        "--yield-every",
        type=int,
        help="records between yields to the producer's sender task (default: batch-size / record-size)",
    )
    produce.add_argument(
        "--enable-idempotence",
        choices=["true", "false"],
        help="idempotent producer (default: true unless --acks is 0 or 1)",
    )
    produce.add_argument(
        "--transactional-id", help="transactional producer: commit every --transaction-size records (Kafka's perf flag)"
    )
    produce.add_argument(
        "--transaction-size", type=int, default=100, help="records per transaction with --transactional-id"
    )
    produce.add_argument("--report-interval", type=float, default=5.0, help="seconds between progress lines")
    produce.add_argument("--json", action="store_true", help="also print the final figures as one JSON line")
    client_arg(produce)
    bootstrap_arg(produce)
    produce.set_defaults(handler=produce_handler)

    consume = sub.add_parser(
        "consume",
        help="consumer throughput (kafka-consumer-perf-test)",
        description="Read records from every partition of a topic; print MB, MB/s, records and records/s.",
    )
    consume.add_argument("--topic", required=True)
    consume.add_argument(
        "--messages", type=int, help="records to read (default: what the topic holds when the tool starts)"
    )
    consume.add_argument(
        "--from-beginning",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start at the earliest offset (default) or, with --no-from-beginning, at the end",
    )
    consume.add_argument(
        "--timeout-ms", type=int, default=10000, help="give up after this long without a record (default 10000)"
    )
    consume.add_argument("--report-interval", type=float, default=5.0, help="seconds between progress lines")
    consume.add_argument("--json", action="store_true", help="also print the final figures as one JSON line")
    client_arg(consume)
    bootstrap_arg(consume)
    consume.set_defaults(handler=consume_handler)

    from bench import group_load, run

    run.add_arguments(sub.add_parser("suite", help=run.SUMMARY, description=run.SUMMARY))
    group_load.add_arguments(sub.add_parser("group-load", help=group_load.SUMMARY, description=group_load.SUMMARY))
    from bench import compare, follower_fetch, memory, rpc_cost

    compare.add_arguments(sub.add_parser("compare", help=compare.SUMMARY, description=compare.SUMMARY))
    memory.add_arguments(sub.add_parser("memory", help=memory.SUMMARY, description=memory.SUMMARY))
    follower_fetch.add_arguments(
        sub.add_parser("follower-fetch", help=follower_fetch.SUMMARY, description=follower_fetch.SUMMARY)
    )
    rpc_cost.add_arguments(sub.add_parser("rpc-cost", help=rpc_cost.SUMMARY, description=rpc_cost.SUMMARY))


def client_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client",
        default="ketch",
        choices=CLIENTS,
        help="ketch (gRPC, default) or confluent-kafka through a Kafka listener (bench/kafka_client.py)",
    )


def register(commands: Any) -> None:
    """Add ``perf`` to the ``ketch`` command line."""
    perf = commands.add_parser("perf", help="producer and consumer benchmarks (bench/)")
    add_actions(perf.add_subparsers(dest="perf_command", required=True, metavar="ACTION"))


def produce_handler(args: argparse.Namespace) -> int:
    cfg = ProduceConfig(
        topic=args.topic,
        num_records=args.num_records,
        bootstrap=args.bootstrap,
        record_size=args.record_size,
        throughput=args.throughput,
        acks=args.acks,
        linger_ms=args.linger_ms,
        batch_size=args.batch_size,
        compression=args.compression,
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        min_insync_replicas=args.min_insync_replicas,
        yield_every=args.yield_every,
        report_interval=args.report_interval,
        enable_idempotence=None if args.enable_idempotence is None else args.enable_idempotence == "true",
        transactional_id=args.transactional_id,
        transaction_size=args.transaction_size,
        security=client_security(),
    )
    try:
        result = kafka_client.run_produce(cfg) if args.client != "ketch" else event_loop.run(run_produce(cfg))
    except ValueError as exc:
        print(f"ketch perf produce: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(result.json(), flush=True)
    return 1 if result.errors else 0


def consume_handler(args: argparse.Namespace) -> int:
    cfg = ConsumeConfig(
        topic=args.topic,
        bootstrap=args.bootstrap,
        messages=args.messages,
        from_beginning=args.from_beginning,
        timeout_ms=args.timeout_ms,
        report_interval=args.report_interval,
        security=client_security(),
    )
    try:
        result = kafka_client.run_consume(cfg) if args.client != "ketch" else event_loop.run(run_consume(cfg))
    except ConsumeTimeout as exc:
        print(f"ketch perf consume: {exc}", file=sys.stderr, flush=True)
        return 1
    except ValueError as exc:
        print(f"ketch perf consume: {exc}", file=sys.stderr, flush=True)
        return 2
    if args.json:
        print(result.json(), flush=True)
    return 0
