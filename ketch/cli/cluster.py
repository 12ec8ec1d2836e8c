"""``ketch cluster up|down|describe``: a local cluster, and what a cluster looks like.

``cluster up`` starts ``--nodes`` combined broker+controller nodes (default
3) as child processes with data under ``--data-dir`` (node/cluster.py has
the layout), waits until a controller is active and every broker is
unfenced, prints the bootstrap servers and how to produce and consume (and a line
``Kafka bootstrap servers: HOST:PORT,...`` for Kafka clients: every node's Kafka protocol
listener, on ``--kafka-port`` + i (29092 + i with the default ``--port``, else free ports), kept in
cluster.json as ``kafka_bootstrap``; with ``--tls`` it is SSL with mutual TLS like the rest), and
stays in the foreground: Ctrl-C or SIGTERM stops every node with SIGTERM
(controlled shutdown) and waits for them. ``--detach`` returns once the
cluster is ready and leaves each node's pid in ``DIR/node-<id>.pid``;
``cluster down`` stops those. Running ``up`` again on the same directory
starts whichever nodes are not running, on their existing data and ports.
Topics created without a replication factor get min(3, nodes), and
min.insync.replicas 2 when that is 3 (the producer defaults to acks=all).

``cluster describe`` asks the active controller (found through the first
bootstrap node that answers) for each broker (id, address, alive or fenced), the active controller, the Raft term
and commit index, and the quorum's voters (with directory ids) and observers.
``cluster add-controller`` / ``remove-controller`` change the voters
(ketch/cli/quorum.py). ``cluster config`` shows and changes the dynamic broker
configs (ketch/cli/configs.py). ``cluster decommission --node N``
moves every replica off a node (reassign.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from ketch.bootstrap import bootstrap_arg
from ketch.cli import configs as config_cli
from ketch.cli import quorum as quorum_cli
from ketch.cli import reassign
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError

DEFAULT_PORT, DEFAULT_KAFKA_PORT = 9092, 29092


def register(commands: Any) -> None:
    cluster = commands.add_parser("cluster", help="run a local cluster; describe a cluster")
    sub = cluster.add_subparsers(dest="cluster_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start a local cluster (foreground; Ctrl-C stops it)")
    up.add_argument("--nodes", type=int, default=3, help="number of combined nodes (default %(default)s)")
    up.add_argument("--data-dir", default=".ketch", help="where the nodes keep their data (default %(default)s)")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help="client port of node 1; node i gets port+i-1")
    up.add_argument("--metrics-port", type=int, default=9644, help="metrics port of node 1; node i gets +i-1")
    up.add_argument(
        "--kafka-port",
        type=int,
        default=None,
        help="Kafka protocol port of node 1; node i gets +i-1 (default 29092 with the default --port, "
        "else free ports; SSL with --tls)",
    )
    up.add_argument("--detach", action="store_true", help="return once ready; pids in DIR/node-<id>.pid")
    up.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS on every connection: a local CA and certificates under DIR/tls/ (kept for later runs)",
    )
    up.add_argument(
        "--node-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every node, e.g. --node-arg=--auto-create-topics=true",
    )
    up.set_defaults(handler=cluster_up)

    down = sub.add_parser("down", help="stop a cluster started with --detach")
    down.add_argument("--data-dir", default=".ketch")
    down.set_defaults(handler=cluster_down)

    issue = sub.add_parser("issue-cert", help="a client certificate from a --tls cluster's CA")
    issue.add_argument("--data-dir", default=".ketch", help="the cluster's directory (default %(default)s)")
    issue.add_argument("--name", required=True, help="the certificate's principal: User:NAME")
    issue.add_argument("--host", action="append", default=[], help="a host name or IP it serves (for a node)")
    issue.set_defaults(handler=issue_cert)

    describe = sub.add_parser("describe", help="brokers, the active controller, Raft term and commit index")
    describe.add_argument("--json", action="store_true")
    bootstrap_arg(describe)
    describe.set_defaults(handler=describe_cluster)

    config_cli.register_cluster(sub)
    reassign.register_cluster(sub)
    quorum_cli.register_cluster(sub)


def cluster_up(args: argparse.Namespace) -> int:
    from node.cluster import LocalCluster

    if args.nodes < 1:
        raise KetchError(f"--nodes must be >= 1, got {args.nodes}", code=ErrorCode.INVALID_REQUEST)
    root = Path(args.data_dir).resolve()
    # Topics of a local cluster are replicated by default: RF min(3, nodes), min ISR 2 when RF 3.
    replication = min(3, args.nodes)
    defaults = [f"--default-replication-factor={replication}"]
    if replication >= 3:
        defaults.append("--min-insync-replicas=2")
    cluster = LocalCluster(
        root,
        args.nodes,
        base_port=args.port,
        base_metrics_port=args.metrics_port,
        extra_args=[*defaults, *args.node_arg],
        detach=args.detach,
        tls=args.tls,
        kafka=True,
        base_kafka_port=args.kafka_port or (DEFAULT_KAFKA_PORT if args.port == DEFAULT_PORT else None),
    )
    stop = threading.Event()
    if not args.detach:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    try:
        started = cluster.start()
        cluster.wait_ready()
    except (RuntimeError, TimeoutError) as exc:
        if not args.detach:
            cluster.stop()
        raise KetchError(str(exc), code=ErrorCode.REQUEST_TIMED_OUT) from None
    first = next(iter(cluster.nodes.values()))
    print(
        UP_BANNER.format(
            bootstrap=cluster.bootstrap,
            data=root,
            metrics=first.metrics_port,
            bin=Path(sys.executable).parent,
            started=", ".join(map(str, started)) or "none (all were running)",
            replication=replication,
            tls=TLS_BANNER.format(**vars(cluster.security)) if cluster.tls else "",
        ),
        flush=True,
    )
    if cluster.kafka_bootstrap:
        print(f"Kafka bootstrap servers: {cluster.kafka_bootstrap}", flush=True)
        if cluster.tls:
            print(
                "  (SSL, mutual TLS: security.protocol=SSL with {ssl_cafile}, {ssl_certfile} and {ssl_keyfile})".format(
                    **vars(cluster.security)
                ),
                flush=True,
            )
    if args.detach:
        print(f"Detached; stop it with: ketch cluster down --data-dir {args.data_dir}")
        return 0
    print("Ctrl-C stops the cluster.", flush=True)
    try:
        while not stop.wait(0.5):
            for node in cluster.nodes.values():
                if node.proc is not None and node.proc.poll() is not None:
                    print(
                        f"node {node.node_id} exited ({node.proc.returncode}); see {node.data_dir / 'node.log'}",
                        file=sys.stderr,
                    )
                    return 1
    finally:
        print("stopping...", file=sys.stderr, flush=True)
        cluster.stop()
    return 0


TLS_BANNER = """
  export KETCH_SECURITY_PROTOCOL=SSL KETCH_SSL_CAFILE={ssl_cafile}
  export KETCH_SSL_CERTFILE={ssl_certfile} KETCH_SSL_KEYFILE={ssl_keyfile}"""


def issue_cert(args: argparse.Namespace) -> int:
    from node import certificates

    directory = certificates.tls_dir(Path(args.data_dir).resolve())
    if not (directory / "ca.pem").exists():
        raise KetchError(
            f"no CA in {directory}: start the cluster with `ketch cluster up --tls` first",
            code=ErrorCode.INVALID_CONFIG,
        )
    try:
        cert, key = certificates.issue(directory, args.name, args.host)
    except ValueError as exc:
        raise KetchError(str(exc), code=ErrorCode.INVALID_REQUEST) from None
    print(f"{cert}\n{key}\nprincipal User:{args.name}; signed by {directory / 'ca.pem'}")
    return 0


def cluster_down(args: argparse.Namespace) -> int:
    from node.cluster import LAYOUT, LocalCluster

    root = Path(args.data_dir).resolve()
    if not (root / LAYOUT).exists():
        raise KetchError(f"no cluster in {root} (no {LAYOUT})", code=ErrorCode.INVALID_REQUEST)
    stopped = LocalCluster(root).stop_detached()
    print(f"stopped nodes {', '.join(map(str, stopped))}" if stopped else "no node was running")
    return 0


UP_BANNER = """\
Ketch is up: bootstrap servers {bootstrap}
  nodes started: {started}
  data:    {data}
  metrics: http://127.0.0.1:{metrics}/metrics (node i: port +i-1)

In another shell:
  export PATH={bin}:$PATH KETCH_BOOTSTRAP={bootstrap}{tls}
  ketch topic create demo --partitions 3     # replication factor {replication} by default
  seq 1 10 | ketch produce demo
  ketch consume demo --from-beginning --max-messages 10
  ketch cluster describe"""


def describe_cluster(args: argparse.Namespace) -> int:
    quorum = quorum_cli.describe_quorum_at_leader(args.bootstrap)
    brokers = [
        {
            "node_id": b.broker_id,
            "address": f"{b.host}:{b.port}",
            "rack": b.rack,
            "state": "fenced" if b.fenced else "alive",
            "broker_epoch": b.broker_epoch,
            "listeners": {e.name: f"{e.host}:{e.port}" for e in b.endpoints},  # "address" is the inter-broker one
        }
        for b in quorum.brokers
    ]
    voters = [
        {"node_id": v.node_id, "address": v.address, "match_index": v.match_index, "directory_id": v.directory_id}
        for v in quorum.voters
    ]
    observers = [{"node_id": v.node_id, "address": v.address, "match_index": v.match_index} for v in quorum.observers]
    info = {
        "active_controller": quorum.leader_id,
        "raft_term": quorum.term,
        "commit_index": quorum.commit_index,
        "applied_index": quorum.applied_index,
        "asked_node": quorum.node_id,
        "brokers": brokers,
        "voters": voters,
        "observers": observers,
    }
    if args.json:
        print(dump_json(info))
        return 0
    print(
        f"Active controller: {quorum.leader_id}  Raft term: {quorum.term}  commit index: {quorum.commit_index}  "
        f"(asked node {quorum.node_id})"
    )
    rows = [(b["node_id"], b["address"], b["rack"], b["state"], b["broker_epoch"]) for b in brokers]
    print(table(("BROKER", "ADDRESS", "RACK", "STATE", "EPOCH"), rows))
    quorum_rows = [(v["node_id"], v["address"], "voter", v["directory_id"] or "-") for v in voters]
    quorum_rows += [(o["node_id"], o["address"], "observer", "") for o in observers]
    print(table(("CONTROLLER", "ADDRESS", "ROLE", "DIRECTORY"), quorum_rows))
    return 0
