"""The ``ketch`` command line, modelled on Kafka's console tools and ``rpk``.

    ketch node [--node-id N --data-dir DIR --listen HOST:PORT --metrics-port P ...]
    ketch topic create|list|describe|delete|alter-config ...
    ketch produce TOPIC            one record per stdin line
    ketch consume TOPIC            records to stdout (``--group G``: in consumer group G)
    ketch group list|describe|reset-offsets|delete ...   consumer groups
    ketch transactions list|describe ...                  transactions (kafka-transactions.sh)
    ketch acl add|list|remove ...                         ACLs (kafka-acls.sh)
    ketch user add|list|remove ...                        SCRAM users (username/password logins)
    ketch cluster describe         brokers of the cluster
    ketch cluster config           dynamic broker configs (show, --set, --delete)
    ketch perf produce|consume     benchmarks (bench/)

Conventions: ``--bootstrap`` (default ``$KETCH_BOOTSTRAP``, else
127.0.0.1:9092); human-readable tables by default and ``--json`` on every
read command; any error prints one readable line (``ketch: CODE: what to
do``) to stderr and exits nonzero.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import grpc

from ketch.errors import KetchError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from ketch.cli import acl, cluster, group, node, records, topic, transactions, users

    parser = argparse.ArgumentParser(prog="ketch", description="Ketch: a replicated commit log")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (node, topic, records, group, transactions, acl, users, cluster):
        module.register(commands)
    try:  # the one direction: the command line loads bench/, never the reverse
        from bench import cli as perf
    except ImportError:  # bench/ is part of the source tree, not of every install
        pass
    else:
        perf.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KetchError as exc:
        print(f"ketch: {exc}", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"ketch: cannot reach {getattr(args, 'bootstrap', 'the node')}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
