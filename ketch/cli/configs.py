"""Config commands (kafka-configs.sh): ``ketch topic alter-config`` and ``ketch cluster config``,
and what ``ketch topic describe`` adds: each config's source and the partitions in unclean recovery.

    ketch topic alter-config T --set retention.ms=3600000 [--set k=v ...] [--delete k ...] [--validate-only]
    ketch cluster config                                   the cluster-wide dynamic broker configs
    ketch cluster config --node N                          what broker N applies, and where each value comes from
    ketch cluster config [--node N] --set log.retention.ms=60000 [--delete k ...]

Sources are printed short: ``topic`` (the topic's override), ``broker`` (set
at runtime for that broker), ``cluster`` (set at runtime for every broker),
``node`` (the node's own setting), ``default`` (Ketch's); ``--json`` gives
Kafka's names (DYNAMIC_TOPIC_CONFIG, ...).

Whether a partition is in unclean recovery comes with its metadata
(``PartitionMetadata.recovering``, from the broker's image).
"""

from __future__ import annotations

import argparse
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError

SHORT_SOURCE = {
    "DYNAMIC_TOPIC_CONFIG": "topic",
    "DYNAMIC_BROKER_CONFIG": "broker",
    "DYNAMIC_DEFAULT_BROKER_CONFIG": "cluster",
    "STATIC_BROKER_CONFIG": "node",
    "DEFAULT_CONFIG": "default",
}


def parse_pairs(pairs: list[str], flag: str) -> dict[str, str]:
    configs = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KetchError(f"{flag} expects KEY=VALUE, got {pair!r}", code=ErrorCode.INVALID_CONFIG)
        configs[key.strip()] = value.strip()
    return configs


def _change_args(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"e.g. {example} (repeatable)")
    parser.add_argument("--delete", action="append", default=[], metavar="KEY", help="back to the next source down")
    parser.add_argument("--validate-only", action="store_true", help="check the change, apply nothing")


def register_topic(sub: Any) -> argparse.ArgumentParser:
    alter = sub.add_parser("alter-config", help="set or delete a topic's config overrides")
    alter.add_argument("name")
    _change_args(alter, "retention.ms=3600000")
    alter.set_defaults(handler=alter_topic_config)
    bootstrap_arg(alter)
    return alter


def register_cluster(sub: Any) -> argparse.ArgumentParser:
    config = sub.add_parser("config", help="show or change the dynamic broker configs (cluster-wide or one broker's)")
    config.add_argument("--node", type=int, help="one broker's configs (default: the cluster-wide ones)")
    _change_args(config, "log.retention.ms=86400000")
    config.add_argument("--json", action="store_true")
    config.set_defaults(handler=cluster_config)
    bootstrap_arg(config)
    return config


def _changes(args: argparse.Namespace) -> dict[str, str | None]:
    changes: dict[str, str | None] = dict(parse_pairs(args.set, "--set"))
    for key in args.delete:
        if key in changes:
            raise KetchError(f"{key} is both set and deleted", code=ErrorCode.INVALID_REQUEST)
        changes[key] = None
    return changes


def _alter(args: argparse.Namespace, resource: Any, what: str) -> int:
    from ketch import Admin

    changes = _changes(args)
    if not changes:
        raise KetchError("nothing to change: give --set KEY=VALUE or --delete KEY", code=ErrorCode.INVALID_REQUEST)
    with Admin(**client_config(args.bootstrap)) as admin:
        admin.incremental_alter_configs({resource: changes}, validate_only=args.validate_only)
    done = ", ".join(f"{k}={v}" if v is not None else f"{k} deleted" for k, v in changes.items())
    print(f"{'valid, not applied' if args.validate_only else 'altered'}: {what}: {done}")
    return 0


def alter_topic_config(args: argparse.Namespace) -> int:
    from ketch import ConfigResource

    return _alter(args, ConfigResource.topic(args.name), f"topic {args.name}")


def cluster_config(args: argparse.Namespace) -> int:
    from ketch import Admin, ConfigResource

    resource = ConfigResource.broker(args.node)
    if args.set or args.delete:
        return _alter(args, resource, str(resource))
    with Admin(**client_config(args.bootstrap)) as admin:
        entries = admin.describe_configs([resource])[resource]
    rows = [{"name": e.name, "value": e.value, "source": e.source.name} for e in entries.values()]
    if args.json:
        print(dump_json(rows))
        return 0
    print(table(("KEY", "VALUE", "SOURCE"), [(r["name"], r["value"], SHORT_SOURCE[r["source"]]) for r in rows]))
    return 0


def topic_sources(admin: Any, names: list[str]) -> dict[str, dict[str, str]]:
    """``{topic: {key: Kafka source name}}``."""
    from ketch import ConfigResource

    described = admin.describe_configs([ConfigResource.topic(n) for n in names])
    return {r.name: {k: e.source.name for k, e in entries.items()} for r, entries in described.items()}


def partition_status(leader: int, recovering: bool) -> str:
    if recovering:
        return "unclean recovery"
    return "offline" if leader == -1 else ""
