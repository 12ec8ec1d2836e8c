"""How a command-line tool finds the cluster: ``--bootstrap``, else ``$KETCH_BOOTSTRAP``, else 127.0.0.1:9092;
and how it connects: ``KETCH_SECURITY_PROTOCOL`` and ``KETCH_SSL_*`` (ketch/tls.py).

Shared by the ``ketch`` command line (ketch/cli) and the benchmarks (bench/).
It lives outside ketch/cli because ``ketch perf`` loads bench/: bench/ must
need nothing from the command line that loads it.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from ketch.errors import ErrorCode, KetchError
from ketch.tls import SecurityConfig

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"


def bootstrap_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        "-b",
        default=os.environ.get("KETCH_BOOTSTRAP", DEFAULT_BOOTSTRAP),
        help="HOST:PORT[,HOST:PORT...] of any node (env KETCH_BOOTSTRAP; default %(default)s)",
    )


def client_security() -> SecurityConfig:
    """The transport security every command uses, from ``KETCH_SECURITY_PROTOCOL`` and ``KETCH_SSL_*``."""
    try:
        return SecurityConfig.from_env()
    except ValueError as exc:
        raise KetchError(
            f"{exc} (from KETCH_SECURITY_PROTOCOL, KETCH_SSL_CAFILE, KETCH_SSL_CERTFILE, KETCH_SSL_KEYFILE)",
            code=ErrorCode.INVALID_CONFIG,
        ) from None


def client_config(bootstrap: str) -> dict[str, Any]:
    """Keyword arguments of a Producer, Consumer or Admin for a command: where and how to connect."""
    return {"bootstrap_servers": bootstrap, **client_security().client_kwargs()}


def login_metadata(channel: Any, address: str) -> tuple[tuple[str, str], ...] | None:
    """What a command's direct call to a node carries: a SASL session token when logging in with a
    username and password (ketch/sasl.py), else nothing (a certificate, or no security)."""
    security = client_security()
    if not security.sasl:
        return None
    from ketch.api.v1 import ketch_pb2_grpc
    from ketch.sasl import bearer, login_blocking

    return bearer(login_blocking(ketch_pb2_grpc.KetchStub(channel), security, address, 30.0))
