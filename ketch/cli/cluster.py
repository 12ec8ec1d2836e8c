"""``ketch cluster up`` (a local cluster in the foreground) and ``ketch cluster describe``.

``cluster up`` starts the nodes as child processes (``python -m ketch node``)
with data under ``--data-dir`` (``node-<id>/`` each), waits until every node
is ready, prints the bootstrap servers and how to produce and consume, and
stays in the foreground; Ctrl-C or SIGTERM stops every node with SIGTERM
(controlled shutdown) and waits for them. Running it again on the same data
directory starts the nodes on their existing data.

Until the controller quorum lands, a cluster is one node (``--nodes 1``).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ketch.cli import bootstrap_arg
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError


def register(commands: Any) -> None:
    cluster = commands.add_parser("cluster", help="run a local cluster; describe a cluster")
    sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start a local cluster in the foreground (Ctrl-C stops it)")
    up.add_argument("--nodes", type=int, default=1, help="number of nodes (1 until the controller quorum lands)")
    up.add_argument("--data-dir", default=".ketch", help="where each node keeps its data (default %(default)s)")
    up.add_argument("--port", type=int, default=9092, help="client port of node 1 (default %(default)s)")
    up.add_argument("--metrics-port", type=int, default=9644, help="metrics port of node 1 (default %(default)s)")
    up.set_defaults(handler=cluster_up)
    describe = sub.add_parser("describe", help="brokers and the controller")
    describe.add_argument("--json", action="store_true")
    bootstrap_arg(describe)
    describe.set_defaults(handler=describe_cluster)


def cluster_up(args: argparse.Namespace) -> int:
    from node.process import NodeProcess

    if args.nodes != 1:
        raise KetchError(
            f"--nodes {args.nodes}: a multi-node cluster needs the controller quorum, which is not built yet; "
            "use --nodes 1",
            code=ErrorCode.INVALID_REQUEST,
        )
    root = Path(args.data_dir).resolve()
    nodes = [
        NodeProcess(root / f"node-{i}", i, port=args.port + i - 1, metrics_port=args.metrics_port + i - 1)
        for i in range(1, args.nodes + 1)
    ]
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for node in nodes:
            node.start()
        bootstrap = ",".join(n.bootstrap for n in nodes)
        print(
            UP_BANNER.format(
                bootstrap=bootstrap, data=root, metrics=nodes[0].metrics_port, bin=Path(sys.executable).parent
            ),
            flush=True,
        )
        while not stop.wait(0.5):
            for node in nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    print(
                        f"node {node.node_id} exited ({node.proc.returncode}); see {node.data_dir / 'node.log'}",
                        file=sys.stderr,
                    )
                    return 1
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        for node in nodes:
            node.stop()
    return 0


UP_BANNER = """\
Ketch is up: bootstrap servers {bootstrap}
  data:    {data}
  metrics: http://127.0.0.1:{metrics}/metrics

In another shell:
  export PATH={bin}:$PATH KETCH_BOOTSTRAP={bootstrap}
  ketch topic create demo --partitions 3
  seq 1 10 | ketch produce demo
  ketch consume demo --from-beginning --max-messages 10

Ctrl-C stops the cluster."""


def describe_cluster(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(bootstrap_servers=args.bootstrap) as admin:
        info = admin.describe_cluster()
    brokers = [{"node_id": b.node_id, "host": b.host, "port": b.port, "rack": b.rack} for b in info.brokers]
    if args.json:
        print(dump_json({"cluster_id": info.cluster_id, "controller_id": info.controller_id, "brokers": brokers}))
        return 0
    print(f"Cluster: {info.cluster_id}  controller: {info.controller_id}")
    print(table(("ID", "HOST", "PORT", "RACK"), [(b["node_id"], b["host"], b["port"], b["rack"]) for b in brokers]))
    return 0
