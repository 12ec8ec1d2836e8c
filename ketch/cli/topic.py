"""``ketch topic create|list|describe|delete|add-partitions|alter-config|reassign`` (kafka-topics.sh,
kafka-configs.sh, rpk topic).

``describe`` shows each config's value and where it comes from, and marks
partitions that are offline or in unclean recovery (ketch/cli/configs.py);
``reassign`` is in ketch/cli/reassign.py.
"""

from __future__ import annotations

import argparse
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config, client_security, login_metadata
from ketch.cli import configs as config_cli
from ketch.cli import reassign
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError
from ketch.tls import open_channel


def register(commands: Any) -> None:
    topic = commands.add_parser("topic", help="create, list, describe and delete topics")
    sub = topic.add_subparsers(dest="topic_command", required=True, metavar="ACTION")

    create = sub.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", "-p", type=int, default=-1, help="default: the broker's default")
    create.add_argument("--replication-factor", "-r", type=int, default=-1, help="default: the broker's")
    create.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="topic config, e.g. retention.ms=3600000 (repeatable)",
    )
    create.set_defaults(handler=create_topic)

    listing = sub.add_parser("list", help="list topics")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_topics)

    describe = sub.add_parser("describe", help="partitions, leaders, replicas, ISR and configs")
    describe.add_argument("names", nargs="*", help="default: every topic")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=describe_topics)

    delete = sub.add_parser("delete", help="delete topics and all their records")
    delete.add_argument("names", nargs="+")
    delete.set_defaults(handler=delete_topics)

    grow = sub.add_parser("add-partitions", help="grow a topic to a new total number of partitions")
    grow.add_argument("name")
    grow.add_argument("--total", type=int, required=True, help="the new partition count (more than now)")
    grow.set_defaults(handler=add_partitions)

    elect = sub.add_parser("elect-leaders", help="move leadership back to each partition's preferred (first) replica")
    elect.add_argument("names", nargs="*", help="topics (default: every partition of every topic)")
    elect.add_argument("--partition", type=int, help="only this partition of the given topic")
    elect.add_argument("--json", action="store_true")
    elect.set_defaults(handler=elect_leaders)

    for parser in (create, listing, describe, delete, grow, elect):
        bootstrap_arg(parser)
    config_cli.register_topic(sub)
    reassign.register_topic(sub)


def parse_configs(pairs: list[str]) -> dict[str, str]:
    configs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise KetchError(f"--config expects KEY=VALUE, got {pair!r}", code=ErrorCode.INVALID_CONFIG)
        configs[key.strip()] = value.strip()
    return configs


def create_topic(args: argparse.Namespace) -> int:
    from ketch import Admin, NewTopic

    with Admin(**client_config(args.bootstrap)) as admin:
        admin.create_topics([NewTopic(args.name, args.partitions, args.replication_factor, parse_configs(args.config))])
    print(f"created topic {args.name}")
    return 0


def list_topics(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        names = sorted(admin.list_topics())
    print(dump_json(names) if args.json else "\n".join(names))
    return 0


def describe_json(description: Any, sources: dict[str, str] | None = None) -> dict[str, Any]:
    """``sources``: each config's Kafka source name."""
    return {
        "name": description.name,
        "topic_id": description.topic_id,
        "replication_factor": description.replication_factor,
        "configs": dict(description.configs),
        "config_sources": dict(sources or {}),
        "partitions": [
            {
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
                "recovering": p.recovering,
            }
            for p in description.partitions
        ],
    }


def describe_topics(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        descriptions = admin.describe_topics(args.names or None)
        sources = config_cli.topic_sources(admin, [d.name for d in descriptions])
    found = [describe_json(d, sources.get(d.name)) for d in descriptions]
    if args.json:
        print(dump_json(found[0] if len(args.names) == 1 else found))
        return 0
    for i, topic in enumerate(found):
        if i:
            print()
        print(
            f"Topic: {topic['name']}  id: {topic['topic_id']}  partitions: {len(topic['partitions'])}  "
            f"replication factor: {topic['replication_factor']}"
        )
        configs = [(f"{k}={v}", topic["config_sources"].get(k, "")) for k, v in sorted(topic["configs"].items())]
        width = max((len(pair) for pair, _ in configs), default=0)
        print("Configs:")
        for pair, source in configs:
            print(f"  {pair.ljust(width)}  {config_cli.SHORT_SOURCE.get(source, '')}".rstrip())
        rows = [
            (
                p["partition"],
                p["leader"],
                p["leader_epoch"],
                p["replicas"],
                p["isr"],
                config_cli.partition_status(p["leader"], p["recovering"]),
            )
            for p in topic["partitions"]
        ]
        print(table(("PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "STATUS"), rows))
    return 0


def delete_topics(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        admin.delete_topics(args.names)
    for name in args.names:
        print(f"deleted topic {name}")
    return 0


def add_partitions(args: argparse.Namespace) -> int:
    from ketch import Admin, NewPartitions

    with Admin(**client_config(args.bootstrap)) as admin:
        admin.create_partitions({args.name: NewPartitions(args.total)})
    print(f"topic {args.name} now has {args.total} partitions")
    return 0


def elect_leaders(args: argparse.Namespace) -> int:
    """Preferred-leader election through the controller (kafka-leader-election.sh --election-type preferred)."""

    import grpc

    from ketch.aio.connection import translate_rpc_error
    from ketch.api.v1 import controller_pb2 as cpb
    from ketch.api.v1 import controller_pb2_grpc

    request = cpb.ElectLeadersRequest()
    if args.names:
        from ketch import Admin

        with Admin(**client_config(args.bootstrap)) as admin:
            for description in admin.describe_topics(args.names):
                for p in description.partitions:
                    if args.partition is None or p.partition == args.partition:
                        request.partitions.add(topic=description.name, partition=p.partition)
    addresses = [a.strip() for a in args.bootstrap.split(",") if a.strip()]
    tried: set[str] = set()
    errors: list[str] = []
    response = None
    while addresses:
        address = addresses.pop(0)
        if address in tried:
            continue
        tried.add(address)
        try:  # every bootstrap server and voter in turn: one that is down must not end the command
            with open_channel(address, client_security()) as channel:
                stub = controller_pb2_grpc.KetchControllerStub(channel)
                metadata = login_metadata(channel, address)
                response = stub.ElectLeaders(request, timeout=30, metadata=metadata)
                if response.status.error_code == ErrorCode.NOT_CONTROLLER:
                    voters = stub.DescribeQuorum(cpb.DescribeQuorumRequest(), timeout=10, metadata=metadata).voters
                    leader = [v.address for v in voters if v.node_id == response.status.leader_id]
                    addresses = leader + [v.address for v in voters] + addresses
                    continue
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise translate_rpc_error(exc, address) from None
            errors.append(f"{address}: {exc.code().name}")
            response = None
            continue
        if response.status.error_code:
            raise KetchError(response.status.error_message, code=ErrorCode(response.status.error_code))
        results = [
            {"topic": r.topic, "partition": r.partition, "result": ErrorCode(r.error_code).name}
            for r in response.results
        ]
        if args.json:
            print(dump_json(results))
        else:
            print(table(("TOPIC", "PARTITION", "RESULT"), [(r["topic"], r["partition"], r["result"]) for r in results]))
        return 0
    why = f" ({'; '.join(errors)})" if errors else ""
    raise KetchError(f"no active controller among {sorted(tried)}{why}", code=ErrorCode.NOT_CONTROLLER)
