"""In-flight request limits: per connection, per client address, per node.

gRPC Python has no hook when a connection opens or closes, so Kafka's connection limits
(``max.connections.per.ip``, ``queued.max.requests``) are kept here as counts of requests in
flight, taken when a call arrives and given back when its answer is sent. ``context.peer()``
names the caller as ``ipv4:127.0.0.1:51234`` / ``ipv6:[::1]:51234``: the whole string is one
TCP connection (an HTTP/2 connection carries all of a channel's calls), the address without
the port is the client's IP.

Rules (``InflightLimits.admit``; 0 disables a limit):
1. a call is admitted while the node has fewer than ``max_inflight_requests`` in flight
   (Kafka's ``queued.max.requests``), its connection fewer than
   ``max_inflight_requests_per_connection`` (Kafka's ``max.in.flight.requests.per.connection``,
   enforced on the broker side) and its IP fewer than ``max_inflight_requests_per_ip`` (Kafka's
   ``max.connections.per.ip``, counted in requests);
2. otherwise it is refused before its handler runs (the request has been read and decoded by
   then: see below), with gRPC RESOURCE_EXHAUSTED and a
   message naming the limit, its setting and its value (the client raises
   ``RequestLimitError``, retriable: the caller backs off and tries again);
3. every admitted call is released exactly once, however it ends (answer, error, cancel).
The node-wide limit checks first, so its count is shared; the counts of a connection and an
IP are dropped when they reach zero (no growth with the number of clients ever seen).

What is counted: unary calls only (every client request, Raft and controller RPCs). Streams
(the broker's FetchMetadata subscription, health Watch, a follower's FetchStream to its leader)
live as long as the node or the followership and are bounded per connection by HTTP/2
(``max_concurrent_streams``): counting them would fill the limit with one slot per peer
forever. A FetchStream's requests are answered one at a time, in order, so each holds at most
one request's work on the node. grpc.aio's own ``maximum_concurrent_rpcs``
is not used: it refuses with a fixed "Concurrent RPC limit exceeded!" that names no setting, and
counts the long-lived streams.

Why requests and not bytes: a refused call's message has been read already (gRPC Python reads
a whole message before any interceptor can refuse it; ``max_request_bytes`` bounds it), but it
is dropped at once instead of being decoded, appended and answered; what stays in memory is the
admitted calls', bounded by these limits times ``max_request_bytes`` in and ``fetch_max_bytes``
out.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc


def peer_ip(peer: str) -> str:
    """The client address of a ``context.peer()`` string (``ipv4:1.2.3.4:5`` -> ``1.2.3.4``)."""
    _, _, address = peer.partition(":")
    host, sep, _port = address.rpartition(":")
    return host.strip("[]") if sep else address


@dataclass
class InflightLimits:
    """The counting rules of the module docstring; pure, one per node."""

    max_total: int
    max_per_connection: int
    max_per_ip: int
    total: int = 0
    by_connection: dict[str, int] = field(default_factory=dict)
    by_ip: dict[str, int] = field(default_factory=dict)

    def admit(self, peer: str) -> str | None:
        """Count a call from ``peer`` and return None, or return why it is refused (nothing counted)."""
        ip = peer_ip(peer)
        if 0 < self.max_total <= self.total:
            return f"the node has {self.total} requests in flight, its limit (max_inflight_requests={self.max_total})"
        on_connection = self.by_connection.get(peer, 0)
        if 0 < self.max_per_connection <= on_connection:
            return (
                f"this connection has {on_connection} requests in flight, its limit "
                f"(max_inflight_requests_per_connection={self.max_per_connection})"
            )
        on_ip = self.by_ip.get(ip, 0)
        if 0 < self.max_per_ip <= on_ip:
            return (
                f"client address {ip} has {on_ip} requests in flight, its limit "
                f"(max_inflight_requests_per_ip={self.max_per_ip})"
            )
        self.total += 1
        self.by_connection[peer] = on_connection + 1
        self.by_ip[ip] = on_ip + 1
        return None

    def release(self, peer: str) -> None:
        self.total -= 1
        for counts, key in ((self.by_connection, peer), (self.by_ip, peer_ip(peer))):
            left = counts[key] - 1
            if left:
                counts[key] = left
            else:
                del counts[key]


class InflightInterceptor(grpc.aio.ServerInterceptor):
    """The driver: wraps every unary handler in ``admit`` ... ``release``."""

    def __init__(self, limits: InflightLimits) -> None:
        self.limits = limits
        self.refused = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        behavior = handler.unary_unary
        interceptor = self

        async def limited(request: Any, context: grpc.aio.ServicerContext) -> Any:
            peer = context.peer()
            refusal = interceptor.limits.admit(peer)
            if refusal is not None:
                interceptor.refused += 1
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"request refused: {refusal}; try again later")
            try:
                answer = behavior(request, context)
                return await answer if inspect.isawaitable(answer) else answer
            finally:
                interceptor.limits.release(peer)

        return grpc.unary_unary_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
