"""``python -m bench rpc-cost``: the gRPC floor, a server's CPU per call on this machine.

    python -m bench rpc-cost [--calls 4000] [--concurrency 1 8]

What it measures: a child process serves the Ketch gRPC service on a node's event loop
(uvloop, ``ketch._loop``) with a ``Fetch`` that answers an empty ``FetchResponse`` at once
(no broker, no store: nothing of Ketch's own work), and this process calls it ``--calls``
times per row, with 1 and then 8 calls in flight; a last row sends as many requests as
messages of one ``FetchStream`` call, one at a time, each answered the same way (what a
follower's rounds are since node/fetch_stream.py). Per row it prints the server's CPU per
call (or per exchange) from ``/proc`` (Linux), split into its main (Python) thread and gRPC's
own threads (``event_engine``), and the wall time per call.

Why: every message between Ketch processes (a produce, a follower's fetch, its answer) is one
unary call, and this is what one costs a node before any of Ketch's code runs. On the 2-core
machine (2026-12-05, two runs) it was 375-378 us of server CPU per call one at a time (238-240 us
on the Python thread) and 250-260 us with 8 in flight; a leader serving 20,000 records/s in 5 ms batches
answers ~3 calls per batch (the produce, two followers' fetches) and spent ~2.2 ms of CPU per
produce request in all (README "Benchmarks"). Fewer calls per record (a streaming fetch between
brokers, larger batches) is the lever; shaving Ketch's handlers is not, past a point. The
stream row, the same day (two runs): 125-130 us of server CPU per exchange (60 us on the Python
thread) against 342-352 us per unary call, so followers now fetch over FetchStream.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

SUMMARY = "a server's CPU per gRPC call on this machine, unary and streamed (the floor under every Ketch RPC)"
STREAM = 0  # the row of exchanges over one FetchStream call
ROOT = Path(__file__).resolve().parent.parent


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=4000, help="calls per row (default 4000)")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 8], help="calls in flight, one row each (default 1 8)"
    )
    parser.set_defaults(handler=rpc_cost_handler)


def serve(port: int) -> None:
    """The child: an empty ``Fetch`` on the node's event loop; prints ``ready`` once it listens."""
    import grpc

    from ketch import _loop
    from ketch.api.v1 import ketch_pb2 as pb
    from ketch.api.v1 import ketch_pb2_grpc

    class EmptyFetch(ketch_pb2_grpc.KetchServicer):
        async def Fetch(self, request: pb.FetchRequest, context: Any) -> pb.FetchResponse:
            return pb.FetchResponse()

        async def FetchStream(self, requests: AsyncIterator[pb.FetchRequest], context: Any) -> Any:
            async for _ in requests:
                yield pb.FetchResponse()

    async def main() -> None:
        server = grpc.aio.server()
        ketch_pb2_grpc.add_KetchServicer_to_server(EmptyFetch(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        print("ready", flush=True)
        await server.wait_for_termination()

    _loop.run(main())


def thread_cpu_ticks(pid: int) -> collections.Counter[str]:
    """CPU clock ticks (user + system) of ``pid``'s threads: its main (Python) thread as ``main``,
    the others summed by thread name."""
    out: collections.Counter[str] = collections.Counter()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            name = "main" if tid == str(pid) else Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
        except FileNotFoundError:  # the thread ended
            continue
        out[name] += int(fields[11]) + int(fields[12])
    return out


async def call(port: int, calls: int, concurrency: int) -> float:
    """Seconds for ``calls`` Fetch calls, ``concurrency`` at a time (after a warm-up); concurrency 0:
    ``calls`` exchanges over one FetchStream call."""
    import grpc

    from ketch.api.v1 import ketch_pb2 as pb
    from ketch.api.v1 import ketch_pb2_grpc

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = ketch_pb2_grpc.KetchStub(channel)
        request = pb.FetchRequest(max_wait_ms=0)
        if concurrency == STREAM:
            stream = stub.FetchStream()
            for _ in range(100):
                await stream.write(request)
                await stream.read()
            started = time.perf_counter()
            for _ in range(calls):
                await stream.write(request)
                await stream.read()
            elapsed = time.perf_counter() - started
            await stream.done_writing()
            return elapsed
        for _ in range(100):
            await stub.Fetch(request)

        async def worker(count: int) -> None:
            for _ in range(count):
                await stub.Fetch(request)

        started = time.perf_counter()
        await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
        return time.perf_counter() - started


def measure(calls: int, concurrency: int) -> tuple[dict[str, float], float]:
    """(server CPU us per call by thread name, wall us per call) for one row."""
    from ketch import _loop
    from node.process import free_ports

    (port,) = free_ports(1)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = f"from bench.rpc_cost import serve; serve({port})"
    server = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != b"ready":
            raise RuntimeError(f"the server did not start (exit {server.wait()})")
        before = thread_cpu_ticks(server.pid)
        done = calls if concurrency == STREAM else (calls // concurrency) * concurrency
        wall = _loop.run(call(port, calls, concurrency))
        after = thread_cpu_ticks(server.pid)
    finally:
        server.kill()
        server.wait()
    tick_us = 1e6 / os.sysconf("SC_CLK_TCK")
    by_thread = {name: (after[name] - before.get(name, 0)) * tick_us / done for name in after}
    return {name: us for name, us in by_thread.items() if us > 0}, wall * 1e6 / done


def rpc_cost_handler(args: argparse.Namespace) -> int:
    if not Path("/proc/self/task").exists():
        print("rpc-cost reads thread CPU from /proc: Linux only", file=sys.stderr)
        return 1
    columns = ("calls in flight", "server CPU us/call", "python thread", "gRPC threads", "wall us/call")
    print("  ".join(f"{c:>{len(c)}}" for c in columns))
    for concurrency in [*args.concurrency, STREAM]:
        by_thread, wall_us = measure(args.calls, concurrency)
        python = by_thread.get("main", 0.0)
        total = sum(by_thread.values())
        flight = "1 (stream)" if concurrency == STREAM else concurrency
        figures = (flight, round(total), round(python), round(total - python), round(wall_us))
        print("  ".join(f"{f:>{len(c)}}" for f, c in zip(figures, columns, strict=True)))
    return 0
