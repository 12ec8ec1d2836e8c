"""A gRPC-level forwarding proxy that can delay and duplicate chosen calls (EndTxn, WriteTxnMarkers).

Why gRPC and not the TCP proxy (chaos/proxy.py): HTTP/2 multiplexes every call of a
channel over one connection, so a byte-level proxy cannot hold back or repeat one call.
This proxy is a gRPC server with a generic handler: every unary method is forwarded
as raw bytes (identity (de)serializers) to the node it stands for, with the caller's
deadline; an error from the node is passed back with its status code and details.

Where it sits (chaos/cluster.py with ``grpc_proxy=True``): node ``j``'s inbound TCP proxy
link ``in-j`` (the advertised listener: follower fetches and broker-to-broker calls such
as WriteTxnMarkers and the KIP-890 verification) forwards to this proxy's port for ``j``
instead of the node itself, and transactional producers dial it directly for their
coordinator calls (EndTxn).

Rules of the fault (``disturb``): while on, each call of a chosen method is held for a
random delay before it is forwarded, and a copy of the same request bytes is sent once
more later (after a further random delay, its answer dropped) — a late duplicate that
arrives after the next transaction began is the KAFKA-17754 case. ``calm()`` stops new
disturbances; copies already scheduled still go out. Counts of delayed and duplicated
calls are kept for the report. The proxy runs its own event loop on a daemon thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections import Counter
from typing import Any

import grpc

OPTIONS = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
DISTURBED = ("EndTxn", "WriteTxnMarkers")


class GrpcProxy:
    def __init__(self, targets: dict[int, tuple[int, int]], seed: int = 0) -> None:
        """``targets``: node id -> (listen port, node port)."""
        self.targets = targets
        self.rng = random.Random(seed)
        self.methods: frozenset[str] = frozenset()
        self.delay_s = (0.2, 1.5)
        self.duplicate_after_s = (0.5, 4.0)
        self.counts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-grpc-proxy", daemon=True)
        self._servers: list[grpc.aio.Server] = []
        self._channels: list[grpc.aio.Channel] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def port(self, node_id: int) -> int:
        return self.targets[node_id][0]

    def start(self) -> None:
        self._thread.start()
        for node_id in self.targets:
            asyncio.run_coroutine_threadsafe(self._serve(node_id), self._loop).result(10)

    def disturb(self, methods: tuple[str, ...] = DISTURBED) -> None:
        self.methods = frozenset(methods)

    def calm(self) -> None:
        self.methods = frozenset()

    async def _serve(self, node_id: int) -> None:
        listen, target = self.targets[node_id]
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{target}", options=OPTIONS)
        self._channels.append(channel)
        server = grpc.aio.server(options=OPTIONS)
        server.add_generic_rpc_handlers([_Handler(self, channel)])
        server.add_insecure_port(f"127.0.0.1:{listen}")
        await server.start()
        self._servers.append(server)

    async def forward(self, channel: grpc.aio.Channel, method: str, request: bytes, context: Any) -> bytes:
        name = method.rsplit("/", 1)[-1]
        remaining = context.time_remaining()
        timeout = remaining if remaining is not None and remaining < 3600 else 30.0
        if name in self.methods:
            delay = self.rng.uniform(*self.delay_s)
            self.counts[f"{name} delayed"] += 1
            copy_after = delay + self.rng.uniform(*self.duplicate_after_s)
            task = asyncio.ensure_future(self._duplicate(channel, method, request, copy_after, name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(delay)
            timeout = max(0.1, timeout - delay)
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            response: bytes = await call(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            await context.abort(exc.code(), exc.details() or "")
            raise  # abort raises; this keeps type checkers content
        return response

    async def _duplicate(self, channel: grpc.aio.Channel, method: str, request: bytes, after: float, name: str) -> None:
        await asyncio.sleep(after)
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        with contextlib.suppress(grpc.aio.AioRpcError):
            await call(request, timeout=10.0)
        self.counts[f"{name} duplicated"] += 1

    def close(self) -> None:
        async def shutdown() -> None:
            for task in list(self._tasks):
                task.cancel()
            for server in self._servers:
                await server.stop(0.5)
            for channel in self._channels:
                await channel.close()

        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)


class _Handler(grpc.GenericRpcHandler):
    def __init__(self, proxy: GrpcProxy, channel: grpc.aio.Channel) -> None:
        self.proxy = proxy
        self.channel = channel

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method

        async def behaviour(request: bytes, context: Any) -> bytes:
            return await self.proxy.forward(self.channel, method, request, context)

        return grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=None, response_serializer=None)
