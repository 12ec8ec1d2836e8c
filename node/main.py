"""The ``ketch node`` process: wiring, gRPC server, health, metrics, signals.

Roles (KRaft's process.roles): a ``controller`` runs a voter of the Raft
quorum (coordinator/raft_driver.py) with the metadata state machine
(coordinator/quorum.py) and serves KetchRaft and KetchController; a
``broker`` follows the committed metadata log into its image, registers and
heartbeats, and serves the client API (Ketch). Combined mode runs both on one
gRPC server and port; the voters' addresses are those ports.

Start-up order: open the data directory's RocksDB (a second process on the
same directory fails here with a clear error, RocksDB holds a lock), bind
the gRPC port (port 0 picks a free one), start Raft, the metadata follower,
registration and heartbeats, the metrics endpoint, then mark the standard
gRPC health service SERVING and print one ready line to stdout (the node is
serving; the cluster may still be electing, see ``ketch cluster up``):

    KETCH_READY {"node_id": 1, "listen": "127.0.0.1:9092", "metrics_port": 9644, "pid": 123}

SIGTERM or SIGINT: a broker first runs a controlled shutdown (its
leaderships move to other ISR members, bounded by a timeout); then health
goes NOT_SERVING, the server stops taking new calls
and waits up to ``shutdown_grace_s`` for in-flight ones (parked long-poll
fetches are woken so they answer at once), then the WAL is synced, the
clean-shutdown marker written (node/clean_shutdown.py) and the store closed.
At start-up the marker is taken: the broker's registration says whether its
previous process stopped cleanly (KIP-966). A
second signal during shutdown does not cut it short; kill -9 is the crash
case the storage is built to survive.

A storage failure (a full disk, an I/O error: replication/rocks_store.py) stops
the node the same way, except that no clean-shutdown marker is written, and the
process exits with status 1. RocksDB refuses every write after the first failed
one until it is reopened, so a node that stayed up would keep its leaderships and
refuse every produce to them; Kafka halts a broker whose last log directory
failed for the same reason. The controlled shutdown moves those leaderships to
healthy ISR members within a second; a supervisor (docker-compose
``restart: unless-stopped``, Kubernetes) or the operator starts the node again
once the disk has room, and it recovers from its WAL and rejoins as an unclean
broker. A raft driver failure also exits 1.

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
import uuid
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from coordinator.metadata import ControllerConfig, MetadataImage
from coordinator.quorum import QuorumController
from coordinator.raft_driver import RaftDriver
from coordinator.raft_storage import RaftStorage
from coordinator.service import ControllerService
from ketch.api.v1 import controller_pb2 as cpb
from ketch.api.v1 import controller_pb2_grpc, ketch_pb2_grpc
from ketch.errors import KetchError
from node import clean_shutdown
from node.broker import Broker
from node.config import ConfigError, NodeConfig
from node.controller_client import ControllerClient, parse_voters
from node.fetch_waiters import FetchWaiters
from node.group_commit import GroupCommit
from node.group_coordinator import GroupManager
from node.isr_manager import IsrManager
from node.lifecycle import BrokerLifecycle
from node.metadata_follower import MetadataFollower
from node.metrics import NodeMetrics
from node.replica_fetcher import ReplicaFetcher
from node.service import KetchService
from node.topic_admin import TopicAdmin
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


def _cluster_id(config: NodeConfig, store: NodeStore) -> str:
    """The configured id, else one made once per data directory."""
    if config.cluster_id:
        return config.cluster_id
    stored = store.meta_get(b"cluster-id")
    if stored is None:
        stored = uuid.uuid4().hex.encode()
        store.meta_put(b"cluster-id", stored)
    return stored.decode()


async def serve(config: NodeConfig) -> int:
    """Run the node until SIGTERM/SIGINT or a fatal failure; returns the exit status."""
    store = open_store(config)
    previous_clean_shutdown = clean_shutdown.take(store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_storage_failure(exc: KetchError) -> None:  # called from whichever thread wrote
        loop.call_soon_threadsafe(_storage_failed, stop, exc)

    store.on_failure = on_storage_failure
    server = grpc.aio.server(options=grpc_server_options(config))
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise ConfigError(f"cannot listen on {config.listen}")
    host, advertised_port = config.advertised_host_port
    if not config.advertised_listener or advertised_port == 0:
        advertised_port = port
    advertised = (host, advertised_port)
    voters = parse_voters(config.controller_quorum_voters) or {config.node_id: f"{host}:{advertised_port}"}
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)

    quorum: QuorumController | None = None
    raft: RaftDriver | None = None
    if config.is_controller:
        quorum = QuorumController(
            config.node_id,
            ControllerConfig(
                broker_session_timeout_ms=config.broker_session_timeout_ms,
                max_request_bytes=config.max_request_bytes,
                min_insync_replicas=config.min_insync_replicas,
            ),
            preferred_election_interval_s=config.preferred_election_interval_ms / 1000,
        )
        raft = RaftDriver(
            config.node_id,
            voters,
            RaftStorage(store),
            quorum,
            tick_ms=config.raft_tick_ms,
            election_ticks=config.raft_election_ticks,
            heartbeat_ticks=config.raft_heartbeat_ticks,
            snapshot_every=config.raft_snapshot_every,
            on_fatal=lambda exc: _fatal(stop, exc),
        )
        quorum.raft = raft
        raft.add_to_server(server)
        controller_pb2_grpc.add_KetchControllerServicer_to_server(
            ControllerService(quorum, lambda: describe_voters(voters, raft)), server
        )

    broker: Broker | None = None
    controllers = ControllerClient(voters)
    waiters = FetchWaiters()
    follower: MetadataFollower | None = None
    lifecycle: BrokerLifecycle | None = None
    fetcher: ReplicaFetcher | None = None
    isr: IsrManager | None = None
    group_commit = GroupCommit(store.sync_wal)
    if config.is_broker:
        broker = Broker(
            config,
            store,
            on_partition_change=lambda topic, index: waiters.notify((topic, index)),
            registered_at=lambda: lifecycle.broker_epoch if lifecycle is not None else -1,
        )
        fetcher = ReplicaFetcher(
            broker,
            lambda: lifecycle.broker_epoch if lifecycle is not None else -1,
            on_progress=lambda topic, index: waiters.notify((topic, index)),
            group_commit=group_commit,
            max_wait_ms=config.replica_fetch_max_wait_ms,
        )

        def on_metadata(old: MetadataImage, new: MetadataImage, b: Broker = broker) -> None:
            b.on_metadata(old, new)
            if fetcher is not None:
                fetcher.reconcile()

        follower = MetadataFollower(
            config.node_id, controllers, on_metadata, prefer=config.node_id if config.is_controller else None
        )
        admin = TopicAdmin(broker, controllers, follower)

        def on_registered(b: Broker = broker) -> None:
            b.catch_up()
            if fetcher is not None:
                fetcher.reconcile()

        lifecycle = BrokerLifecycle(
            config,
            controllers,
            follower,
            lambda: advertised,
            on_registered,
            previous_clean_shutdown=previous_clean_shutdown,
            replica_logs=broker.replica_logs,
        )
        isr = IsrManager(
            broker, controllers, lambda: lifecycle.broker_epoch if lifecycle else -1, config.isr_check_interval_ms
        )
    metrics = NodeMetrics(broker.partitions if broker else list, quorum=quorum, isr=isr)
    groups: GroupManager | None = None
    if broker is not None and follower is not None:
        groups = GroupManager(broker, admin, waiters, metrics)
        metrics.watch_groups(groups)
        service = KetchService(broker, admin, metrics, waiters, _cluster_id(config, store), group_commit, groups)
        ketch_pb2_grpc.add_KetchServicer_to_server(service, server)

    await server.start()
    tasks: list[asyncio.Task[None]] = []
    if raft is not None and quorum is not None:
        await raft.start()
        tasks.append(asyncio.create_task(quorum.tick_loop(), name="controller-ticks"))
    if broker is not None and follower is not None and lifecycle is not None:
        follower.start()
        lifecycle.start()
        if isr is not None:
            tasks.append(asyncio.create_task(isr.run(), name="isr-manager"))
        interval = config.retention_check_interval_ms / 1000
        tasks.append(asyncio.create_task(_retention_loop(broker, interval), name="retention"))
        if groups is not None:
            tasks.append(asyncio.create_task(groups.run(), name="group-coordinator"))
    metrics_port = metrics.serve(config.metrics_host, config.metrics_port) if config.metrics_port >= 0 else -1
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    listen_host = config.listen_host_port[0]
    ready = {
        "node_id": config.node_id,
        "listen": f"{listen_host}:{port}",
        "metrics_port": metrics_port,
        "roles": sorted(config.role_set),
        "pid": os.getpid(),
    }
    print("KETCH_READY " + json.dumps(ready), flush=True)
    log.info("node %d (%s) serving on %s:%d", config.node_id, config.roles, listen_host, port)

    def failed() -> bool:  # a storage or raft failure, not a signal, is stopping the node
        return store.failure is not None or (raft is not None and raft.error is not None)

    await stop.wait()
    log.info("node %d shutting down", config.node_id)
    if lifecycle is not None:
        await lifecycle.controlled_shutdown(timeout_s=min(config.shutdown_grace_s, 5.0), await_metadata=not failed())
    for name in ("", SERVICE_NAME):
        await health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    for task in tasks:
        task.cancel()
    # Long-lived calls must end before the server's grace period: metadata streams
    # (ours and other brokers') and parked fetches.
    if follower is not None:
        await follower.stop()
    if fetcher is not None:
        await fetcher.stop()
    if quorum is not None:
        quorum.close()
    if groups is not None:
        groups.close()
    waiters.close()
    await server.stop(config.shutdown_grace_s)
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    if raft is not None:
        await raft.stop()
    await controllers.close()
    if store.failure is None:
        with contextlib.suppress(KetchError):  # a failure now is logged by _storage_failed
            clean_shutdown.put(store)
    status = 1 if failed() else 0
    store.close()
    log.info("node %d stopped%s", config.node_id, " after a failure" if status else "")
    return status


def _storage_failed(stop: asyncio.Event, exc: KetchError) -> None:
    """The node's RocksDB refused a write: stop (see the module docstring)."""
    log.critical(
        "storage failed, stopping the node so its leaderships move to healthy replicas: %s. "
        "Free disk space or fix the disk, then start the node again; it recovers from its WAL.",
        exc.message,
    )
    stop.set()


def _fatal(stop: asyncio.Event, exc: BaseException) -> None:
    """Raft storage or state-machine failure: stop the node; a restart recovers from disk."""
    log.critical("raft driver failed, stopping the node: %r", exc)
    stop.set()


def describe_voters(voters: dict[int, str], raft: RaftDriver | None) -> list[cpb.QuorumVoter]:
    match = dict(raft.status().match) if raft is not None else {}
    return [
        cpb.QuorumVoter(node_id=node, address=address, match_index=match.get(node, 0))
        for node, address in sorted(voters.items())
    ]


def run(config: NodeConfig) -> int:
    logging.basicConfig(
        level=os.environ.get("KETCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"ketch node: {exc}", file=sys.stderr)
        return 2
    except KetchError as exc:  # a storage failure before the node served (e.g. the disk is still full)
        print(f"ketch node: {exc.message}", file=sys.stderr)
        return 1
