"""``ketch acl add|list|remove`` (kafka-acls.sh).

    ketch acl add --principal User:alice --operation READ --topic orders [--prefixed] [--deny]
    ketch acl add --principal User:alice --operation READ --group billing
    ketch acl add --principal User:ops --operation ALTER --cluster
    ketch acl list [--principal P] [--topic T | --group G | --cluster | --transactional-id X]
    ketch acl remove --principal User:alice --operation READ --topic orders

Rules:
- ``add`` takes exactly one resource and one or more ``--operation`` (each one ACL); ALLOW
  unless ``--deny``; LITERAL unless ``--prefixed``; ``--topic '*'`` means every topic.
- ``list`` and ``remove`` take the same options as a filter: what is not given matches anything
  (``remove`` with no option at all is refused: it would delete every ACL; pass ``--all``).
  ``list --topic T`` shows the ACLs of exactly that pattern; ``--matching`` shows every ACL
  that applies to the resource T (literal, ``*`` and prefixes).
- Needs nodes with ``authorizer_enabled`` (else SECURITY_DISABLED) and a principal with ALTER
  (DESCRIBE for ``list``) on the cluster, e.g. the super user of ``ketch cluster up --tls``.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from ketch.acl import CLUSTER_NAME, OPERATIONS, AclBinding, AclBindingFilter
from ketch.bootstrap import bootstrap_arg, client_config
from ketch.cli.output import dump_json, table
from ketch.errors import ErrorCode, KetchError


def register(commands: Any) -> None:
    acl = commands.add_parser("acl", help="add, list and remove ACLs")
    sub = acl.add_subparsers(dest="acl_command", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="allow (or --deny) principals operations on a resource")
    listing = sub.add_parser("list", help="the ACLs matching the options (all by default)")
    remove = sub.add_parser("remove", help="delete the ACLs matching the options")
    for parser in (add, listing, remove):
        parser.add_argument("--principal", action="append", default=[], help="User:NAME or User:* (repeatable)")
        parser.add_argument(
            "--operation", action="append", default=[], type=str.upper, help=f"one of {', '.join(OPERATIONS)}"
        )
        where = parser.add_mutually_exclusive_group(required=parser is add)
        where.add_argument("--topic")
        where.add_argument("--group")
        where.add_argument("--transactional-id")
        where.add_argument("--cluster", action="store_true")
        parser.add_argument("--prefixed", action="store_true", help="the name is a prefix (PREFIXED pattern)")
        parser.add_argument("--deny", action="store_true", help="a DENY ACL (default ALLOW)")
        bootstrap_arg(parser)
    for parser in (listing, remove):
        parser.add_argument("--allow", action="store_true", help="only ALLOW ACLs")
        parser.add_argument("--matching", action="store_true", help="every ACL that applies to the resource")
    listing.add_argument("--json", action="store_true")
    remove.add_argument("--all", action="store_true", help="with no other option: remove every ACL")
    add.set_defaults(handler=add_acls)
    listing.set_defaults(handler=list_acls)
    remove.set_defaults(handler=remove_acls)


def _resource(args: argparse.Namespace) -> tuple[str | None, str | None]:
    if args.cluster:
        return "CLUSTER", CLUSTER_NAME
    for kind, value in (("TOPIC", args.topic), ("GROUP", args.group), ("TRANSACTIONAL_ID", args.transactional_id)):
        if value is not None:
            return kind, value
    return None, None


def _invalid(message: str) -> KetchError:
    return KetchError(message, code=ErrorCode.INVALID_REQUEST)


def add_acls(args: argparse.Namespace) -> int:
    from ketch import Admin

    if not args.principal or not args.operation:
        raise _invalid("ketch acl add needs --principal and --operation")
    kind, name = _resource(args)
    assert kind is not None and name is not None
    acls = [
        AclBinding(
            kind,
            name,
            principal,
            operation,
            "DENY" if args.deny else "ALLOW",
            "PREFIXED" if args.prefixed else "LITERAL",
        )
        for principal in args.principal
        for operation in args.operation
    ]
    try:
        for acl in acls:
            acl.to_pb()  # ValueError naming an unknown operation or type, before any call
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    with Admin(**client_config(args.bootstrap)) as admin:
        admin.create_acls(acls)
    for acl in acls:
        print(f"added: {_line(acl)}")
    return 0


def _filters(args: argparse.Namespace) -> list[AclBindingFilter]:
    kind, name = _resource(args)
    pattern = "MATCH" if args.matching else "PREFIXED" if args.prefixed else ("LITERAL" if name else None)
    permission = "DENY" if args.deny else "ALLOW" if args.allow else None
    filters = [
        AclBindingFilter(kind, name, principal, operation, permission, pattern)
        for principal in (args.principal or [None])
        for operation in (args.operation or [None])
    ]
    try:
        for f in filters:
            f.to_pb()
    except ValueError as exc:
        raise _invalid(str(exc)) from None
    return filters


def list_acls(args: argparse.Namespace) -> int:
    from ketch import Admin

    found: list[AclBinding] = []
    with Admin(**client_config(args.bootstrap)) as admin:
        for f in _filters(args):
            found += [acl for acl in admin.describe_acls(f) if acl not in found]
    if args.json:
        print(dump_json([dataclasses.asdict(acl) for acl in found]))
        return 0
    rows = [
        [a.principal, a.permission_type, a.operation, a.resource_type, a.resource_name, a.pattern_type] for a in found
    ]
    print(table(["PRINCIPAL", "PERMISSION", "OPERATION", "RESOURCE", "NAME", "PATTERN"], rows))
    return 0


def remove_acls(args: argparse.Namespace) -> int:
    from ketch import Admin

    everything = not (args.principal or args.operation or any(_resource(args)) or args.deny or args.allow)
    if everything and not args.all:
        raise _invalid("this would remove every ACL; give a --principal, --operation or resource, or --all")
    with Admin(**client_config(args.bootstrap)) as admin:
        removed = admin.delete_acls(_filters(args))
    for acl in removed:
        print(f"removed: {_line(acl)}")
    if not removed:
        print("no ACL matched")
    return 0


def _line(acl: AclBinding) -> str:
    return (
        f"{acl.permission_type} {acl.principal} {acl.operation} on {acl.resource_type} "
        f"{acl.resource_name!r} ({acl.pattern_type})"
    )
