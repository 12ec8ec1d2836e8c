"""``ketch group list|describe|reset-offsets|delete`` (kafka-consumer-groups.sh, rpk group).

Rules:
- ``list`` asks every broker (each lists the groups it coordinates) and
  prints group, state and protocol type.
- ``describe GROUP`` prints the state, the assignor, the generation and the
  members, then one row per partition the group committed or a member owns:
  committed offset, log end offset (the partition leader's high watermark),
  lag, and the member and client owning it ("-" where there is none). A
  group that does not exist (state Dead, nothing committed) is the error
  GROUP_ID_NOT_FOUND.
- ``reset-offsets GROUP --topic T [--partition N]`` sets the group's
  committed offsets of every partition of T (or just N) to a place computed
  here with ListOffsets: ``--to-earliest`` (log start), ``--to-latest`` (log
  end), ``--to-datetime ISO8601`` (the first record at or after that time,
  the log end if none is; a time without a UTC offset is local time, as in
  Kafka), ``--to-offset N`` or ``--shift-by N`` (from the committed offset;
  a partition with none committed is an error). Every new offset is clamped
  to [log start, log end]. It prints old and new offsets; ``--dry-run``
  changes nothing. The broker refuses a group that has members
  (NON_EMPTY_GROUP): stop its consumers first, as with Kafka.
- ``delete GROUP...`` removes groups without members and their offsets.
- Read commands take ``--json``; errors are one line, ``ketch: CODE: ...``,
  and a nonzero exit (ketch/cli/__init__.py).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError


def register(commands: Any) -> None:
    group = commands.add_parser("group", help="list, describe, reset offsets of and delete consumer groups")
    sub = group.add_subparsers(dest="group_command", required=True, metavar="ACTION")

    listing = sub.add_parser("list", help="list consumer groups")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_groups)

    describe = sub.add_parser("describe", help="members, committed offsets, log end offsets and lag")
    describe.add_argument("group")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=describe_group)

    reset = sub.add_parser("reset-offsets", help="move a group's committed offsets (the group must have no members)")
    reset.add_argument("group")
    reset.add_argument("--topic", "-t", required=True)
    reset.add_argument("--partition", "-p", type=int, help="only this partition (default: every one)")
    mode = reset.add_mutually_exclusive_group(required=True)
    mode.add_argument("--to-earliest", action="store_true", help="the log start offset")
    mode.add_argument("--to-latest", action="store_true", help="the log end offset")
    mode.add_argument("--to-datetime", metavar="ISO8601", help="the first record at or after this time")
    mode.add_argument("--to-offset", type=int, metavar="N", help="this offset")
    mode.add_argument("--shift-by", type=int, metavar="N", help="the committed offset plus N (may be negative)")
    reset.add_argument("--dry-run", action="store_true", help="print the new offsets without setting them")
    reset.add_argument("--json", action="store_true")
    reset.set_defaults(handler=reset_offsets)

    delete = sub.add_parser("delete", help="delete groups without members and their committed offsets")
    delete.add_argument("groups", nargs="+")
    delete.set_defaults(handler=delete_groups)

    for parser in (listing, describe, reset, delete):
        bootstrap_arg(parser)


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def list_groups(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        groups = admin.list_consumer_groups()
    if args.json:
        print(dump_json([{"group_id": g.group_id, "state": g.state, "protocol_type": g.protocol_type} for g in groups]))
    elif groups:
        print(table(("GROUP", "STATE", "PROTOCOL-TYPE"), [(g.group_id, g.state, g.protocol_type) for g in groups]))
    return 0


def describe_json(d: Any) -> dict[str, Any]:
    return {
        "group_id": d.group_id,
        "state": d.state,
        "protocol_type": d.protocol_type,
        "protocol": d.protocol,
        "generation": d.generation,
        "leader": d.leader,
        "members": [
            {
                "member_id": m.member_id,
                "client_id": m.client_id,
                "host": m.host,
                "assignment": [{"topic": tp.topic, "partition": tp.partition} for tp in m.assignment],
            }
            for m in d.members
        ],
        "offsets": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "committed_offset": p.committed_offset,
                "log_end_offset": p.log_end_offset,
                "lag": p.lag,
                "member_id": p.member_id,
                "client_id": p.client_id,
            }
            for p in d.offsets
        ],
        "total_lag": d.total_lag,
    }


def describe_group(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        (d,) = admin.describe_consumer_groups([args.group])
    if d.state == "Dead" and not d.offsets:
        raise KetchError(f"consumer group {args.group!r} does not exist", code=ErrorCode.GROUP_ID_NOT_FOUND)
    if args.json:
        print(dump_json(describe_json(d)))
        return 0
    print(
        f"Group: {d.group_id}  state: {d.state}  protocol: {d.protocol or '-'}  generation: {d.generation}  "
        f"members: {len(d.members)}  total lag: {d.total_lag}"
    )
    if d.members:
        print()
        members = [(m.member_id, m.client_id, m.host, [f"{t}-{p}" for t, p in m.assignment] or "-") for m in d.members]
        print(table(("MEMBER-ID", "CLIENT-ID", "HOST", "PARTITIONS"), members))
    if d.offsets:
        print()
        rows = [
            (
                p.topic,
                p.partition,
                _dash(p.committed_offset),
                _dash(p.log_end_offset),
                _dash(p.lag),
                _dash(p.member_id),
                _dash(p.client_id),
            )
            for p in d.offsets
        ]
        print(table(("TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "MEMBER-ID", "CLIENT-ID"), rows))
    return 0


def parse_datetime(text: str) -> int:
    """ISO 8601 as ms since the epoch; without a UTC offset the time is local, as in Kafka's tool."""
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise KetchError(
            f"--to-datetime expects ISO 8601, e.g. 2026-11-26T23:00:00Z or 2026-11-26T23:00:00+01:00, got {text!r}",
            code=ErrorCode.INVALID_REQUEST,
        ) from None
    return int(when.timestamp() * 1000)  # a naive datetime's timestamp() is local time


def plan_reset(admin: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Old and new committed offset of every chosen partition, computed with ListOffsets."""
    from ketch import TopicPartition

    (description,) = admin.describe_topics([args.topic])  # typed error for a missing topic
    partitions = [p.partition for p in description.partitions]
    if args.partition is not None:
        if args.partition not in partitions:
            raise KetchError(
                f"topic {args.topic!r} has partitions 0..{len(partitions) - 1}; there is no {args.partition}",
                code=ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
            )
        partitions = [args.partition]
    tps = [TopicPartition(args.topic, p) for p in partitions]
    start = admin.list_offsets(dict.fromkeys(tps, "earliest"))
    end = admin.list_offsets(dict.fromkeys(tps, "latest"))
    committed = admin.list_consumer_group_offsets(args.group)
    if args.to_datetime is not None:
        found = admin.list_offsets(dict.fromkeys(tps, parse_datetime(args.to_datetime)))
    plan = []
    for tp in tps:
        old = committed.get(tp)
        if args.to_earliest:
            target = start[tp]
        elif args.to_latest:
            target = end[tp]
        elif args.to_datetime is not None:
            target = end[tp] if found[tp] < 0 else found[tp]
        elif args.to_offset is not None:
            target = args.to_offset
        else:
            if old is None:
                raise KetchError(
                    f"cannot shift {tp.topic}-{tp.partition}: group {args.group!r} has no committed offset there; "
                    "use --to-earliest, --to-latest, --to-datetime or --to-offset",
                    code=ErrorCode.INVALID_REQUEST,
                )
            target = old + args.shift_by
        new = min(max(target, start[tp]), end[tp])
        plan.append({"topic": tp.topic, "partition": tp.partition, "old_offset": old, "new_offset": new})
    return plan


def reset_offsets(args: argparse.Namespace) -> int:
    from ketch import Admin, TopicPartition

    with Admin(**client_config(args.bootstrap)) as admin:
        plan = plan_reset(admin, args)
        if not args.dry_run:
            admin.alter_consumer_group_offsets(
                args.group, {TopicPartition(p["topic"], p["partition"]): p["new_offset"] for p in plan}
            )
    if args.json:
        print(dump_json({"group_id": args.group, "dry_run": args.dry_run, "partitions": plan}))
        return 0
    rows = [(args.group, p["topic"], p["partition"], _dash(p["old_offset"]), p["new_offset"]) for p in plan]
    print(table(("GROUP", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET"), rows))
    if args.dry_run:
        print("(dry run: nothing was changed)")
    return 0


def delete_groups(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        admin.delete_consumer_groups(args.groups)
    for group_id in args.groups:
        print(f"deleted group {group_id}")
    return 0
