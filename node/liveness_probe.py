"""Is anything listening at a broker's registered address? The controller's liveness probe.

The active controller asks this about a broker that has stopped heartbeating
(coordinator/quorum.py); a True answer lets it fence the broker before the
session runs out (coordinator/metadata/brokers.py ``fence_unreachable``).

Rules:
- One gRPC health check (grpc.health.v1, served by every node, node/main.py) on a
  fresh channel with a short deadline, over the inter-broker listener's security.
- True only when the call fails UNAVAILABLE: the connection was refused or closed
  before anything answered (kill -9, a crash, a node not started yet; through a
  TCP proxy, the proxy closing when its backend refuses). That is KIP-966-ish
  evidence: the process that held the registration is gone.
- Any answer at all (SERVING, NOT_SERVING, even an error status) means a process
  serves there: False. DEADLINE_EXCEEDED is False too: a paused or partitioned
  broker (SIGSTOP, a blackholed link) accepts the TCP connection in the kernel or
  not at all and never answers, and cannot be told from a slow one; only the
  session may fence it.
- A fresh channel per probe, so a cached connection or reconnect backoff never
  answers for the broker's current state.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ketch.tls import PLAINTEXT, SecurityConfig, open_aio_channel

PROBE_TIMEOUT_S = 0.5


async def listener_refused(
    host: str, port: int, security: SecurityConfig = PLAINTEXT, timeout_s: float = PROBE_TIMEOUT_S
) -> bool:
    """True when nothing serves at ``host:port`` (see the module rules); False when anything answers or
    the call times out."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    channel = open_aio_channel(target, security, [("grpc.enable_retries", 0)])
    try:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        return False
    except grpc.aio.AioRpcError as exc:
        return exc.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await channel.close(grace=None)
