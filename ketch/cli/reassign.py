"""``ketch topic reassign`` and ``ketch cluster decommission``: move replicas (KIP-455).

    ketch topic reassign T --partition P --replicas 2,3,4   start (or replace) a move
    ketch topic reassign T --partition P --cancel           back to the replicas it had
    ketch topic reassign --status [T ...]                   moves in progress, with their ISR
    ketch cluster decommission --node N [--no-wait]         move every replica off node N

A move returns once it has started; the controller completes it when every
target replica has caught up and joined the ISR. ``decommission`` plans the
moves with coordinator/metadata/decommission.py (each replica of node N goes
in place to the least-loaded other live broker, racks kept apart), starts
them, then — unless ``--no-wait`` — prints a line each time the count of
partitions still on the node changes, and finally that node N may be
stopped. Interrupting the wait leaves the moves running.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError


def register_topic(sub: Any) -> None:
    reassign = sub.add_parser("reassign", help="move a partition's replicas to other brokers; show or cancel moves")
    reassign.add_argument("topic", nargs="?")
    reassign.add_argument("--partition", type=int)
    reassign.add_argument("--replicas", help="the target broker ids, preferred leader first, e.g. 2,3,4")
    reassign.add_argument("--cancel", action="store_true", help="cancel the partition's move in progress")
    reassign.add_argument("--status", action="store_true", help="list the moves in progress")
    reassign.add_argument("--json", action="store_true")
    bootstrap_arg(reassign)
    reassign.set_defaults(handler=topic_reassign)


def register_cluster(sub: Any) -> None:
    decommission = sub.add_parser("decommission", help="move every replica off a node, so it can be stopped")
    decommission.add_argument("--node", type=int, required=True)
    decommission.add_argument("--no-wait", action="store_true", help="start the moves and return")
    decommission.add_argument("--timeout", type=float, default=0, help="seconds to wait at most (default: no limit)")
    bootstrap_arg(decommission)
    decommission.set_defaults(handler=cluster_decommission)


def parse_replicas(text: str) -> list[int]:
    try:
        replicas = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise KetchError(
            f"--replicas expects broker ids like 2,3,4, got {text!r}", code=ErrorCode.INVALID_REPLICA_ASSIGNMENT
        ) from None
    return replicas


def topic_reassign(args: argparse.Namespace) -> int:
    from ketch import Admin, TopicPartition

    if args.status:
        return _status(args)
    if args.topic is None or args.partition is None or (args.replicas is None) == (not args.cancel):
        raise KetchError(
            "give a topic, --partition and either --replicas or --cancel (or --status)", code=ErrorCode.INVALID_REQUEST
        )
    tp = TopicPartition(args.topic, args.partition)
    target = None if args.cancel else parse_replicas(args.replicas)
    with Admin(**client_config(args.bootstrap)) as admin:
        admin.alter_partition_reassignments({tp: target})
        moving = admin.list_partition_reassignments([args.topic]).get(tp)
        replicas = admin.describe_topics([args.topic])[0].partitions[args.partition].replicas
    where = f"{args.topic}-{args.partition}"
    if moving is not None:
        print(
            f"reassignment of {where} started: replicas {moving.replicas} (adding {moving.adding_replicas}, "
            f"removing {moving.removing_replicas}); `ketch topic reassign --status` follows it"
        )
    elif args.cancel:
        print(f"reassignment of {where} cancelled: replicas {replicas}")
    else:
        print(f"{where} is on replicas {replicas}: nothing to copy, done")
    return 0


def _status(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        moves = admin.list_partition_reassignments([args.topic] if args.topic else None)
        topics = sorted({tp.topic for tp in moves})
        isr = {
            (d.name, p.partition): p.isr
            for d in (admin.describe_topics(topics) if topics else [])
            for p in d.partitions
        }
    rows = [
        {
            "topic": tp.topic,
            "partition": tp.partition,
            "replicas": m.replicas,
            "adding": m.adding_replicas,
            "removing": m.removing_replicas,
            "isr": isr.get((tp.topic, tp.partition), []),
        }
        for tp, m in moves.items()
    ]
    if args.json:
        print(dump_json(rows))
    elif not rows:
        print("no reassignments in progress")
    else:
        columns = ("topic", "partition", "replicas", "adding", "removing", "isr")
        print(table(tuple(c.upper() for c in columns), [tuple(r[c] for c in columns) for r in rows]))
    return 0


def cluster_decommission(args: argparse.Namespace) -> int:
    from coordinator.metadata.decommission import plan_decommission
    from ketch import Admin, TopicPartition

    node = args.node
    with Admin(**client_config(args.bootstrap)) as admin:
        live = {b.node_id: b.rack or "" for b in admin.describe_cluster().brokers}
        targets = _targets(admin)
        try:
            plan = plan_decommission(targets, live, node)
        except ValueError as exc:
            raise KetchError(
                f"{exc}; only live (unfenced) brokers take replicas: run it again once the others are back",
                code=ErrorCode.INVALID_REPLICA_ASSIGNMENT,
            ) from None
        if plan:
            admin.alter_partition_reassignments({TopicPartition(*key): target for key, target in plan.items()})
            for (topic, index), target in sorted(plan.items()):
                print(f"moving {topic}-{index}: {list(targets[(topic, index)])} -> {target}")
        total = len(plan)
        if args.no_wait:
            print(f"started {total} move(s) off node {node}; `ketch topic reassign --status` follows them")
            return 0
        deadline = time.monotonic() + args.timeout if args.timeout > 0 else None
        left = -1
        while True:
            holding = _holding(admin, node)
            if len(holding) != left:
                left = len(holding)
                print(f"{max(total - left, 0)} of {total} move(s) done; {left} partition(s) still on node {node}")
            if not holding:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise KetchError(
                    f"node {node} still holds replicas of {', '.join(holding[:10])} after {args.timeout}s; "
                    "the moves go on (`ketch topic reassign --status`)",
                    code=ErrorCode.REQUEST_TIMED_OUT,
                )
            time.sleep(1.0)
    print(f"node {node} holds no replicas: it may be stopped")
    return 0


def _targets(admin: Any) -> dict[tuple[str, int], list[int]]:
    """Each partition's target replicas: its replicas, or the target of its move in progress."""
    moves = admin.list_partition_reassignments()
    out = {}
    for d in admin.describe_topics():
        for p in d.partitions:
            move = moves.get((d.name, p.partition))
            out[(d.name, p.partition)] = move.target_replicas if move is not None else list(p.replicas)
    return out


def _holding(admin: Any, node: int) -> list[str]:
    """Partitions that still list ``node`` as a replica (a move off it completes by dropping it)."""
    return [f"{d.name}-{p.partition}" for d in admin.describe_topics() for p in d.partitions if node in p.replicas]
