"""The node's roles (KRaft's ``process.roles``): what each builds, starts and stops.

A role is built whole before anything starts: its pieces are wired to each other in
the constructor (no piece is looked up later), its gRPC services are added to every
listener's server (node/listeners.py; the broker adds one client-facing servicer per
listener, which knows its listener's name) and its metrics registered. Channels to
other nodes use the protocol of the listener they dial: the controller listener for
Raft and the controller RPCs, the inter-broker listener for replica fetching and
broker-to-broker calls. node/main.py then drives every role
through the same three calls:

1. ``start()``: start its loops. The controller starts before the broker.
2. ``begin_shutdown(failed)``: while the server still answers, hand work away and end
   every long-lived call, so that none holds the server's grace period open: the
   broker runs its controlled shutdown (``failed``: without waiting for its image
   to show it), then stops following the metadata log and fetching, and wakes its
   parked fetches; the controller ends the metadata streams it serves to brokers.
3. ``stop()``: after the server stopped: await the loops it cancelled, stop Raft,
   close its client channels.

Roles stop in the reverse of their start order (Kafka's ``KafkaRaftServer``): in
combined mode the broker's controlled shutdown is answered by a controller that is
still running.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import grpc

from coordinator.metadata import ControllerConfig, MetadataImage
from coordinator.metadata.records import Endpoint
from coordinator.quorum import QuorumController
from coordinator.quorum_membership import QuorumMembership
from coordinator.raft_driver import RaftDriver
from coordinator.raft_storage import RaftStorage
from coordinator.service import ControllerService
from ketch.api.v1 import controller_pb2_grpc, ketch_pb2_grpc
from node.broker import Broker
from node.broker_channels import BrokerChannels
from node.config import NodeConfig
from node.controller_client import ControllerClient
from node.fetch_session import FetchSessions
from node.fetch_waiters import FetchWaiters
from node.group_commit import GroupCommit
from node.group_coordinator import GroupManager
from node.isr_manager import IsrManager
from node.lifecycle import BrokerEpoch, BrokerLifecycle
from node.listeners import KAFKA, Listeners
from node.liveness_probe import listener_refused
from node.log_cleaner import LogCleaner
from node.metadata_follower import MetadataFollower
from node.metrics import NodeMetrics
from node.producer_ids import ProducerIdManager
from node.replica_fetcher import ReplicaFetcher
from node.sasl import SaslSessions
from node.server_tls import client_security
from node.service import KetchService
from node.topic_admin import TopicAdmin
from node.txn_coordinator import TransactionManager
from node.txn_service import TransactionVerifier
from replication.rocks_store import NodeStore

log = logging.getLogger("ketch.node")
FIRST_CONTACT_MIN_MS = 1500  # a newly active controller waits at least this long for a broker


class Role(Protocol):
    @property
    def failed(self) -> bool:
        """A failure of the role's own (Raft's) that stops the node with exit status 1."""
        ...

    async def start(self) -> None: ...
    async def begin_shutdown(self, failed: bool) -> None: ...
    async def stop(self) -> None: ...


async def _await_cancelled(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


class ControllerRole:
    """A voter of the metadata quorum: Raft (coordinator/raft_driver.py) around the metadata
    state machine (coordinator/quorum.py), serving KetchRaft and KetchController, and the
    controller's tick loop (session expiry, preferred leader elections)."""

    def __init__(
        self,
        config: NodeConfig,
        store: NodeStore,
        voters: dict[int, str],
        advertised: str,
        servers: Sequence[grpc.aio.Server],
        metrics: NodeMetrics,
        on_fatal: Callable[[BaseException], None],
        listeners: Listeners,
    ) -> None:
        self.voters = dict(voters)
        self.quorum = QuorumController(
            config.node_id,
            ControllerConfig(
                broker_session_timeout_ms=config.broker_session_timeout_ms,
                max_request_bytes=config.max_request_bytes,
                min_insync_replicas=config.min_insync_replicas,
                broker_liveness_probe_ms=config.broker_liveness_probe_ms,
                # three heartbeats (a live broker's attempt at a dead controller takes two intervals), and
                # at least 1.5 s: finding a new controller may take a voter-set lookup (controller_client.py)
                broker_first_contact_ms=max(3 * config.broker_heartbeat_interval_ms, FIRST_CONTACT_MIN_MS),
            ),
            preferred_election_interval_s=config.preferred_election_interval_ms / 1000,
            probe=functools.partial(
                listener_refused, security=client_security(config, listeners.inter_broker_protocol)
            ),
        )
        self.raft = RaftDriver(
            config.node_id,
            self.voters,
            RaftStorage(store),
            self.quorum,
            tick_ms=config.raft_tick_ms,
            election_ticks=config.raft_election_ticks,
            heartbeat_ticks=config.raft_heartbeat_ticks,
            snapshot_every=config.raft_snapshot_every,
            address=advertised,
            auto_join=config.controller_quorum_auto_join,
            on_fatal=on_fatal,
            security=client_security(config, listeners.controller_protocol),
        )
        self.quorum.raft = self.raft
        service = ControllerService(self.quorum, QuorumMembership(self.raft))
        for server in servers:
            self.raft.add_to_server(server)
            controller_pb2_grpc.add_KetchControllerServicer_to_server(service, server)
        metrics.watch_controller(self.quorum)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def failed(self) -> bool:
        return self.raft.error is not None

    async def start(self) -> None:
        await self.raft.start()
        self._tasks.append(asyncio.create_task(self.quorum.tick_loop(), name="controller-ticks"))

    async def begin_shutdown(self, failed: bool) -> None:
        for task in self._tasks:
            task.cancel()
        self.quorum.close()  # ends the brokers' metadata streams

    async def stop(self) -> None:
        await _await_cancelled(self._tasks)
        await self.raft.stop()


class BrokerRole:
    """A broker: follows the committed metadata log into its image, registers and heartbeats,
    keeps its replicas (leading, fetching, proposing ISR changes, applying retention, compacting),
    coordinates consumer groups and serves the client API (Ketch)."""

    def __init__(
        self,
        config: NodeConfig,
        store: NodeStore,
        voters: dict[int, str],
        endpoints: Mapping[str, Endpoint],
        servers: Mapping[str, grpc.aio.Server],
        metrics: NodeMetrics,
        previous_clean_shutdown: bool,
        listeners: Listeners,
    ) -> None:
        self.config = config
        security = client_security(config, listeners.inter_broker_protocol)
        self.controllers = ControllerClient(voters, security=client_security(config, listeners.controller_protocol))
        inter_broker = endpoints[listeners.inter_broker]
        self.waiters = FetchWaiters()
        epoch = BrokerEpoch()
        group_commit = GroupCommit(store.sync_wal)
        self.broker = Broker(config, store, epoch, on_partition_change=self._wake_fetches)
        self.fetcher = ReplicaFetcher(
            self.broker,
            epoch,
            on_progress=self._wake_fetches,
            group_commit=group_commit,
            max_wait_ms=config.replica_fetch_max_wait_ms,
            security=security,
            on_unreachable=lambda leader_id: self.lifecycle.report_unreachable(leader_id),
        )
        # In combined mode the broker follows its own controller first.
        prefer = config.node_id if config.is_controller else None
        self.follower = MetadataFollower(
            config.node_id,
            self.controllers,
            self._on_metadata,
            prefer=prefer,
            stall_ms=max(1000, 2 * config.broker_heartbeat_interval_ms),
        )
        admin = TopicAdmin(self.broker, self.controllers, self.follower)
        self.lifecycle = BrokerLifecycle(
            config,
            self.controllers,
            self.follower,
            epoch,
            (inter_broker.host, inter_broker.port),
            self._on_registered,
            previous_clean_shutdown=previous_clean_shutdown,
            replica_logs=self.broker.replica_logs,
            endpoints=list(endpoints.values()),
        )
        self.isr = IsrManager(self.broker, self.controllers, epoch, config.isr_check_interval_ms)
        metrics.watch_replicas(self.broker.partitions, self.isr)
        metrics.watch_throttle(self.broker.throttle)
        self.cleaner = LogCleaner(
            self.broker.replicas_with_config,
            config.log_cleaner_backoff_ms,
            chunk_rewrites=config.log_cleaner_chunk_rewrites,
        )
        metrics.watch_cleaner(self.cleaner.stats)
        self.producer_ids = ProducerIdManager.with_controllers(config.node_id, epoch, self.controllers)
        self.channels = BrokerChannels(lambda: self.broker.image, security)
        self.transactions = TransactionManager(
            self.broker, admin, self.waiters, metrics, self.producer_ids, self.channels
        )
        verifier = TransactionVerifier(config.node_id, self.transactions, self.channels)
        metrics.watch_transactions(self.transactions.ongoing, self.transactions.transactional_ids)
        self.groups = GroupManager(self.broker, admin, self.waiters, metrics, verify_transaction=verifier)
        metrics.watch_groups(self.groups)
        # Username/password logins (node/sasl.py) against the SCRAM credentials of this broker's image,
        # taken on TLS listeners only (a password never crosses a plaintext one).
        self.sasl = SaslSessions(config.sasl_mechanisms, lambda: self.broker.image, config.sasl_session_lifetime_ms)
        the_cluster_id = cluster_id(config, store)  # read (or made) once, not per listener
        fetch_sessions = FetchSessions(self.waiters)  # a follower's session is the node's, whatever the listener
        metrics.watch_fetch_sessions(lambda: len(fetch_sessions))

        def service(listener: str, sasl: SaslSessions | None) -> KetchService:
            return KetchService(
                self.broker,
                admin,
                metrics,
                self.waiters,
                the_cluster_id,
                group_commit,
                self.groups,
                self.producer_ids,
                transactions=self.transactions,
                verify_transaction=verifier,
                listener=listener,
                sasl=sasl,
                fetch_sessions=fetch_sessions,
            )

        for name, server in servers.items():
            sasl = self.sasl if listeners[name].security_protocol == "SSL" else None
            ketch_pb2_grpc.add_KetchServicer_to_server(service(name, sasl), server)
        # The Kafka protocol listener's (node/kafka/server.py): SASL logins on SSL only, as above.
        kafka_ssl = listeners.kafka is not None and listeners.kafka.security_protocol == "SSL"
        self.kafka_service = service(KAFKA, self.sasl if kafka_ssl else None)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def failed(self) -> bool:
        return False

    def _wake_fetches(self, topic: str, index: int) -> None:
        self.waiters.notify((topic, index))

    def _on_metadata(self, old: MetadataImage, new: MetadataImage) -> None:
        self.broker.on_metadata(old, new)
        self.fetcher.reconcile()

    def _on_registered(self) -> None:
        self.broker.catch_up()
        self.fetcher.reconcile()

    async def start(self) -> None:
        self.follower.start()
        self.lifecycle.start()
        retention_interval_s = self.config.retention_check_interval_ms / 1000
        self._tasks += [
            asyncio.create_task(self.isr.run(), name="isr-manager"),
            asyncio.create_task(_retention_loop(self.broker, retention_interval_s), name="retention"),
            asyncio.create_task(self.cleaner.run(), name="log-cleaner"),
            asyncio.create_task(self.groups.run(), name="group-coordinator"),
            asyncio.create_task(self.transactions.run(), name="transaction-coordinator"),
        ]

    async def begin_shutdown(self, failed: bool) -> None:
        timeout_s = min(self.config.shutdown_grace_s, 5.0)
        await self.lifecycle.controlled_shutdown(timeout_s=timeout_s)
        await self.lifecycle.stop()  # never registered: controlled_shutdown left it running
        for task in self._tasks:
            task.cancel()
        await self.follower.stop()
        await self.fetcher.stop()
        self.groups.close()
        self.transactions.close()
        self.waiters.close()  # parked fetches answer at once

    async def stop(self) -> None:
        await _await_cancelled(self._tasks)
        await self.transactions.close_channels()
        await self.producer_ids.close()
        await self.controllers.close()


async def _retention_loop(broker: Broker, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            removed = broker.apply_retention(int(time.time() * 1000))
            if removed:
                log.info("retention removed %d bytes", removed)
        except Exception:
            log.exception("retention pass failed")


def cluster_id(config: NodeConfig, store: NodeStore) -> str:
    """The configured id, else one made once per data directory."""
    if config.cluster_id:
        return config.cluster_id
    stored = store.meta_get(b"cluster-id")
    if stored is None:
        stored = uuid.uuid4().hex.encode()
        store.meta_put(b"cluster-id", stored)
    return stored.decode()
