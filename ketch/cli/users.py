"""``ketch user add|list|remove``: SCRAM users (kafka-configs.sh --alter --add-config SCRAM-SHA-256=...).

    ketch user add alice [--mechanism SCRAM-SHA-512] [--iterations 8192]   # password from stdin
    ketch user list
    ketch user remove alice [--mechanism SCRAM-SHA-256]

Rules:
- The password is read from standard input (one line; a terminal prompts without echo), never
  from the command line where other users could see it in the process list. The keys are
  derived on this machine: the password is never sent (ketch/aio/admin_acls.py).
- A client then logs in with ``KETCH_SECURITY_PROTOCOL=SASL_SSL``, ``KETCH_SASL_MECHANISM``,
  ``KETCH_SASL_USERNAME`` and ``KETCH_SASL_PASSWORD`` (nodes need ``sasl_enabled_mechanisms``).
- Needs ALTER (DESCRIBE for ``list``) on the cluster when the authorizer is on.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from ketch.bootstrap import bootstrap_arg, client_config
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError

MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")


def register(commands: Any) -> None:
    user = commands.add_parser("user", help="add, list and remove SCRAM users (username/password logins)")
    sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="set a user's password (read from stdin) for a mechanism")
    add.add_argument("name")
    add.add_argument("--mechanism", default=MECHANISMS[0], type=str.upper, choices=MECHANISMS)
    add.add_argument("--iterations", type=int, default=4096, help="4096..16384 (default %(default)s)")
    listing = sub.add_parser("list", help="users and their mechanisms")
    listing.add_argument("--json", action="store_true")
    remove = sub.add_parser("remove", help="remove a user's credential for a mechanism")
    remove.add_argument("name")
    remove.add_argument("--mechanism", default=MECHANISMS[0], type=str.upper, choices=MECHANISMS)
    for parser in (add, listing, remove):
        bootstrap_arg(parser)
    add.set_defaults(handler=add_user)
    listing.set_defaults(handler=list_users)
    remove.set_defaults(handler=remove_user)


def _password() -> str:
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\n")


def add_user(args: argparse.Namespace) -> int:
    from ketch import Admin, ScramUpsertion

    password = _password()
    if not password:
        raise KetchError("empty password (give it on standard input)", code=ErrorCode.INVALID_REQUEST)
    with Admin(**client_config(args.bootstrap)) as admin:
        admin.alter_user_scram_credentials([ScramUpsertion(args.name, password, args.mechanism, args.iterations)])
    print(f"user {args.name}: {args.mechanism} credential set")
    return 0


def list_users(args: argparse.Namespace) -> int:
    from ketch import Admin

    with Admin(**client_config(args.bootstrap)) as admin:
        users = admin.describe_user_scram_credentials()
    if args.json:
        print(dump_json({name: [{"mechanism": m, "iterations": i} for m, i in creds] for name, creds in users.items()}))
        return 0
    print(table(["USER", "MECHANISM", "ITERATIONS"], [[n, m, i] for n, creds in users.items() for m, i in creds]))
    return 0


def remove_user(args: argparse.Namespace) -> int:
    from ketch import Admin, ScramDeletion

    with Admin(**client_config(args.bootstrap)) as admin:
        admin.alter_user_scram_credentials([ScramDeletion(args.name, args.mechanism)])
    print(f"user {args.name}: {args.mechanism} credential removed")
    return 0
