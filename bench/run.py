"""The benchmark suite: one local node, produce then consume, one table.

    python -m bench [--workload COUNTxSIZE ...] [--acks 1] [--partitions 1] ...
    ketch perf suite [same options]

What it does:
1. starts ONE real ``ketch node`` (``node.process.NodeProcess``) in a fresh
   temporary directory on free ports, with its defaults: RocksDB with the WAL
   on, ``flush.messages=0`` (no fsync per append, Kafka's default), one
   replica — or, with ``--nodes 3``, a local three-node cluster
   (``node.cluster.LocalCluster``) and topics of ``--replication-factor``;
2. for each workload (default 500,000 x 100-byte and 200,000 x 1 KiB records)
   runs ``ketch perf produce`` into its own topic (``perf-<SIZE>b``);
3. then runs ``ketch perf consume --from-beginning`` on each topic;
4. prints the figures as a table, with the exact command of every step, and
   stops the node (the temporary directory is removed).

``--tls`` runs the same against nodes with mutual TLS on every connection (the
certificates of ``ketch cluster up --tls``; the steps get ``KETCH_SECURITY_PROTOCOL``
and ``KETCH_SSL_*``). ``--compare-tls`` runs the suite twice in one go, plaintext
then TLS, on fresh nodes, and adds a table of TLS's rate as a share of plaintext's:
the cost of TLS, measured with both runs under the same machine load.

``--compare-kafka-client`` runs three nodes with the Kafka listener on (replication factor 3,
min.insync.replicas 2, acks=all, whatever the other flags say) and, for each workload, the
same produce and consume steps twice in one run: Ketch's client over gRPC, then confluent-kafka
(librdkafka) through the Kafka listener (``--client confluent-kafka``, bench/kafka_client.py),
each into its own topic; then a table of confluent-kafka's rate as a share of Ketch's.

Every step is a separate child process (``python -m ketch perf ...
--json``), so each client starts cold, exactly as the printed command would,
and the figures in the table are the ones that child printed as JSON. The
node and the clients share this machine's CPUs; the header says how many.

What the figures mean (see bench/produce.py and bench/consume.py):
produce latency is per record, from just before ``send()`` to its
acknowledgement (acks as given), including time queued in the producer;
rates are records (or value bytes, MB = 2**20 bytes) per second from the
first send to the last acknowledgement, or for consume from ``assign()``
to the last record.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.produce import ACKS_CHOICES, COMPRESSION_CHOICES
from ketch.records import DEFAULT_BATCH_SIZE
from ketch.tls import ENV

SUMMARY = "start one local node, run produce and consume benchmarks, print a table"
DEFAULT_WORKLOADS = ("500000x100", "200000x1024")


@dataclass(frozen=True)
class Workload:
    records: int
    size: int

    @property
    def topic(self) -> str:
        return f"perf-{self.size}b"

    @property
    def label(self) -> str:
        return f"{self.records} x {self.size} B"


def parse_workload(text: str) -> Workload:
    count, sep, size = text.lower().partition("x")
    if not sep or not count.strip().isdigit() or not size.strip().isdigit() or int(count) <= 0:
        raise argparse.ArgumentTypeError(f"expected COUNTxSIZE such as 500000x100, got {text!r}")
    return Workload(int(count), int(size))


def add_workload_argument(parser: argparse.ArgumentParser) -> None:
    """``--workload COUNTxSIZE``, repeatable (bench suite and bench compare)."""
    parser.add_argument(
        "--workload",
        "-w",
        type=parse_workload,
        action="append",
        metavar="COUNTxSIZE",
        help="records x value bytes, repeatable (default: 500000x100 and 200000x1024)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_workload_argument(parser)
    parser.add_argument("--acks", default="1", choices=ACKS_CHOICES, help="producer acks (default 1)")
    parser.add_argument("--partitions", type=int, default=1, help="partitions per topic (default 1)")
    parser.add_argument("--nodes", type=int, default=1, help="local nodes: 1, or 3 for a replicated cluster")
    parser.add_argument(
        "--replication-factor", type=int, default=1, help="of the benchmark topics (default 1; at most --nodes)"
    )
    parser.add_argument("--min-insync-replicas", type=int, default=None, help="topic config (default: the broker's, 1)")
    parser.add_argument("--linger-ms", type=float, default=5, help="producer linger.ms (default 5)")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="producer batch.size (default 262144)"
    )
    parser.add_argument("--compression", default="none", choices=COMPRESSION_CHOICES, help="default: none")
    parser.add_argument("--tls", action="store_true", help="nodes and clients with mutual TLS")
    parser.add_argument("--compare-tls", action="store_true", help="run plaintext, then TLS; print the ratios")
    parser.add_argument(
        "--compare-kafka-client",
        action="store_true",
        help="3 nodes, RF 3, min ISR 2, acks all: Ketch's client (gRPC) next to confluent-kafka (Kafka listener)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="hide the tools' own output lines")
    parser.add_argument("--json", action="store_true", help="also print every step's figures as one JSON line")
    parser.set_defaults(handler=suite_handler)


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{usable} CPU(s) usable ({cpu}), Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def _load() -> str:
    """CPU busy over the last second, and the load average: other work skews the figures."""
    text = f"load average {os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "load average unknown"
    try:
        before = _cpu_times()
        time.sleep(1.0)
        after = _cpu_times()
    except (OSError, ValueError):
        return text
    total, idle = after[0] - before[0], after[1] - before[1]
    return f"{100 * (total - idle) / max(total, 1):.0f}% of all CPUs busy over 1 s, {text}"


def _cpu_times() -> tuple[int, int]:
    """(total, idle + iowait) jiffies of all CPUs, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields[:8]), fields[3] + fields[4]


def _run_step(number: int, argv: list[str], quiet: bool, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m ketch ARGV --json``; its JSON figures (last stdout line)."""
    cmd = [sys.executable, "-m", "ketch", *argv, "--json"]
    print(f"\n[{number}] ketch {shlex.join(argv)}", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    assert proc.stdout is not None
    last = ""
    for line in proc.stdout:
        last = line
        if not quiet and not line.startswith("{"):
            print(f"    {line}", end="", flush=True)
    code = proc.wait()
    if code != 0 or not last.startswith("{"):
        raise RuntimeError(f"step [{number}] failed (exit {code}): ketch {shlex.join(argv)}")
    figures: dict[str, Any] = json.loads(last)
    return figures


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def report(steps: list[tuple[str, Workload, list[str], dict[str, Any]]]) -> str:
    """The results table and the commands it came from."""
    rows = [["step", "workload", "records/s", "MB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "seconds"]]
    for i, (kind, w, _argv, f) in enumerate(steps, 1):
        latency = (
            [f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", f"{f['p999_ms']:.2f}", f"{f['max_latency_ms']:.2f}"]
            if kind.startswith("produce")
            else ["-", "-", "-", "-"]
        )
        rows.append(
            [
                f"[{i}]",
                f"{kind}, {f['records']} x {w.size} B",
                f"{f['records_per_sec']:,.0f}",
                f"{f['mb_per_sec']:.2f}",
                *latency,
                f"{f['elapsed_s']:.2f}",
            ]
        )
    commands = "\n".join(f"  [{i}] ketch {shlex.join(argv)}" for i, (_k, _w, argv, _f) in enumerate(steps, 1))
    return f"{_table(rows)}\n\nCommands (ketch = python -m ketch; each ran as its own process):\n{commands}"


def run_suite(
    args: argparse.Namespace, tls: bool = False, kafka_client: bool = False
) -> list[tuple[str, Workload, list[str], dict[str, Any]]]:
    from node.cluster import LocalCluster
    from node.process import NodeProcess

    workloads: list[Workload] = args.workload or [parse_workload(w) for w in DEFAULT_WORKLOADS]
    print("Ketch benchmark suite")
    print(f"machine: {_machine()}")
    print(f"before the node starts: {_load()}", flush=True)
    steps: list[tuple[str, Workload, list[str], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="ketch-bench-") as tmp:
        cluster = (
            LocalCluster(Path(tmp) / "cluster", args.nodes, tls=tls, kafka=kafka_client)
            if args.nodes > 1 or tls or kafka_client
            else None
        )
        env = {ENV[k]: v for k, v in cluster.security.client_kwargs().items() if v} if cluster else {}
        if cluster is not None:
            cluster.start()
            cluster.wait_ready(60)
            node = cluster.nodes[1]
            bootstrap = cluster.bootstrap
            print(
                f"cluster: {args.nodes} combined ketch nodes at {bootstrap}, default settings "
                f"(RocksDB WAL on, no fsync per append), replication factor {args.replication_factor}"
                + (", mutual TLS on every connection" if tls else "")
                + (f"; Kafka listeners at {cluster.kafka_bootstrap}" if kafka_client else ""),
                flush=True,
            )
        else:
            node = NodeProcess(Path(tmp) / "node-1", node_id=1)
            node.start().wait_broker_alive()
            bootstrap = node.bootstrap
        try:
            if cluster is None:
                print(
                    f"node: one ketch node at {node.bootstrap} (pid {node.proc.pid if node.proc else '?'}), "
                    f"data in {node.data_dir}, default settings (RocksDB WAL on, no fsync per append)",
                    flush=True,
                )
            producer_opts = [
                f"--acks={args.acks}",
                f"--linger-ms={args.linger_ms:g}",
                f"--batch-size={args.batch_size}",
                f"--compression={args.compression}",
            ]
            # (label suffix, extra arguments, topic suffix) per client: Ketch's own, then confluent-kafka's.
            clients = [("", [f"--bootstrap={bootstrap}"], "")]
            if kafka_client and cluster is not None:
                kafka = ["--client=confluent-kafka", f"--bootstrap={cluster.kafka_bootstrap}"]
                clients = [(", ketch gRPC", clients[0][1], ""), (", confluent-kafka", kafka, "-kafka")]
            for w in workloads:
                for label, client, suffix in clients:
                    argv = ["perf", "produce", *client, f"--topic={w.topic}{suffix}"]
                    argv += [f"--num-records={w.records}", f"--record-size={w.size}", "--throughput=-1"]
                    argv += [*producer_opts, f"--partitions={args.partitions}"]
                    argv += [f"--replication-factor={args.replication_factor}"]
                    if args.min_insync_replicas:
                        argv += [f"--min-insync-replicas={args.min_insync_replicas}"]
                    figures = _run_step(len(steps) + 1, argv, args.quiet, env)
                    steps.append((f"produce acks={args.acks}{label}", w, argv, figures))
            for w in workloads:
                for label, client, suffix in clients:
                    argv = ["perf", "consume", *client, f"--topic={w.topic}{suffix}"]
                    argv += [f"--messages={w.records}", "--from-beginning"]
                    steps.append((f"consume{label}", w, argv, _run_step(len(steps) + 1, argv, args.quiet, env)))
        finally:
            if cluster is not None:
                cluster.stop()
                print("\ncluster stopped", flush=True)
            else:
                code = node.stop()
                print(f"\nnode stopped (exit {code})", flush=True)
    return steps


def tls_cost(
    plain: list[tuple[str, Workload, list[str], dict[str, Any]]],
    tls: list[tuple[str, Workload, list[str], dict[str, Any]]],
) -> str:
    """Each step's rate with TLS as a share of its rate in plaintext, from the same run."""
    rows = [["step", "workload", "plaintext rec/s", "TLS rec/s", "TLS / plaintext"]]
    for i, ((kind, w, _a, p), (_k, _w, _b, t)) in enumerate(zip(plain, tls, strict=True), 1):
        ratio = t["records_per_sec"] / p["records_per_sec"] if p["records_per_sec"] else 0.0
        rows.append(
            [
                f"[{i}]",
                f"{kind}, {w.label}",
                f"{p['records_per_sec']:,.0f}",
                f"{t['records_per_sec']:,.0f}",
                f"{ratio:.2f}",
            ]
        )
    return "The cost of TLS (one run, same machine):\n" + _table(rows)


def suite_handler(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.compare_kafka_client:  # the shape the comparison is quoted for, whatever the other flags say
        args.nodes, args.replication_factor, args.min_insync_replicas, args.acks = 3, 3, 2, "all"
    try:
        steps = run_suite(args, tls=args.tls and not args.compare_tls, kafka_client=args.compare_kafka_client)
        tls_steps = run_suite(args, tls=True) if args.compare_tls else []
    except RuntimeError as exc:  # a step failed or the node did not start; its output is above
        print(f"ketch perf suite: {exc}", file=sys.stderr, flush=True)
        return 1
    print()
    print(report(steps))
    print(
        "\nproduce: latency = time from just before send() to the record's acknowledgement "
        f"(acks={args.acks}), queueing in the producer included; rates from the first send to the last ack."
        "\nconsume: one consumer assigned every partition, from the earliest offset; rates from assign() "
        "to the last record. MB = 2**20 bytes of record values (and keys)."
    )
    if args.compare_kafka_client:
        from bench.kafka_client import compare_table

        print("\n" + compare_table(steps))
    if tls_steps:
        print("\nThe same with mutual TLS on every connection (nodes, replication, clients):\n")
        print(report(tls_steps))
        print("\n" + tls_cost(steps, tls_steps))
    print(f"\nsuite took {time.monotonic() - started:.1f} s in all; after it: {_load()}")
    if args.json:
        print(json.dumps([{"step": i, "workload": w.label, **f} for i, (_k, w, _a, f) in enumerate(steps, 1)]))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m bench``: the suite; ``python -m bench produce|consume|suite|group-load ...`` for one tool."""
    from bench.cli import add_actions
    from ketch.errors import KetchError

    argv = list(sys.argv[1:] if argv is None else argv)
    tools = (
        "produce",
        "consume",
        "suite",
        "group-load",
        "compare",
        "memory",
        "follower-fetch",
        "rpc-cost",
        "-h",
        "--help",
    )
    if not argv or argv[0] not in tools:
        argv.insert(0, "suite")
    parser = argparse.ArgumentParser(prog="python -m bench", description="Ketch benchmarks: " + SUMMARY)
    add_actions(parser.add_subparsers(dest="perf_command", required=True, metavar="ACTION"))
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except KetchError as exc:
        print(f"ketch: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
