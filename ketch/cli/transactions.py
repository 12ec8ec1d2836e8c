"""``ketch transactions list|describe`` (kafka-transactions.sh).

Rules:
- ``list`` asks every broker (each lists the transactional ids it
  coordinates) and prints id, producer id and state; ``--state S`` (repeatable)
  keeps only those states.
- ``describe ID`` asks the id's transaction coordinator and prints its state,
  producer id and epoch, timeout, the start time of the open transaction and
  how long it has run (``-`` when none is open), its partitions and groups.
- Both take ``--json``; errors are one line, ``ketch: CODE: ...``, and a
  nonzero exit (ketch/cli/__init__.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config
from ketch.cli.output import dump_json, table


def register(commands: Any) -> None:
    txn = commands.add_parser("transactions", help="list and describe transactions")
    sub = txn.add_subparsers(dest="transactions_command", required=True, metavar="ACTION")

    listing = sub.add_parser("list", help="transactional ids, their producer ids and states")
    listing.add_argument("--state", action="append", default=[], help="only this state (repeatable)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=list_transactions)

    describe = sub.add_parser("describe", help="state, producer id and epoch, partitions and start time")
    describe.add_argument("transactional_id")
    describe.add_argument("--json", action="store_true")
    describe.set_defaults(handler=describe_transaction)

    for parser in (listing, describe):
        bootstrap_arg(parser)


def list_transactions(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        found = admin.list_transactions(args.state)
    if args.json:
        print(dump_json([dataclasses.asdict(t) for t in found]))
    else:
        print(
            table(
                ["TRANSACTIONAL-ID", "PRODUCER-ID", "STATE"],
                [[t.transactional_id, t.producer_id, t.state] for t in found],
            )
        )
    return 0


def describe_transaction(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        (d,) = admin.describe_transactions([args.transactional_id])
    open_ms = int(time.time() * 1000) - d.start_time_ms if d.start_time_ms >= 0 else None
    if args.json:
        out = dataclasses.asdict(d)
        out["partitions"] = [{"topic": t, "partition": p} for t, p in d.partitions]
        out["duration_ms"] = open_ms
        print(dump_json(out))
        return 0
    headers = [
        "TRANSACTIONAL-ID", "PRODUCER-ID", "PRODUCER-EPOCH", "STATE", "TIMEOUT-MS", "START-TIME-MS", "DURATION-MS",
        "PARTITIONS", "GROUPS",
    ]  # fmt: skip
    row = [
        d.transactional_id,
        d.producer_id,
        d.producer_epoch,
        d.state,
        d.transaction_timeout_ms,
        d.start_time_ms if d.start_time_ms >= 0 else "-",
        "-" if open_ms is None else open_ms,
        [f"{t}-{p}" for t, p in d.partitions] or "-",
        d.group_ids or "-",
    ]
    print(table(headers, [row]))
    return 0
