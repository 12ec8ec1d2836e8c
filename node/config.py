"""Node configuration: flags over environment over file over defaults.

Every setting has one name used three ways:
- a flag: ``--node-id 1`` (dashes);
- an environment variable: ``KETCH_NODE_ID=1`` (``KETCH_`` + upper case, underscores);
- a key in a TOML file given by ``--config`` / ``KETCH_CONFIG``: ``node_id = 1``.

A flag given on the command line wins over the environment, which wins over
the file, which wins over the default. Unknown keys in the file are an error
(a typo must not silently fall back to a default). Topic-level defaults use
Kafka's names (``log.retention.ms`` etc. become ``retention_ms`` here) and can
be overridden per topic with Kafka's topic config keys (see node/catalog.py).

Listeners use Kafka's settings with underscores (rules in node/listeners.py):
``listeners`` (``NAME://HOST:PORT,...``), ``advertised_listeners``,
``listener_security_protocol_map`` (``NAME:PLAINTEXT|SSL,...``),
``inter_broker_listener_name`` and ``controller_listener_names``. Without
``listeners`` a node has one listener named after ``security_protocol`` on
``listen``, advertised as ``advertised_listener``. The ssl_* files and
``ssl_client_auth`` are shared by every SSL listener. ``kafka_listen`` adds the Kafka
protocol listener, named KAFKA (``kafka_advertised_listener`` its advertised address,
``kafka_security_protocol`` PLAINTEXT or SSL).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A setting that is missing, of the wrong type or out of range."""


@dataclass(frozen=True)
class NodeConfig:
    node_id: int = 1
    # "broker", "controller" or both (combined mode, KRaft's process.roles).
    roles: str = "broker,controller"
    # KRaft's controller.quorum.voters: "1@host:port,2@host:port,3@host:port".
    # Empty: this node alone (must then have the controller role). These are the
    # bootstrap voters and the address book; the voter set itself lives in the Raft
    # log (KIP-853): a controller not listed here starts as an observer until
    # `ketch cluster add-controller --node ID`.
    controller_quorum_voters: str = ""
    # A controller whose disk was wiped (a new directory id) finds the voter set
    # naming its old self and asks to take its place (like Kafka's
    # controller.quorum.auto.join.enable, but never after remove-controller).
    controller_quorum_auto_join: bool = True
    # Same on every node of a cluster; empty: made once per data directory.
    cluster_id: str = ""
    data_dir: str = "./data"
    listen: str = "127.0.0.1:9092"
    # Host:port clients should dial; defaults to `listen` (with 0.0.0.0 → 127.0.0.1).
    advertised_listener: str = ""
    # Kafka's ssl.principal.mapping.rules: how a client certificate's subject (RFC 2253, "CN=alice,O=x")
    # becomes the name in User:NAME; DEFAULT keeps the whole subject (node/principal.py).
    ssl_principal_mapping_rules: str = "DEFAULT"
    # Authorization (node/access.py): with the authorizer on, every call needs an ACL (Kafka's
    # StandardAuthorizer; `ketch acl`), super users (Kafka's super.users, "User:a;User:b") pass, and
    # the node-to-node calls (Raft, replica fetching, the controller's) need a super user or
    # CLUSTER_ACTION on the cluster.
    authorizer_enabled: bool = False
    # Kafka's sasl.enabled.mechanisms: "SCRAM-SHA-256,SCRAM-SHA-512" lets clients log in with a
    # username and password (node/sasl.py), over TLS only; empty: no SASL.
    sasl_enabled_mechanisms: str = ""
    # Kafka's connections.max.reauth.ms: how long a SASL session lasts before the client logs in again.
    sasl_session_lifetime_ms: int = 3_600_000
    super_users: str = ""
    allow_everyone_if_no_acl_found: bool = False
    # Transport security of the listener and of every channel to other nodes (Kafka's
    # security.inter.broker.protocol follows it): "PLAINTEXT" or "SSL" (node/server_tls.py).
    # Only for a node without `listeners`: its one listener is named after it.
    security_protocol: str = "PLAINTEXT"
    # Named listeners (Kafka's; node/listeners.py). Empty: one listener on `listen`, named
    # after security_protocol, advertised as `advertised_listener`.
    listeners: str = ""  # NAME://HOST:PORT,... e.g. INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092
    advertised_listeners: str = ""  # NAME://HOST:PORT,...; default: the bind address (0.0.0.0 → 127.0.0.1)
    listener_security_protocol_map: str = ""  # NAME:PLAINTEXT|SSL,...; PLAINTEXT and SSL need no entry
    inter_broker_listener_name: str = ""  # replica fetching, broker-to-broker calls; default: the first
    controller_listener_names: str = ""  # Raft and controller RPCs, the voters' addresses; default: the first
    ssl_cafile: str = ""  # CAs that sign the other nodes' and the clients' certificates
    ssl_certfile: str = ""  # this node's certificate, as a server and as a client of other nodes
    ssl_keyfile: str = ""
    # Kafka's ssl.client.auth: "required" (mutual TLS) or "none", for every SSL listener unless
    # listener_ssl_client_auth ("NAME:none|required,...", Kafka's listener.name.NAME.ssl.client.auth)
    # says otherwise for a listener: e.g. mutual TLS inside, TLS with SCRAM logins outside.
    ssl_client_auth: str = "none"
    listener_ssl_client_auth: str = ""
    # The Kafka wire protocol listener (node/kafka/server.py), off when empty: "HOST:PORT" to bind
    # (port 0: a free one). Its name is KAFKA, it is PLAINTEXT, and brokers register its advertised
    # endpoint like any other listener's, so Metadata on it names each broker's Kafka address.
    kafka_listen: str = ""
    # Host:port Kafka clients should dial; default: kafka_listen (0.0.0.0 -> 127.0.0.1, port 0 -> bound).
    kafka_advertised_listener: str = ""
    # PLAINTEXT or SSL (the ssl_* files; client auth from listener_ssl_client_auth "KAFKA:..." or
    # ssl_client_auth). SASL logins on the Kafka listener need SSL, as on gRPC.
    kafka_security_protocol: str = "PLAINTEXT"
    # Kafka's connections.max.idle.ms on the Kafka listener: a connection with no request in
    # progress and no byte received for this long is closed. 0: never.
    kafka_connections_max_idle_ms: int = 600_000
    # Prometheus /metrics port; 0 picks a free one, -1 disables.
    metrics_port: int = 9644
    metrics_host: str = "127.0.0.1"
    rack: str = ""
    # Largest gRPC message accepted, bytes (Kafka's socket.request.max.bytes).
    max_request_bytes: int = 64 * 1024 * 1024
    # Cap of one produced batch's records once decompressed (gzip/zstd bombs); beyond it the produce
    # is refused with INVALID_RECORD (ketch/decompression.py). Same default as max_request_bytes.
    max_decompressed_batch_bytes: int = 64 * 1024 * 1024
    # Limits against greedy clients (node/request_limits.py; 0 = no limit). A refused request gets
    # gRPC RESOURCE_EXHAUSTED naming the setting; the client raises RequestLimitError (retriable).
    # Requests in flight in the whole node (Kafka's queued.max.requests); long-poll fetches count.
    max_inflight_requests: int = 1000
    # Requests in flight on one connection (one client channel; the broker side of Kafka's
    # max.in.flight.requests.per.connection). A Ketch producer has at most 5 per partition.
    max_inflight_requests_per_connection: int = 100
    # Requests in flight from one client IP (Kafka's max.connections.per.ip, default unlimited as
    # in Kafka: every node and client of a local cluster shares 127.0.0.1).
    max_inflight_requests_per_ip: int = 0
    # HTTP/2 streams open at once on one connection (SETTINGS_MAX_CONCURRENT_STREAMS): the client
    # queues calls beyond it; a backstop above max_inflight_requests_per_connection, which also
    # bounds server streams (FetchMetadata), which the in-flight counts leave out.
    max_concurrent_streams: int = 200
    # Bytes of records one Fetch response may carry, whatever the request asks (Kafka's broker
    # fetch.max.bytes, 55 MiB there); a request's max_bytes above it, or 0, is cut to it.
    fetch_max_bytes: int = 50 * 1024 * 1024
    # Seconds SIGTERM waits for in-flight requests.
    shutdown_grace_s: float = 10.0
    auto_create_topics: bool = False
    default_partitions: int = 1
    default_replication_factor: int = 1
    # Broker-wide topic defaults (Kafka log.* settings).
    retention_ms: int = 7 * 24 * 3600 * 1000
    retention_bytes: int = -1
    max_message_bytes: int = 1048588
    flush_messages: int = 0  # 0: never fsync per append (WAL only); 1: fsync every append
    min_insync_replicas: int = 1
    retention_check_interval_ms: int = 30_000
    # Compaction (Kafka's log.cleaner.* settings; topics override the first three by their
    # Kafka keys delete.retention.ms, min.compaction.lag.ms and min.cleanable.dirty.ratio).
    delete_retention_ms: int = 86_400_000  # a tombstone is kept this long after its cleaning
    min_compaction_lag_ms: int = 0  # a record younger than this is never cleaned
    min_cleanable_dirty_ratio: float = 0.5  # a partition is cleaned once this share of it is dirty
    log_cleaner_backoff_ms: int = 15_000  # the longest the cleaner waits between passes
    log_cleaner_chunk_rewrites: int = 1000  # batch rewrites per atomic write of a cleaning pass
    # Kafka's producer.id.expiration.ms: a producer silent this long (by its batches' timestamps) is
    # forgotten by each partition on the retention pass; a producer with an open transaction never is.
    producer_id_expiration_ms: int = 86_400_000
    # Broker liveness (README "Failover"): a heartbeat every 500 ms; a broker silent for the session is
    # fenced (a paused or partitioned one can only be found this way; 2 s, not 2.5 s: a heartbeat waiting
    # on a busy controller made 2.5 s cost up to 3.5 s of writes); one silent for
    # broker_liveness_probe_ms is probed at its listener and fenced at once if the connection is refused
    # (killed: node/liveness_probe.py; 0 turns probing off). Kafka: 2 s / 9 s; Redpanda's session ~1.5 s.
    broker_heartbeat_interval_ms: int = 500
    broker_session_timeout_ms: int = 2000
    broker_liveness_probe_ms: int = 750
    # Kafka's replica.lag.time.max.ms: an ISR member not caught up for this long is dropped.
    replica_lag_time_max_ms: int = 10_000
    replica_fetch_max_wait_ms: int = 500
    # Kafka's leader.replication.throttled.rate: bytes/s a leader sends to replicas a reassignment is
    # adding (not yet in the ISR), for the whole broker; 0 = unlimited.
    reassignment_throttle_bytes: int = 50 * 1024 * 1024
    isr_check_interval_ms: int = 500
    # Kafka's leader.imbalance.check.interval.seconds, in ms; 0 disables.
    preferred_election_interval_ms: int = 300_000
    # Consumer groups (Kafka's offsets.topic.* and group.* settings). The offsets topic is made on first
    # use; its replication factor -1 means default_replication_factor (3 under `ketch cluster up`).
    offsets_topic_num_partitions: int = 8
    offsets_topic_replication_factor: int = -1
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    group_initial_rebalance_delay_ms: int = 3000
    # Transactions (Kafka's transaction.state.log.* and transaction.max.timeout.ms). The transaction
    # state topic is made on first use, like the offsets topic; 8 partitions, not Kafka's 50, for the
    # same reason as offsets_topic_num_partitions: a local cluster starts in seconds.
    transaction_state_num_partitions: int = 8
    transaction_state_replication_factor: int = -1
    transaction_max_timeout_ms: int = 900_000
    # Raft timing (README "Failover"): the election timeout is drawn from 1-2x raft_election_ticks ticks
    # (300-600 ms), so a new active controller follows a kill -9 within a second; heartbeats every 100 ms.
    # 25 ms ticks: finer than 50 ms (12 draws, and a late tick costs less), for about a tenth of a core
    # less than 10 ms ticks would cost three idle nodes. Pre-vote and check-quorum (two election timeouts
    # on the leader, coordinator/raft_driver.py) keep a slow follower from deposing a healthy leader.
    raft_tick_ms: int = 25
    raft_election_ticks: int = 12
    raft_heartbeat_ticks: int = 4
    raft_snapshot_every: int = 1000

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(r.strip() for r in self.roles.split(",") if r.strip())

    @property
    def sasl_mechanisms(self) -> frozenset[str]:
        return frozenset(m.strip().upper() for m in self.sasl_enabled_mechanisms.split(",") if m.strip())

    @property
    def is_broker(self) -> bool:
        return "broker" in self.role_set

    @property
    def is_controller(self) -> bool:
        return "controller" in self.role_set

    @property
    def listen_host_port(self) -> tuple[str, int]:
        return split_host_port(self.listen)

    @property
    def advertised_host_port(self) -> tuple[str, int]:
        host, port = split_host_port(self.advertised_listener or self.listen)
        return ("127.0.0.1" if host in ("", "0.0.0.0", "::") else host), port


def split_host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


_FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig)}


def _coerce(name: str, raw: Any) -> Any:
    kind = type(getattr(NodeConfig(), name))
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(raw, bool) or (kind is int and isinstance(raw, float)):
            raise ValueError(raw)  # from TOML: int() would take true as 1 and cut 1.5 to 1
        return kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {raw!r} is not a valid {kind.__name__}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; defaults are None so we can tell "not given"."""
    parser.add_argument("--config", help="TOML file with settings (env KETCH_CONFIG)")
    for name in _FIELDS:
        parser.add_argument("--" + name.replace("_", "-"), dest=name, default=None, metavar="VALUE")


def load(args: argparse.Namespace | None = None, env: dict[str, str] | None = None) -> NodeConfig:
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    path = getattr(args, "config", None) or env.get("KETCH_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ConfigError(f"unknown settings in {path}: {', '.join(unknown)}")
        values.update(data)
    for name in _FIELDS:
        key = "KETCH_" + name.upper()
        if key in env:
            values[name] = env[key]
    if args is not None:
        for name in _FIELDS:
            given = getattr(args, name, None)
            if given is not None:
                values[name] = given
    config = NodeConfig(**{k: _coerce(k, v) for k, v in values.items()})
    validate(config)
    return config


def validate(config: NodeConfig) -> None:
    if config.node_id < 0:
        raise ConfigError(f"node_id must be >= 0, got {config.node_id}")
    config.listen_host_port  # noqa: B018 - raises ConfigError when malformed
    if config.advertised_listener:
        split_host_port(config.advertised_listener)
    validate_security(config)  # resolves the listeners (node/listeners.py), which raises on a bad one
    if config.max_message_bytes > config.max_request_bytes:
        raise ConfigError(
            f"max_message_bytes ({config.max_message_bytes}) must not exceed "
            f"max_request_bytes ({config.max_request_bytes})"
        )
    for name in (
        "max_inflight_requests",
        "max_inflight_requests_per_connection",
        "max_inflight_requests_per_ip",
        "kafka_connections_max_idle_ms",
    ):
        if getattr(config, name) < 0:
            raise ConfigError(f"{name} must be >= 0 (0 = no limit), got {getattr(config, name)}")
    if config.max_concurrent_streams < 1 or config.fetch_max_bytes < 1 or config.max_decompressed_batch_bytes < 1:
        raise ConfigError("max_concurrent_streams, fetch_max_bytes and max_decompressed_batch_bytes must be >= 1")
    if config.default_partitions < 1:
        raise ConfigError("default_partitions must be >= 1")
    if config.offsets_topic_num_partitions < 1:
        raise ConfigError("offsets_topic_num_partitions must be >= 1")
    if config.producer_id_expiration_ms < 1:
        raise ConfigError("producer_id_expiration_ms must be >= 1")
    if config.transaction_state_num_partitions < 1:
        raise ConfigError("transaction_state_num_partitions must be >= 1")
    if config.delete_retention_ms < 0 or config.min_compaction_lag_ms < 0:
        raise ConfigError("delete_retention_ms and min_compaction_lag_ms must be >= 0")
    if not 0.0 <= config.min_cleanable_dirty_ratio <= 1.0:
        raise ConfigError(f"min_cleanable_dirty_ratio must be from 0 to 1, got {config.min_cleanable_dirty_ratio}")
    if config.log_cleaner_chunk_rewrites < 1:
        raise ConfigError("log_cleaner_chunk_rewrites must be >= 1")
    if config.log_cleaner_backoff_ms < 1:
        raise ConfigError("log_cleaner_backoff_ms must be >= 1")  # Kafka allows 0: a cleaner that never rests
    if config.reassignment_throttle_bytes < 0:
        raise ConfigError("reassignment_throttle_bytes must be >= 0 (0 = unlimited)")
    if config.transaction_max_timeout_ms < 1:
        raise ConfigError("transaction_max_timeout_ms must be >= 1")
    if not 0 < config.broker_heartbeat_interval_ms < config.broker_session_timeout_ms:
        raise ConfigError(
            f"need 0 < broker_heartbeat_interval_ms ({config.broker_heartbeat_interval_ms}) < "
            f"broker_session_timeout_ms ({config.broker_session_timeout_ms}): several heartbeats per session"
        )
    if config.broker_liveness_probe_ms < 0:
        raise ConfigError("broker_liveness_probe_ms must be >= 0 (0 = never probe, wait for the session)")
    if not 0 < config.group_min_session_timeout_ms <= config.group_max_session_timeout_ms:
        raise ConfigError("need 0 < group_min_session_timeout_ms <= group_max_session_timeout_ms")
    if not config.role_set or not config.role_set <= {"broker", "controller"}:
        raise ConfigError(f"roles must be broker, controller or broker,controller; got {config.roles!r}")
    if config.controller_quorum_voters:
        from node.controller_client import parse_voters

        try:
            parse_voters(config.controller_quorum_voters)
        except ValueError as exc:
            raise ConfigError(f"controller_quorum_voters: {exc}") from None
    elif not config.is_controller:
        raise ConfigError("a broker-only node needs controller_quorum_voters (ID@HOST:PORT,...)")


def validate_security(config: NodeConfig) -> None:
    if config.security_protocol not in ("PLAINTEXT", "SSL"):
        raise ConfigError(f"security_protocol must be PLAINTEXT or SSL, got {config.security_protocol!r}")
    if config.ssl_client_auth not in ("none", "required"):
        raise ConfigError(f"ssl_client_auth must be none or required, got {config.ssl_client_auth!r}")
    unknown = set(config.sasl_mechanisms) - {"SCRAM-SHA-256", "SCRAM-SHA-512"}
    if unknown:
        raise ConfigError(f"sasl_enabled_mechanisms: {', '.join(sorted(unknown))} not SCRAM-SHA-256 or SCRAM-SHA-512")
    from node.listeners import resolve

    ssl_listeners = [listener.name for listener in resolve(config).registered if listener.security_protocol == "SSL"]
    if config.sasl_mechanisms and not ssl_listeners:
        raise ConfigError("sasl_enabled_mechanisms needs an SSL listener: passwords travel over TLS only")
    if ssl_listeners:
        if not (config.ssl_certfile and config.ssl_keyfile and config.ssl_cafile):
            raise ConfigError(
                f"the SSL listener {', '.join(ssl_listeners)} needs ssl_certfile and ssl_keyfile (this node's "
                "certificate) and ssl_cafile (the CA that signs the other nodes' certificates)"
            )
    elif config.ssl_client_auth != "none" or config.ssl_certfile or config.ssl_keyfile:
        raise ConfigError(
            "ssl_client_auth, ssl_certfile and ssl_keyfile need security_protocol SSL (or an SSL listener)"
        )
