"""``python -m node.healthcheck [HOST:PORT] [--service NAME] [--timeout S]``: a container health probe.

Asks the node's standard gRPC health service (grpc.health.v1.Health/Check,
served by node/main.py) and exits:

- 0 when the answer is SERVING;
- 1 when the node answers anything else (NOT_SERVING while it shuts down,
  SERVICE_UNKNOWN for a service name it does not serve);
- 2 when it cannot be asked (refused, timed out, bad address).

Without an address it probes what the node itself listens on, read the same
way the node reads it: the first of ``KETCH_LISTENERS`` when set (node/listeners.py),
else ``KETCH_LISTEN`` (else 127.0.0.1:9092), with a wildcard host (0.0.0.0, ::,
empty) replaced by 127.0.0.1. So the Docker
image's HEALTHCHECK needs no per-node arguments. The empty service name
(the default) is the whole server; ``ketch.v1.Ketch`` is the client API.
A node with ``KETCH_SECURITY_PROTOCOL=SSL`` (or whose first listener is SSL) is
probed over TLS with its own certificate (``KETCH_SSL_*``, the node's settings are
also a client's), checking the certificate against the host of
``KETCH_ADVERTISED_LISTENER`` (or the first listener's advertised host) when it is set.
One line goes to stdout either way, for ``docker inspect``'s health log.
Kubernetes needs it only with TLS (the Helm chart's exec probes): its native ``grpc:`` probe
asks the same service but cannot speak TLS.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ketch.tls import PLAINTEXT, SecurityConfig, open_channel
from node.config import ConfigError, NodeConfig, split_host_port
from node.listeners import Listener, resolve

SERVING = 0
NOT_SERVING = 1
UNREACHABLE = 2


def first_listener(env: dict[str, str]) -> Listener | None:
    """The node's first named listener, when it has ``KETCH_LISTENERS``."""
    if not env.get("KETCH_LISTENERS"):
        return None
    config = NodeConfig(
        listeners=env["KETCH_LISTENERS"],
        advertised_listeners=env.get("KETCH_ADVERTISED_LISTENERS", ""),
        listener_security_protocol_map=env.get("KETCH_LISTENER_SECURITY_PROTOCOL_MAP", ""),
    )
    return resolve(config).first


def default_target(env: dict[str, str] | None = None) -> str:
    """The address the node listens on, dialable from the same host."""
    env = dict(os.environ) if env is None else env
    listener = first_listener(env)
    if listener is not None:
        host, port = listener.bind_host, listener.bind_port
    else:
        host, port = split_host_port(env.get("KETCH_LISTEN") or "127.0.0.1:9092")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def probe_security(env: dict[str, str] | None = None) -> tuple[SecurityConfig, list[tuple[str, int | str]]]:
    """How the probe connects: the node's own TLS settings, and the name its certificate must carry."""
    env = dict(os.environ) if env is None else env
    listener = first_listener(env)
    if listener is not None:
        env = {**env, "KETCH_SECURITY_PROTOCOL": listener.security_protocol}
        if listener.security_protocol != "SSL":  # the node's ssl files are for its other listeners
            env = {k: v for k, v in env.items() if not k.startswith("KETCH_SSL_")}
        env["KETCH_ADVERTISED_LISTENER"] = f"{listener.advertised_host}:{listener.advertised_port}"
    security = SecurityConfig.from_env(env)
    advertised = env.get("KETCH_ADVERTISED_LISTENER")
    if security.secure and advertised:
        return security, [("grpc.ssl_target_name_override", split_host_port(advertised)[0])]
    return security, []


def check(
    target: str,
    service: str = "",
    timeout_s: float = 3.0,
    security: SecurityConfig = PLAINTEXT,
    options: list[tuple[str, int | str]] | None = None,
) -> tuple[int, str]:
    """(exit code, one line saying why) for one Health/Check call."""
    with open_channel(target, security, options or []) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            name = code.name if code is not None else type(exc).__name__
            if code == grpc.StatusCode.NOT_FOUND:
                return NOT_SERVING, f"{target}: service {service!r} unknown"
            return UNREACHABLE, f"{target}: unreachable ({name})"
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    serving = response.status == health_pb2.HealthCheckResponse.SERVING
    return (SERVING if serving else NOT_SERVING), f"{target}: {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m node.healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("target", nargs="?", help="HOST:PORT (default: from KETCH_LISTENERS or KETCH_LISTEN)")
    parser.add_argument("--service", default="", help="health service name (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        target = args.target or default_target()
        security, options = probe_security()
    except (ConfigError, ValueError) as exc:
        print(f"healthcheck: {exc}")
        return UNREACHABLE
    code, line = check(target, args.service, args.timeout, security, options)
    print(line)
    return code


if __name__ == "__main__":
    sys.exit(main())
