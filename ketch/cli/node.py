"""``ketch node``: run one node in the foreground (see node/main.py)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(commands: Any) -> None:
    parser = commands.add_parser("node", help="run a Ketch node in the foreground")
    from node import config

    config.add_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from node import config, main

    try:
        loaded = config.load(args)
    except config.ConfigError as exc:
        print(f"ketch node: {exc}", file=sys.stderr)
        return 2
    return main.run(loaded)
