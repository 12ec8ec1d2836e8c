"""``python -m bench compare``: Ketch RF 3 against NATS JetStream R3, one run, one machine.

    python -m bench compare [--workload 500000x100 --workload 200000x1024 ...] [--partitions 1]

What it does, in this order (issue 15's workloads):
1. installs Debian's ``nats-server`` when it is missing (bench/jetstream.py) and starts
   three JetStream servers in one cluster;
2. for each workload (default 500,000 x 100 B and 200,000 x 1 KiB): publishes to an R3
   stream with 2,000 publishes in flight, then reads the stream back with a pull
   consumer (bench/jetstream.py says exactly what is timed); stops the servers;
3. starts a local three-node Ketch cluster (``node.cluster.LocalCluster``, default
   settings) and runs the same workloads with ``ketch perf produce`` (acks=all,
   replication factor 3, min.insync.replicas 2, one partition) and ``ketch perf
   consume`` as child processes, exactly as bench/run.py's suite does;
4. prints one table: records/s (and MB/s) of each system and Ketch's rate as a multiple of
   JetStream's, with the machine, its load before and after, and every Ketch command.

The two systems run one after the other, never at once, so neither takes CPU from the
other; the load lines say what else the machine was doing. Compare ratios from one run:
on a shared machine the absolute figures move by tens of percent between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import jetstream
from bench.run import Workload, _load, _machine, _run_step, _table, add_workload_argument, parse_workload

SUMMARY = "Ketch RF 3 against NATS JetStream R3 on this machine: produce and consume, one table with ratios"
DEFAULT_WORKLOADS = ("500000x100", "200000x1024")
IN_FLIGHT = 2000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_workload_argument(parser)
    parser.add_argument("--partitions", type=int, default=1, help="Ketch partitions per topic (default 1)")
    parser.add_argument("--quiet", "-q", action="store_true", help="hide the Ketch tools' own output lines")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.set_defaults(handler=compare_handler)


Figures = dict[str, Any]


def run_jetstream(workloads: list[Workload], root: Path) -> dict[tuple[str, int], Figures]:
    binary = jetstream.ensure_nats_server()
    print(f"\nJetStream: {jetstream.server_version(binary)}, three servers, streams of 3 replicas, file storage")
    cluster = jetstream.NatsCluster(root, binary).start()
    results: dict[tuple[str, int], Figures] = {}
    try:
        for w in workloads:
            stream = f"perf{w.size}b"
            print(f"  produce {w.label}, {IN_FLIGHT} publishes in flight", flush=True)
            results["produce", w.size] = f = asyncio.run(
                jetstream.produce(cluster.urls, stream, w.records, w.size, IN_FLIGHT)
            )
            print(f"    {f['records_per_sec']:,.0f} records/s, {f['mb_per_sec']:.2f} MB/s", flush=True)
            print(f"  consume {w.label}, pull consumer", flush=True)
            results["consume", w.size] = f = asyncio.run(jetstream.consume(cluster.urls, stream, w.records, w.size))
            print(f"    {f['records_per_sec']:,.0f} records/s, {f['mb_per_sec']:.2f} MB/s", flush=True)
    finally:
        cluster.stop()
    return results


def run_ketch(
    workloads: list[Workload], root: Path, partitions: int, quiet: bool
) -> tuple[dict[tuple[str, int], Figures], list[list[str]]]:
    from node.cluster import LocalCluster

    cluster = LocalCluster(root, 3)
    cluster.start()
    results: dict[tuple[str, int], Figures] = {}
    commands: list[list[str]] = []
    try:
        cluster.wait_ready(60)
        print(f"\nKetch: three combined nodes at {cluster.bootstrap}, default settings, replication factor 3")
        base = [f"--bootstrap={cluster.bootstrap}"]
        for w in workloads:
            argv = ["perf", "produce", *base, f"--topic={w.topic}", f"--num-records={w.records}"]
            argv += [f"--record-size={w.size}", "--acks=all", f"--partitions={partitions}"]
            argv += ["--replication-factor=3", "--min-insync-replicas=2"]
            commands.append(argv)
            results["produce", w.size] = _run_step(len(commands), argv, quiet)
        for w in workloads:
            argv = ["perf", "consume", *base, f"--topic={w.topic}", f"--messages={w.records}", "--from-beginning"]
            commands.append(argv)
            results["consume", w.size] = _run_step(len(commands), argv, quiet)
    finally:
        cluster.close()  # kill -9: the data is thrown away; a controlled shutdown of each node takes seconds
    return results, commands


def _rate(f: Figures, size: int) -> str:
    text = f"{f['records_per_sec']:,.0f} rec/s"
    return f"{text} ({f['mb_per_sec']:.0f} MB/s)" if size >= 1024 else text


def table(workloads: list[Workload], js: dict[tuple[str, int], Figures], ketch: dict[tuple[str, int], Figures]) -> str:
    """The comparison as issue 15 shows it: one row per workload, Ketch / JetStream."""
    rows = [["workload", "", "JetStream R3", "Ketch RF3", "ratio"]]
    for kind in ("produce", "consume"):
        for w in workloads:
            j, k = js[kind, w.size], ketch[kind, w.size]
            ratio = k["records_per_sec"] / j["records_per_sec"] if j["records_per_sec"] else 0.0
            rows.append([f"{kind} {w.size} B", f"x {w.records:,}", _rate(j, w.size), _rate(k, w.size), f"{ratio:.1f}x"])
    return _table(rows)


def compare_handler(args: argparse.Namespace) -> int:
    workloads: list[Workload] = args.workload or [parse_workload(w) for w in DEFAULT_WORKLOADS]
    started = time.monotonic()
    print("Ketch against NATS JetStream, one run on this machine")
    print(f"machine: {_machine()}")
    print(f"before: {_load()}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="ketch-compare-") as tmp:
            js = run_jetstream(workloads, Path(tmp) / "nats")
            ketch, commands = run_ketch(workloads, Path(tmp) / "ketch", args.partitions, args.quiet)
    except jetstream.NatsUnavailable as exc:
        print(f"python -m bench compare: {exc}", file=sys.stderr, flush=True)
        return 2
    except RuntimeError as exc:  # a step failed or a cluster did not start; its output is above
        print(f"python -m bench compare: {exc}", file=sys.stderr, flush=True)
        return 1
    print()
    print(table(workloads, js, ketch))
    print(
        f"\nJetStream: nats-py, publish_async with {IN_FLIGHT} in flight, a PubAck per message (stored by a quorum"
        " of 3); pull consumer, fetch batches of 1,000, no acks. Ketch: acks=all, replication factor 3,"
        f" min.insync.replicas 2, {args.partitions} partition(s), the producer's defaults (linger 5 ms, 256 KiB"
        " batches); one consumer from the earliest offset."
    )
    print("Ketch commands (ketch = python -m ketch; each ran as its own process):")
    print("\n".join(f"  [{i}] ketch {' '.join(argv)}" for i, argv in enumerate(commands, 1)))
    print(f"\ncompare took {time.monotonic() - started:.1f} s in all; after it: {_load()}")
    if args.json:
        systems = (("jetstream", js), ("ketch", ketch))
        flat = [{"system": s, "kind": k, "size": n, **f} for s, d in systems for (k, n), f in d.items()]
        print(json.dumps(flat))
    return 0
