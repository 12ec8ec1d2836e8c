"""The ``ketch node`` process: wiring, gRPC server, health, metrics, signals.

Start-up order: open the data directory's RocksDB (a second process on the
same directory fails here with a clear error, RocksDB holds a lock), open
every partition, bind the gRPC port (port 0 picks a free one), start the
metrics endpoint, then mark the standard gRPC health service SERVING and print
one ready line to stdout:

    KETCH_READY {"node_id": 1, "listen": "127.0.0.1:9092", "metrics_port": 9644, "pid": 123}

SIGTERM or SIGINT: health goes NOT_SERVING, the server stops taking new calls
and waits up to ``shutdown_grace_s`` for in-flight ones (parked long-poll
fetches are woken so they answer at once), then the store is closed. A
second signal during shutdown does not cut it short; kill -9 is the crash
case the storage is built to survive.

Retention runs every ``retention_check_interval_ms`` on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ketch.api.v1 import ketch_pb2_grpc
from node.broker import Broker
from node.config import ConfigError, NodeConfig
from node.fetch_waiters import FetchWaiters
from node.metrics import NodeMetrics
from node.service import KetchService
from replication.rocks_store import NodeStore

log = logging.getLogger("ketch.node")
SERVICE_NAME = "ketch.v1.Ketch"


def grpc_server_options(config: NodeConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", config.max_request_bytes),
        ("grpc.so_reuseport", 0),
    ]


def open_store(config: NodeConfig) -> NodeStore:
    path = Path(config.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    try:
        return NodeStore.open(str(path / "rocksdb"))
    except Exception as exc:
        raise ConfigError(f"cannot open data directory {path}: {exc} (is another node using it?)") from exc


async def _retention_loop(broker: Broker, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            removed = broker.apply_retention(int(time.time() * 1000))
            if removed:
                log.info("retention removed %d bytes", removed)
        except Exception:
            log.exception("retention pass failed")


async def serve(config: NodeConfig) -> None:
    store = open_store(config)
    broker = Broker(config, store)
    waiters = FetchWaiters()
    metrics = NodeMetrics(broker.partitions)
    server = grpc.aio.server(options=grpc_server_options(config))
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    host, advertised_port = config.advertised_host_port
    if not config.advertised_listener or advertised_port == 0:
        advertised_port = port
    service = KetchService(broker, metrics, waiters, advertised=(host, advertised_port))
    ketch_pb2_grpc.add_KetchServicer_to_server(service, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await server.start()
    metrics_port = metrics.serve(config.metrics_host, config.metrics_port) if config.metrics_port >= 0 else -1
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    retention = asyncio.create_task(_retention_loop(broker, config.retention_check_interval_ms / 1000))
    listen_host = config.listen_host_port[0]
    ready = {
        "node_id": config.node_id,
        "listen": f"{listen_host}:{port}",
        "metrics_port": metrics_port,
        "pid": os.getpid(),
    }
    print("KETCH_READY " + json.dumps(ready), flush=True)
    log.info("node %d serving on %s:%d", config.node_id, listen_host, port)

    await stop.wait()
    log.info("node %d shutting down", config.node_id)
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    retention.cancel()
    stopping = asyncio.create_task(server.stop(config.shutdown_grace_s))
    waiters.close()
    await stopping
    with contextlib.suppress(asyncio.CancelledError):
        await retention
    store.close()
    log.info("node %d stopped", config.node_id)


def run(config: NodeConfig) -> int:
    logging.basicConfig(
        level=os.environ.get("KETCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"ketch node: {exc}", file=sys.stderr)
        return 2
    return 0
