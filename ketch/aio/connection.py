"""Channels to brokers and the client's metadata cache.

Rules:
- ``bootstrap_servers`` ("h:p,h:p" or a list) is only where the first
  Metadata call goes; afterwards the client talks to brokers by node id, at
  the host and port the latest metadata gives.
- One ``grpc.aio`` channel per address, created lazily and kept until close.
  Send and receive limits are raised deliberately to 64 MiB (gRPC's default
  is 4 MiB); the client's own ``max_request_size`` is what bounds a request.
  Reconnect backoff is capped at 1 s so a restarted broker is found quickly,
  and calls fail fast (no wait-for-ready) so the caller decides about retries.
- The metadata cache is an immutable ``Cluster`` snapshot replaced whole on
  every refresh, so another thread (the sync producer's caller) may read it
  without a lock. A refresh asks for the topics the client tracks (all topics
  when it tracks none) and merges them into the snapshot.
- Refreshes are single-flight: concurrent callers share one in-flight call.
  Metadata is tried on known brokers first, then on the bootstrap list; if
  nobody answers, ``KetchConnectionError`` names every address tried.
- A refresh never waits on a dead or paused broker (README "Failover"): it is
  hedged, asking the next candidate whenever ``METADATA_HEDGE_S`` passes without
  an answer (or at once when a call fails), each attempt bounded by
  ``metadata_attempt_s``, and the first answer wins (the others are cancelled).
  Addresses whose last call failed on the transport (``failed_recently``, for
  ``RECENT_FAILURE_S``) and the ``avoid`` set (the producer's slow leaders) go
  last, as does ``call_any``'s order: Kafka's least-loaded-node choice.
- A refresh never moves a partition back: an answer with a lower leader epoch
  for a partition of the same topic id than the cache holds (a broker cut off
  from the controllers still serves its old image) keeps the cached partition.
- One call path: every request goes through ``call_at`` (an address),
  ``call_node`` (a broker id from the metadata; unknown id:
  ``KetchConnectionError``) or ``call_any`` (the first broker that answers).
- Transport failures become typed errors (``translate_rpc_error``): PERMISSION_DENIED
  (a node's authorizer, node/access.py) is the typed *_AUTHORIZATION_FAILED error its details name;
  RESOURCE_EXHAUSTED is ``RequestLimitError`` (retriable) when the node's
  in-flight limits refused the call (node/request_limits.py; the details name
  the ``max_inflight_requests*`` setting), else (a message over a size limit)
  ``MessageTooLargeError`` carrying gRPC's details, which name the limit; UNAVAILABLE, DEADLINE_EXCEEDED
  and other transport codes are the retriable ``KetchConnectionError``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import grpc

from ketch.api.v1 import ketch_pb2, ketch_pb2_grpc
from ketch.errors import (
    AuthenticationFailedError,
    ErrorCode,
    InvalidRequestError,
    KetchConnectionError,
    KetchError,
    MessageTooLargeError,
    RequestLimitError,
    error_for,
)
from ketch.records import TopicPartition
from ketch.sasl import bearer, login_async
from ketch.tls import PLAINTEXT, SecurityConfig, open_aio_channel

__all__ = [
    "Broker",
    "Cluster",
    "Connection",
    "PartitionInfo",
    "TopicInfo",
    "parse_bootstrap",
    "translate_rpc_error",
]

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
METADATA_HEDGE_S = 0.25  # ask the next broker too when one has not answered Metadata this fast
METADATA_ATTEMPT_S = 5.0  # the longest one Metadata attempt may take (at most the request timeout)
RECENT_FAILURE_S = 5.0  # an address that failed this recently is asked last


def parse_bootstrap(servers: str | Iterable[str]) -> list[tuple[str, int]]:
    """``"h1:9092,h2:9093"`` or ``["h1:9092", ...]`` as (host, port) pairs."""
    items = servers.split(",") if isinstance(servers, str) else list(servers)
    out: list[tuple[str, int]] = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"bootstrap server {item!r} is not host:port")
        out.append((host.strip("[]"), int(port)))
    if not out:
        raise ValueError("bootstrap_servers is empty; give at least one host:port")
    return out


@dataclass(frozen=True, slots=True)
class Broker:
    node_id: int
    host: str
    port: int
    rack: str | None = None


@dataclass(frozen=True, slots=True)
class PartitionInfo:
    partition: int
    leader: int  # -1: no leader right now
    leader_epoch: int
    replicas: tuple[int, ...] = ()
    isr: tuple[int, ...] = ()
    error_code: int = 0


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    error_code: int
    error_message: str = ""
    topic_id: str = ""
    partitions: dict[int, PartitionInfo] = field(default_factory=dict)
    available: tuple[int, ...] = ()  # partitions with a leader
    tps: tuple[TopicPartition, ...] = ()  # TopicPartition(name, i) at index i, made once
    num_partitions: int = 0

    @classmethod
    def make(
        cls, name: str, error_code: int, error_message: str, topic_id: str, partitions: dict[int, PartitionInfo]
    ) -> TopicInfo:
        n = max(partitions, default=-1) + 1
        available = tuple(sorted(p.partition for p in partitions.values() if p.leader >= 0))
        tps = tuple(TopicPartition(name, i) for i in range(n))
        return cls(name, error_code, error_message, topic_id, partitions, available, tps, n)


@dataclass(frozen=True, slots=True)
class Cluster:
    cluster_id: str = ""
    controller_id: int = -1
    brokers: dict[int, Broker] = field(default_factory=dict)
    topics: dict[str, TopicInfo] = field(default_factory=dict)
    updated_at: float = 0.0  # monotonic seconds; 0 = never

    def leader(self, topic: str, partition: int) -> int:
        t = self.topics.get(topic)
        p = t.partitions.get(partition) if t else None
        return p.leader if p is not None and p.leader in self.brokers else -1


def topic_from_pb(t: ketch_pb2.TopicMetadata) -> TopicInfo:
    parts = {
        p.partition: PartitionInfo(
            p.partition, p.leader_id, p.leader_epoch, tuple(p.replicas), tuple(p.isr), p.error_code
        )
        for p in t.partitions
    }
    return TopicInfo.make(t.name, t.error_code, t.error_message, t.topic_id, parts)


def never_older(fresh: TopicInfo, cached: TopicInfo | None) -> TopicInfo:
    """``fresh``, except that a partition it holds at a lower leader epoch than ``cached`` (same topic
    id) keeps the cached entry: the answer came from a broker whose image is behind."""
    if cached is None or cached.topic_id != fresh.topic_id or fresh.error_code:
        return fresh
    parts = dict(fresh.partitions)
    older = False
    for i, p in fresh.partitions.items():
        known = cached.partitions.get(i)
        if known is not None and known.leader_epoch > p.leader_epoch:
            parts[i] = known
            older = True
    return TopicInfo.make(fresh.name, fresh.error_code, fresh.error_message, fresh.topic_id, parts) if older else fresh


# gRPC's words for a TLS handshake this client refused (the node's certificate is not trusted or does
# not name the host dialled): configuration errors that retrying cannot fix. A node refusing the
# client's certificate only closes the socket, which a crash also does: that stays retriable.
TLS_REFUSED = (
    "Ssl handshake failed",
    "Tls handshake failed",
    "Hostname Verification Check failed",
    "CERTIFICATE_VERIFY_FAILED",
)


def translate_rpc_error(err: grpc.RpcError, where: str = "") -> KetchError:
    """A failed call (grpc.aio's or a blocking channel's) as the typed error it stands for."""
    code = err.code()
    details = err.details() or ""
    prefix = f"{where}: " if where else ""
    if code == grpc.StatusCode.PERMISSION_DENIED:  # node/access.py: "CODE: why"
        name, _, why = details.partition(": ")
        known = ErrorCode.__members__.get(name)
        return error_for(known, f"{prefix}{why}") if known else KetchError(f"{prefix}{details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "max_inflight_requests" in details:
        return RequestLimitError(f"{prefix}{details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return MessageTooLargeError(f"{prefix}request refused by the broker: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidRequestError(f"{prefix}{details}")
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return KetchError(f"{prefix}{details}", code=ErrorCode.UNSUPPORTED_VERSION)
    if code == grpc.StatusCode.UNAVAILABLE and any(sign in details for sign in TLS_REFUSED):
        return AuthenticationFailedError(f"{prefix}TLS handshake refused: {details}")
    if code == grpc.StatusCode.UNAVAILABLE and "Socket closed" in details:
        details += (
            " (a node that requires TLS closes a plaintext connection, and one that requires client"
            " certificates closes a connection without one: check security_protocol, ssl_certfile, ssl_keyfile)"
        )
    return KetchConnectionError(f"{prefix}{code.name}: {details}")


def channel_options(client_id: str) -> list[tuple[str, int | str]]:
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
        ("grpc.primary_user_agent", f"ketch-python/{client_id}"),
    ]


class Connection:
    """Channels, stubs and the metadata cache of one client object."""

    def __init__(
        self,
        bootstrap_servers: str | Iterable[str],
        client_id: str = "ketch",
        request_timeout_ms: int = 30000,
        allow_auto_create_topics: bool = False,
        security: SecurityConfig = PLAINTEXT,
    ) -> None:
        self.bootstrap = parse_bootstrap(bootstrap_servers)
        self.security = security
        self.client_id = client_id
        self.request_timeout = request_timeout_ms / 1000
        self.allow_auto_create_topics = allow_auto_create_topics
        self.cluster = Cluster()
        self.tracked: set[str] = set()
        self._channels: dict[tuple[str, int], grpc.aio.Channel] = {}
        self._stubs: dict[tuple[str, int], ketch_pb2_grpc.KetchStub] = {}
        self._refresh: asyncio.Task[Cluster] | None = None
        self._tokens: dict[tuple[str, int], str] = {}  # SASL session per node
        self._logins: dict[tuple[str, int], asyncio.Future[str]] = {}
        self._closed = False
        self._failed_at: dict[tuple[str, int], float] = {}  # address → monotonic time of its last transport failure
        self.metadata_attempt_s = min(METADATA_ATTEMPT_S, self.request_timeout)

    # -- channels ---------------------------------------------------------
    def stub_at(self, addr: tuple[str, int]) -> ketch_pb2_grpc.KetchStub:
        if self._closed:
            raise KetchError("client is closed")
        stub = self._stubs.get(addr)
        if stub is None:
            target = f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
            channel = open_aio_channel(target, self.security, channel_options(self.client_id))
            self._channels[addr] = channel
            stub = self._stubs[addr] = ketch_pb2_grpc.KetchStub(channel)
        return stub

    def address(self, node_id: int) -> tuple[str, int] | None:
        b = self.cluster.brokers.get(node_id)
        return (b.host, b.port) if b else None

    def failed_recently(self, addr: tuple[str, int]) -> bool:
        failed = self._failed_at.get(addr)
        return failed is not None and time.monotonic() - failed < RECENT_FAILURE_S

    def candidates(self, avoid: Iterable[tuple[str, int]] = ()) -> list[tuple[str, int]]:
        """Known brokers first, then bootstrap addresses, without repeats; addresses in ``avoid`` and
        those that failed recently last (in that order), so a dead or paused node is asked last."""
        seen: dict[tuple[str, int], None] = {}
        for b in self.cluster.brokers.values():
            seen[(b.host, b.port)] = None
        for addr in self.bootstrap:
            seen[addr] = None
        avoided = set(avoid)
        return sorted(seen, key=lambda a: (a in avoided, self.failed_recently(a)))

    async def call_at(
        self, addr: tuple[str, int], method: str, request: object, timeout: float | None = None, where: str = ""
    ) -> Any:
        """The one way to call a broker: ``method`` at ``addr``, a transport failure raised as a typed
        error (``translate_rpc_error``) that names ``where`` (default: the address). With SASL_SSL the
        call carries this node's session token, logging in first (ketch/sasl.py) and once more when
        the node no longer knows the session (UNAUTHENTICATED: it expired, or the node restarted)."""
        timeout = timeout or self.request_timeout
        try:
            if self.security.sasl:
                return await self._call_in_session(addr, method, request, timeout, where or f"{addr[0]}:{addr[1]}")
            try:
                return await getattr(self.stub_at(addr), method)(request, timeout=timeout)
            except grpc.aio.AioRpcError as e:
                raise translate_rpc_error(e, where or f"{addr[0]}:{addr[1]}") from None
        except KetchConnectionError:
            self._failed_at[addr] = time.monotonic()
            raise

    async def _call_in_session(
        self, addr: tuple[str, int], method: str, request: object, timeout: float, where: str
    ) -> Any:
        """``call_at`` with SASL: the node's session token on the call; one new login when the node
        answers UNAUTHENTICATED."""
        for attempt in (1, 2):
            metadata = bearer(await self._session(addr, where))
            try:
                return await getattr(self.stub_at(addr), method)(request, timeout=timeout, metadata=metadata)
            except grpc.aio.AioRpcError as e:
                if e.code() == grpc.StatusCode.UNAUTHENTICATED and attempt == 1:
                    self._tokens.pop(addr, None)
                    continue
                raise translate_rpc_error(e, where) from None
        raise AssertionError("unreachable")

    async def _session(self, addr: tuple[str, int], where: str) -> str:
        """This node's session token, logging in once for concurrent callers."""
        token = self._tokens.get(addr)
        if token is not None:
            return token
        login = self._logins.get(addr)
        if login is None:
            login = self._logins[addr] = asyncio.ensure_future(
                login_async(self.stub_at(addr), self.security, where, self.request_timeout)
            )
            login.add_done_callback(lambda _: self._logins.pop(addr, None))
        try:
            token = await asyncio.shield(login)
        except grpc.aio.AioRpcError as e:
            raise translate_rpc_error(e, where) from None
        self._tokens[addr] = token
        return token

    async def call_node(self, node_id: int, method: str, request: object, timeout: float | None = None) -> Any:
        """``method`` at broker ``node_id``; ``KetchConnectionError`` when the metadata does not know it."""
        addr = self.address(node_id)
        if addr is None:
            raise KetchConnectionError(f"broker {node_id} is not in the metadata")
        return await self.call_at(addr, method, request, timeout, f"broker {node_id}")

    async def call_any(self, method: str, request: object, timeout: float | None = None) -> object:
        """Call ``method`` on the first broker that answers (recently failed ones last)."""
        errors: list[str] = []
        for addr in self.candidates():
            try:
                return await self.call_at(addr, method, request, timeout)
            except KetchConnectionError as e:
                errors.append(str(e))
        raise KetchConnectionError("no broker answered: " + "; ".join(errors))

    async def call_hedged(
        self, method: str, request: object, avoid: Iterable[tuple[str, int]] = (), hedge_s: float = METADATA_HEDGE_S
    ) -> object:
        """``method`` on the candidates in order, starting the next one whenever ``hedge_s`` passes
        without an answer or a call fails; each attempt bounded by ``metadata_attempt_s``. The first
        answer wins and the calls still running are cancelled. For idempotent reads (Metadata)."""
        queue = self.candidates(avoid)
        running: dict[asyncio.Task[Any], tuple[str, int]] = {}
        errors: list[str] = []
        try:
            while queue or running:
                if queue:
                    addr = queue.pop(0)
                    call = self.call_at(addr, method, request, self.metadata_attempt_s)
                    running[asyncio.ensure_future(call)] = addr
                done, _ = await asyncio.wait(
                    running, timeout=hedge_s if queue else None, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    addr = running.pop(task)
                    exc = task.exception()
                    if exc is None:
                        return task.result()
                    if not isinstance(exc, KetchConnectionError):
                        raise exc
                    errors.append(str(exc))
        finally:
            for task in running:
                task.cancel()
        raise KetchConnectionError("no broker answered: " + "; ".join(errors))

    # -- metadata ---------------------------------------------------------
    def track(self, topics: Iterable[str]) -> None:
        self.tracked.update(topics)

    async def refresh(self, avoid: Iterable[int] = ()) -> Cluster:
        """Fetch metadata for the tracked topics; concurrent callers share one call. Brokers in
        ``avoid`` (ids: slow leaders) are asked last."""
        if self._refresh is None or self._refresh.done():
            addrs = [a for a in (self.address(n) for n in avoid) if a is not None]
            self._refresh = asyncio.ensure_future(self._do_refresh(addrs))
        return await asyncio.shield(self._refresh)

    async def _do_refresh(self, avoid: list[tuple[str, int]]) -> Cluster:
        topics = sorted(self.tracked)
        req = ketch_pb2.MetadataRequest(topics=topics, allow_auto_topic_creation=self.allow_auto_create_topics)
        resp = await self.call_hedged("Metadata", req, avoid)
        assert isinstance(resp, ketch_pb2.MetadataResponse)
        fresh = {t.name: never_older(topic_from_pb(t), self.cluster.topics.get(t.name)) for t in resp.topics}
        merged = fresh if not topics else {**self.cluster.topics, **fresh}
        self.cluster = Cluster(
            cluster_id=resp.cluster_id,
            controller_id=resp.controller_id,
            brokers={b.node_id: Broker(b.node_id, b.host, b.port, b.rack or None) for b in resp.brokers},
            topics=merged,
            updated_at=time.monotonic(),
        )
        return self.cluster

    async def close(self) -> None:
        self._closed = True
        if self._refresh is not None and not self._refresh.done():
            self._refresh.cancel()
        channels = list(self._channels.values())
        self._channels.clear()
        self._stubs.clear()
        for ch in channels:
            await ch.close(grace=None)
