"""How a command-line tool finds the cluster: ``--bootstrap``, else ``$KETCH_BOOTSTRAP``, else 127.0.0.1:9092.

Shared by the ``ketch`` command line (ketch/cli) and the benchmarks (bench/).
It lives outside ketch/cli because ``ketch perf`` loads bench/: bench/ must
need nothing from the command line that loads it.
"""

from __future__ import annotations

import argparse
import os

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def bootstrap_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        "-b",
        default=os.environ.get("KETCH_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="HOST:PORT[,HOST:PORT...] of any node (env KETCH_BOOTSTRAP; default %(default)s)",
    )
