"""The ``ketch node`` process: builds, starts and stops its roles; gRPC server, health, metrics, signals.

Roles (KRaft's process.roles, node/roles.py): a ``controller`` runs a voter of
the Raft quorum (coordinator/raft_driver.py) with the metadata state machine
(coordinator/quorum.py) and serves KetchRaft and KetchController; a ``broker``
follows the committed metadata log into its image, registers and heartbeats,
and serves the client API (Ketch). Combined mode runs both on the same servers;
the voters' addresses are on the controller listener.

Listeners (node/listeners.py): one gRPC server per listener, each bound to its
own address with its own credentials (SSL listeners each get their own
``ServerCertificates`` over the shared ssl_* files), every one serving the same
services. A node without ``listeners`` has one, named after ``security_protocol``.
``kafka_listen`` adds the Kafka protocol listener KAFKA (node/kafka/server.py), an asyncio
server beside the gRPC ones, bound, started and stopped with them; its endpoint is registered
like theirs and it serves the broker's ``KetchService`` for listener KAFKA.

``serve`` follows these steps, with the same numbers:

1. Build. Open the data directory's RocksDB (a second process on the same
   directory fails here with a clear error, RocksDB holds a lock) and take
   the clean-shutdown marker (node/clean_shutdown.py: the broker's
   registration says whether its previous process stopped cleanly, KIP-966);
   bind each listener's port (port 0 picks a free one; with ``authorizer_enabled`` every
   call first passes node/access.py's check); build the health service
   and the metrics, then the roles the config asks for, controller first.
2. Start the server, then the roles in that order (Raft and the controller's
   ticks; the metadata follower, registration and heartbeats, the ISR,
   retention, log cleaner and group loops), then the metrics endpoint; mark the standard
   gRPC health service SERVING and print one ready line to stdout (the node
   is serving; the cluster may still be electing, see ``ketch cluster up``):

       KETCH_READY {"node_id": 1, "listen": "127.0.0.1:9092", "listeners": {"PLAINTEXT": "127.0.0.1:9092"},
                    "metrics_port": 9644, "pid": 123}

   ``listen`` is the first listener's bound address, ``listeners`` every listener's.
   Then everything start-up built is frozen out of the cyclic garbage collector
   (``gc.freeze``): it lives as long as the process, and each full collection
   walked all of it, a 26-35 ms pause of the node (measured under a steady
   produce), against under 1 ms for what a running node makes since.

3. Run until SIGTERM or SIGINT, a storage failure or a raft driver failure.
   A second signal during shutdown does not cut it short; kill -9 is the
   crash case the storage is built to survive.
4. Stop the roles in reverse order, so that in combined mode the broker's
   controlled shutdown (its leaderships move to other ISR members, bounded
   by a timeout) is answered by its own controller still running. Each role
   first ends its long-lived calls (metadata streams, parked long-poll
   fetches; a follower's FetchStream ends with its next answer); then health
   goes NOT_SERVING and the server stops taking new calls and waits up to
   ``shutdown_grace_s`` for in-flight ones (every listener's server at once);
   then each role, again in reverse, awaits its loops and closes what it holds.
5. Sync the WAL and write the clean-shutdown marker, unless the store
   failed; close the store. Exit status 0, or 1 after a failure.

A storage failure (a full disk, an I/O error: replication/rocks_store.py) stops
the node the same way, except that no clean-shutdown marker is written, and the
process exits with status 1. RocksDB refuses every write after the first failed
one until it is reopened, so a node that stayed up would keep its leaderships and
refuse every produce to them; Kafka halts a broker whose last log directory
failed for the same reason. The controlled shutdown moves those leaderships to
healthy ISR members within a second; a supervisor (docker-compose
``restart: unless-stopped``, Kubernetes) or the operator starts the node again
once the disk has room, and it recovers from its WAL and rejoins as an unclean
broker. A raft driver failure also exits 1. A configuration error exits 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from coordinator.metadata.image import MetadataImage
from coordinator.metadata.records import Endpoint
from ketch import _loop as event_loop
from ketch._malloc import MMAP_THRESHOLD, keep_freed_heap
from ketch.errors import KetchError
from node import clean_shutdown
from node import listeners as node_listeners
from node.access import AccessControl
from node.config import ConfigError, NodeConfig
from node.controller_client import parse_voters
from node.listeners import Listener, Listeners
from node.metrics import NodeMetrics
from node.request_limits import InflightInterceptor, InflightLimits
from node.roles import BrokerRole, ControllerRole, Role
from node.server_tls import ServerCertificates
from replication.rocks_store import NodeStore

if TYPE_CHECKING:
    from node.kafka.server import KafkaServer

log = logging.getLogger("ketch.node")
SERVICE_NAME = "ketch.v1.Ketch"


def grpc_server_options(config: NodeConfig) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", config.max_request_bytes),
        ("grpc.max_send_message_length", config.max_request_bytes),
        ("grpc.so_reuseport", 0),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
    ]


def open_store(config: NodeConfig) -> NodeStore:
    path = Path(config.data_dir)
    path.mkdir(parents=True, exist_ok=True)
    try:
        return NodeStore.open(str(path / "rocksdb"))
    except Exception as exc:
        raise ConfigError(f"cannot open data directory {path}: {exc} (is another node using it?)") from exc


async def serve(config: NodeConfig) -> int:
    """Run the node until SIGTERM/SIGINT or a fatal failure; returns the exit status."""
    # 1. Build: the store, the server and what the roles share, then the roles.
    store = open_store(config)
    previous_clean_shutdown = clean_shutdown.take(store)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_storage_failure(exc: KetchError) -> None:  # called from whichever thread wrote
        loop.call_soon_threadsafe(_storage_failed, stop, exc)

    store.on_failure = on_storage_failure
    listeners = node_listeners.resolve(config)
    limits = InflightLimits(
        config.max_inflight_requests, config.max_inflight_requests_per_connection, config.max_inflight_requests_per_ip
    )
    access = AccessControl(config) if config.authorizer_enabled else None
    # The limits first: a call over them is refused before any other work (node/request_limits.py).
    interceptors: list[grpc.aio.ServerInterceptor] = [InflightInterceptor(limits)]
    if access is not None:
        interceptors.append(access.interceptor())
    servers = {
        listener.name: grpc.aio.server(options=grpc_server_options(config), interceptors=interceptors)
        for listener in listeners.all
    }
    bound = {listener.name: bind(config, listener, servers[listener.name]) for listener in listeners.all}
    kafka = kafka_server(config, listeners)
    if kafka is not None:
        bound[kafka.listener.name] = await kafka.bind()
    health = health_aio.HealthServicer()
    for server in servers.values():
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
    metrics = NodeMetrics()
    roles = build_roles(config, store, listeners, servers, bound, metrics, stop, previous_clean_shutdown)
    if access is not None:
        access.image = acl_image(roles)
        access.sessions = next((role.sasl for role in roles if isinstance(role, BrokerRole)), None)
    if kafka is not None:
        broker = next(role for role in roles if isinstance(role, BrokerRole))
        kafka.serve(broker.kafka_service, access, limits)

    # 2. Start the servers, then the roles in order; then health SERVING and the ready line.
    for server in servers.values():
        await server.start()
    if kafka is not None:
        await kafka.start()
    for role in roles:
        await role.start()
    metrics_port = metrics.serve(config.metrics_host, config.metrics_port) if config.metrics_port >= 0 else -1
    await _set_health(health, health_pb2.HealthCheckResponse.SERVING)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _announce_ready(config, listeners, bound, metrics_port)
    gc.freeze()  # start-up's objects: out of every full collection (module rules, step 2)
    log.info("start-up objects kept out of the cyclic garbage collector: %d", gc.get_freeze_count())

    # 3. Run until a signal, or a storage or raft failure.
    def failed() -> bool:  # a failure, not a signal, is stopping the node
        return store.failure is not None or any(role.failed for role in roles)

    await stop.wait()
    log.info("node %d shutting down", config.node_id)

    # 4. Stop the roles in reverse order, around the server's stop (node/roles.py).
    for role in reversed(roles):
        await role.begin_shutdown(failed())
    await _set_health(health, health_pb2.HealthCheckResponse.NOT_SERVING)
    await asyncio.gather(
        *(server.stop(config.shutdown_grace_s) for server in servers.values()), *([kafka.stop()] if kafka else [])
    )
    for role in reversed(roles):
        await role.stop()

    # 5. The clean-shutdown marker, unless the store failed; the exit status.
    if store.failure is None:
        with contextlib.suppress(KetchError):  # a failure now is logged by _storage_failed
            clean_shutdown.put(store)
    status = 1 if failed() else 0
    store.close()
    log.info("node %d stopped%s", config.node_id, " after a failure" if status else "")
    return status


def acl_image(roles: list[Role]) -> Callable[[], MetadataImage]:
    """Whose ACLs the authorizer enforces: the broker's image, or a controller-only node's."""
    for role in roles:
        if isinstance(role, BrokerRole):
            broker = role.broker
            return lambda: broker.image
    controller = next(role for role in roles if isinstance(role, ControllerRole))
    return lambda: controller.quorum.image


def bind(config: NodeConfig, listener: Listener, server: grpc.aio.Server) -> int:
    """Bind ``listener`` on ``server`` with its protocol's credentials; the port bound."""
    if listener.security_protocol == "SSL":
        credentials = ServerCertificates.from_config(config, listener.client_auth).credentials()
        port = server.add_secure_port(listener.bind, credentials)
    else:
        port = server.add_insecure_port(listener.bind)
    if port == 0:
        raise ConfigError(f"cannot listen on {listener.bind} (listener {listener.name})")
    return port


def kafka_server(config: NodeConfig, listeners: Listeners) -> KafkaServer | None:
    """The Kafka protocol listener (node/kafka/server.py) of ``kafka_listen``, not yet bound; None without it."""
    if listeners.kafka is None:
        return None
    if not config.is_broker:
        raise ConfigError("kafka_listen needs the broker role: the Kafka listener serves the broker's API")
    # Imported only when on: kio (and the Hypothesis it imports) adds seconds to a node's start.
    from node.kafka.server import kafka_server as build

    try:
        return build(config, listeners.kafka)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the Kafka listener's TLS: {exc}") from None


def build_roles(
    config: NodeConfig,
    store: NodeStore,
    listeners: Listeners,
    servers: dict[str, grpc.aio.Server],
    bound: dict[str, int],
    metrics: NodeMetrics,
    stop: asyncio.Event,
    previous_clean_shutdown: bool,
) -> list[Role]:
    """The roles the config asks for, in start order: the controller, then the broker."""
    endpoints = {
        listener.name: Endpoint(listener.name, *listener.advertised(bound[listener.name]), listener.security_protocol)
        for listener in listeners.registered
    }
    controller = endpoints[listeners.controller[0]]
    address = f"{controller.host}:{controller.port}"
    voters = parse_voters(config.controller_quorum_voters) or {config.node_id: address}
    roles: list[Role] = []
    if config.is_controller:
        on_fatal = lambda exc: _fatal(stop, exc)  # noqa: E731
        roles.append(
            ControllerRole(config, store, voters, address, list(servers.values()), metrics, on_fatal, listeners)
        )
    if config.is_broker:
        broker = BrokerRole(config, store, voters, endpoints, servers, metrics, previous_clean_shutdown, listeners)
        roles.append(broker)
    else:
        metrics.watch_replicas(list)  # a controller-only node exports the replica gauges too, empty
    return roles


async def _set_health(
    health: health_aio.HealthServicer, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
) -> None:
    for name in ("", SERVICE_NAME):
        await health.set(name, status)


def _announce_ready(config: NodeConfig, listeners: Listeners, bound: dict[str, int], metrics_port: int) -> None:
    addresses = {listener.name: f"{listener.bind_host}:{bound[listener.name]}" for listener in listeners.registered}
    first = addresses[listeners.first.name]
    ready = {
        "node_id": config.node_id,
        "listen": first,
        "listeners": addresses,
        "metrics_port": metrics_port,
        "roles": sorted(config.role_set),
        "pid": os.getpid(),
    }
    print("KETCH_READY " + json.dumps(ready), flush=True)
    where = ", ".join(f"{name} {address}" for name, address in addresses.items())
    log.info("node %d (%s) serving on %s", config.node_id, config.roles, where)


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


def run(config: NodeConfig) -> int:
    if config.kafka_listen:
        # kio imports Hypothesis when it is installed (a dev dependency) to register test strategies
        # for its types; a node never uses them and the import costs seconds of every start.
        sys.modules.setdefault("hypothesis", None)  # type: ignore[arg-type]
    logging.basicConfig(
        level=os.environ.get("KETCH_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if pad := keep_freed_heap():  # MiB produce requests and fetch answers: see ketch/_malloc.py
        log.info("freed heap kept: M_TOP_PAD %d MiB, M_MMAP_THRESHOLD %d MiB", pad >> 20, MMAP_THRESHOLD >> 20)
    else:
        log.info("glibc's malloc defaults kept (not glibc, or the environment decides)")
    try:
        return event_loop.run(serve(config))
    except ConfigError as exc:
        print(f"ketch node: {exc}", file=sys.stderr)
        return 2
    except KetchError as exc:  # a storage failure before the node served (e.g. the disk is still full)
        print(f"ketch node: {exc.message}", file=sys.stderr)
        return 1
