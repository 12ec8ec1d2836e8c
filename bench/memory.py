"""``python -m bench memory``: each node's RSS idle, then with six and with 1,000 partitions.

    python -m bench memory [--partitions 1000] [--records 200000] [--record-size 100]

What it does (issue 15's memory targets: an idle node <= 100 MB RSS; 1,000 partitions of
replication factor 3 on three nodes <= 500 MB each, produce spread over them within 20%
of six partitions):
1. starts a local three-node cluster (``node.cluster.LocalCluster``, default settings,
   combined broker and controller in each process), waits until it is ready and idle
   for ``--settle`` seconds, and reads every node's RSS (VmRSS in /proc/PID/status, the
   node process itself; it has no children);
2. ``ketch perf produce`` of ``--records`` records, acks=all, replication factor 3,
   min.insync.replicas 2, into a topic of six partitions; RSS again;
3. the same into a topic of ``--partitions`` (1,000) partitions, which the tool creates
   (every partition gets a leader and two followers); RSS again, and once more after
   ``--settle`` seconds idle with all those partitions;
4. prints the RSS table (MB = 2**20 bytes), the two produce rates and their ratio.

Each produce is a child process, as in bench/run.py, so the nodes' RSS is theirs alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import _load, _machine, _run_step, _table
from bench.stats import MB

SUMMARY = "three local nodes: RSS idle, with six partitions and with 1,000 (replication factor 3)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=1000, help="partitions of the large topic (default 1000)")
    parser.add_argument("--records", type=int, default=200_000, help="records per produce run (default 200000)")
    parser.add_argument("--record-size", type=int, default=100, help="value bytes per record (default 100)")
    parser.add_argument("--settle", type=float, default=5.0, help="idle seconds before an idle reading (default 5)")
    parser.add_argument("--quiet", "-q", action="store_true", help="hide the tools' own output lines")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.set_defaults(handler=memory_handler)


def rss_bytes(pid: int) -> int:
    """Resident set size of process ``pid`` (VmRSS), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def memory_handler(args: argparse.Namespace) -> int:
    from node.cluster import LocalCluster

    started = time.monotonic()
    print("Ketch memory: three local nodes, replication factor 3")
    print(f"machine: {_machine()}")
    print(f"before: {_load()}", flush=True)
    readings: dict[str, dict[int, int]] = {}
    rates: dict[int, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ketch-memory-") as tmp:
        cluster = LocalCluster(Path(tmp) / "cluster", 3)

        def read(label: str) -> None:
            readings[label] = {n: rss_bytes(node.proc.pid) for n, node in cluster.nodes.items() if node.proc}
            print(f"RSS {label}: " + ", ".join(f"node {n} {v / MB:.0f} MB" for n, v in readings[label].items()))

        try:
            cluster.start()
            cluster.wait_ready(60)
            time.sleep(args.settle)
            read("idle")
            for count in (6, args.partitions):
                argv = ["perf", "produce", f"--bootstrap={cluster.bootstrap}", f"--topic=mem-{count}p"]
                argv += [f"--num-records={args.records}", f"--record-size={args.record_size}", "--acks=all"]
                argv += [f"--partitions={count}", "--replication-factor=3", "--min-insync-replicas=2"]
                rates[count] = _run_step(len(rates) + 1, argv, args.quiet)
                read(f"after produce to {count} partitions")
            time.sleep(args.settle)
            read(f"idle with {6 + args.partitions} partitions")
        except RuntimeError as exc:
            print(f"python -m bench memory: {exc}", file=sys.stderr, flush=True)
            return 1
        finally:
            cluster.close()  # kill -9: the data is thrown away; a controlled shutdown of each node takes seconds
    rows = [["RSS", "", *(f"node {n}" for n in readings["idle"])]]  # "": numbers right-aligned from column 2
    rows += [[label, "", *(f"{v / MB:.0f} MB" for v in by_node.values())] for label, by_node in readings.items()]
    print()
    print(_table(rows))
    six, many = rates[6]["records_per_sec"], rates[args.partitions]["records_per_sec"]
    print(
        f"\nproduce {args.records} x {args.record_size} B, acks=all: 6 partitions {six:,.0f} rec/s, "
        f"{args.partitions} partitions {many:,.0f} rec/s ({many / six:.2f} of six)"
    )
    print(f"\nmemory took {time.monotonic() - started:.1f} s in all; after it: {_load()}")
    if args.json:
        per_sec = {str(k): v["records_per_sec"] for k, v in rates.items()}
        print(json.dumps({"rss": readings, "records_per_sec": per_sec}))
    return 0
