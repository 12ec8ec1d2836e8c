"""The Kafka protocol listener of a node: an asyncio TCP server speaking Kafka's framing.

Rules:
- Framing (node/kafka/wire.py): a 4-byte big-endian size, then the request header (v1, or v2 for
  a flexible version) and the body, decoded with kio for (api key, api version); the answer is
  the response header (v0, or v1 for a flexible version; v0 for ApiVersions) and the body.
- Limits: a size above ``max_request_bytes`` (or below a request header's 8 bytes) or a frame
  that does not decode closes that connection, with the reason logged at WARNING; nothing else
  is disturbed and nothing of that frame ran. At most ``max_inflight_requests_per_connection``
  requests of one connection are in progress (0: no limit); the next frame is read when one
  finishes (back pressure through TCP). Each connection buffers up to ``READ_BUFFER_BYTES``
  twice (1 MiB) before it stops reading: with asyncio's 64 KiB default the socket was paused and
  resumed over and over while one large produce frame arrived (confluent-kafka at 1 KiB records:
  11-16k rec/s on one node, 45-103k with a 4 MiB limit, measured beside Ketch's client).
- Ordering: one connection's requests run concurrently (the next one is read while one is served:
  pipelining) and are answered in the order they came, which Kafka clients rely on. SaslHandshake
  and SaslAuthenticate change who the connection is, so each waits for every earlier request and
  every later one waits for it.
- Refused: an API key or version not in node/kafka/apis.py's registry gets UNSUPPORTED_VERSION
  and the connection stays open (ApiVersions: its v0 answer with the supported list, so a client
  downgrades; an API whose answer has no top-level error code, such as Metadata or Produce,
  cannot say it, and its connection is closed as Kafka does; node/kafka/wire.py
  ``unsupported_answer``). Produce with acks=0 gets no answer (Kafka's rule); when a partition
  of it failed, the connection is closed instead, so the producer learns (as Kafka does).
- TLS (``kafka_security_protocol`` SSL): the node's ssl_* files, loaded when the node starts (a
  rotated certificate takes a restart here, unlike gRPC's listeners); client auth ``required`` is
  mutual TLS. SASL logins need it: the broker's service for this listener gets the node's SASL
  sessions only on SSL, as on gRPC (passwords travel over TLS only).
- A handler runs ``KetchService`` methods through ``ctx.call`` (``ServiceCaller``): with
  ``authorizer_enabled`` node/access.py decides first, for the connection's principal
  (``connection_state["principal"]`` once a SASL login set it, else the TLS client certificate's
  by ``ssl_principal_mapping_rules``, else ``User:ANONYMOUS``), and a
  refusal raises ``KetchError`` with the rule's code; list answers are filtered the same way as
  on gRPC. The servicer gets a small context whose ``abort`` raises ``KetchError`` (Metadata while
  the broker catches up) and whose ``done()`` says the connection closed (a parked fetch ends).
- A handler that raises (a servicer abort it does not turn into an error code, a bug) closes the
  connection with the reason logged: Kafka clients treat that as a retriable network error and
  ask again, possibly another broker; the node keeps serving.
- Stopping closes the listening socket and every connection (a parked fetch first ends when the
  broker closes its fetch waiters); requests still in progress are cut (a client retries them,
  an idempotent producer without duplicates).
- Idle connections (Kafka's ``connections.max.idle.ms``, ``kafka_connections_max_idle_ms``): a
  connection with no request in progress that has read no frame and written no answer for that
  long is closed (logged at INFO), a half-sent frame included; one waiting on a long poll is not
  idle.
- The node's in-flight limits (node/request_limits.py, shared with the gRPC listeners): every
  request counts toward ``max_inflight_requests`` and ``max_inflight_requests_per_ip`` until it
  is answered; one over a limit closes its connection with the limit named in the log (Kafka
  refuses connections over ``max.connections.per.ip``; the client reconnects after its backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc
from kio.index import load_response_schema

from ketch.errors import ErrorCode, KetchError
from node.access import KETCH, AccessControl
from node.config import ConfigError, NodeConfig
from node.kafka.apis import REGISTRY, Registry
from node.kafka.context import KafkaContext
from node.kafka.wire import SIZE, MalformedFrame, Request, encode_response, parse_request, unsupported_answer
from node.listeners import Listener
from node.principal import MappingRule, certificate_principal, parse_rules
from node.request_limits import InflightLimits

log = logging.getLogger("ketch.kafka")
READ_BUFFER_BYTES = 1 << 20
ANONYMOUS = "User:ANONYMOUS"
PRODUCE, SASL_HANDSHAKE, SASL_AUTHENTICATE = 0, 17, 36
EXCLUSIVE = frozenset({SASL_HANDSHAKE, SASL_AUTHENTICATE})
ABORT_CODES = {
    grpc.StatusCode.UNAVAILABLE: ErrorCode.LEADER_NOT_AVAILABLE,
    grpc.StatusCode.PERMISSION_DENIED: ErrorCode.CLUSTER_AUTHORIZATION_FAILED,
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.SASL_AUTHENTICATION_FAILED,
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.INVALID_REQUEST,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.THROTTLING_QUOTA_EXCEEDED,
}


@dataclass
class Connection:
    """One client connection: its address, what APIs keep on it, and whether it closed."""

    peer: str
    certificate_principal: str = ANONYMOUS  # from its TLS client certificate, if any
    state: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    pending: set[asyncio.Task[bytes | None]] = field(default_factory=set)
    last_active: float = field(default_factory=time.monotonic)  # the last frame read or answer written
    barrier: asyncio.Task[bytes | None] | None = None

    @property
    def principal(self) -> str:
        return str(self.state.get("principal", self.certificate_principal))


class ServicerAbort(KetchError):
    """A ``KetchService`` method called ``context.abort``; the code is the status's nearest Kafka one."""


class ServicerContext:
    """What a ``KetchService`` method uses of a gRPC context, for a Kafka connection."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise ServicerAbort(details, code=ABORT_CODES.get(code, ErrorCode.UNKNOWN_SERVER_ERROR))

    def done(self) -> bool:
        return self.connection.closed

    def peer(self) -> str:
        return f"kafka:{self.connection.peer}"


class ServiceCaller:
    """``ctx.call``: node/access.py's decision, then the listener's ``KetchService`` method."""

    def __init__(self, service: Any, access: AccessControl | None) -> None:
        self.service = service
        self.access = access

    async def call(self, connection: Connection, method: str, request: Any) -> Any:
        full = KETCH + method
        check = None
        if self.access is not None:
            check, denied = self.access.decide(full, request, connection.principal)
            if denied is not None:
                log.info("refused %s to %s: %s", method, connection.principal, denied.why)
                raise KetchError(denied.why, code=denied.code)
        response = await getattr(self.service, method)(request, ServicerContext(connection))
        if self.access is not None and check is not None:
            self.access.filter(full, request, response, check)
        return response


def server_tls(config: NodeConfig, client_auth: str) -> ssl.SSLContext:
    """The TLS of an SSL Kafka listener: the node's ssl_* files; ``required``: mutual TLS."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=config.ssl_cafile or None)
    context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
    context.verify_mode = ssl.CERT_REQUIRED if client_auth == "required" else ssl.CERT_NONE
    return context


def kafka_server(config: NodeConfig, listener: Listener) -> KafkaServer:
    """The Kafka listener of ``config`` (not yet bound)."""
    tls = server_tls(config, listener.client_auth) if listener.security_protocol == "SSL" else None
    return KafkaServer(
        listener,
        config.node_id,
        config.max_request_bytes,
        config.max_inflight_requests_per_connection,
        max_idle_ms=config.kafka_connections_max_idle_ms,
        tls=tls,
        principal_rules=parse_rules(config.ssl_principal_mapping_rules),
    )


def _release(limits: InflightLimits, key: str, _: asyncio.Task[bytes | None]) -> None:
    limits.release(key)


class KafkaServer:
    """The KAFKA listener: ``bind()`` (the port), ``start()``, then ``stop()``.

    ``caller`` is set by the node once the broker's service for this listener exists."""

    def __init__(
        self,
        listener: Listener,
        node_id: int,
        max_request_bytes: int,
        max_inflight_per_connection: int,
        registry: Registry = REGISTRY,
        max_idle_ms: int = 0,
        tls: ssl.SSLContext | None = None,
        principal_rules: tuple[MappingRule, ...] = (),
    ) -> None:
        self.listener = listener
        self.node_id = node_id
        self.max_request_bytes = max_request_bytes
        self.max_inflight = max(0, max_inflight_per_connection)  # asyncio.Queue(0): no limit
        self.max_idle_s = max_idle_ms / 1000
        self.registry = registry
        self.tls = tls
        self.principal_rules = principal_rules
        self.caller: ServiceCaller | None = None
        self.limits: InflightLimits | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    def serve(self, service: Any, access: AccessControl | None, limits: InflightLimits | None = None) -> None:
        """Serve ``service`` (the broker's ``KetchService`` for listener KAFKA) after ``access``'s rules,
        counting requests in the node's in-flight ``limits`` (shared with the gRPC listeners)."""
        self.caller = ServiceCaller(service, access)
        self.limits = limits

    async def bind(self) -> int:
        """Bind the listening socket (port 0: a free one) and return the port; ``ConfigError`` if it cannot."""
        try:
            self._server = await asyncio.start_server(
                self._serve,
                self.listener.bind_host or None,
                self.listener.bind_port,
                start_serving=False,
                ssl=self.tls,
                limit=READ_BUFFER_BYTES,
            )
        except OSError as exc:
            raise ConfigError(f"cannot listen on {self.listener.bind} (listener KAFKA, kafka_listen): {exc}") from None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        assert self._server is not None and self.caller is not None
        await self._server.start_serving()

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._connections):
            writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5.0)

    # -- one connection ---------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        tls = writer.get_extra_info("ssl_object")
        certificate = tls.getpeercert(binary_form=True) if tls is not None else None
        connection = Connection(
            f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer),
            certificate_principal(certificate, self.principal_rules),
        )
        answers: asyncio.Queue[asyncio.Task[bytes | None]] = asyncio.Queue(self.max_inflight)
        sender = asyncio.create_task(self._send(connection, answers, writer), name=f"kafka-send-{connection.peer}")
        self._connections.add(writer)
        serial = 0
        try:
            while not sender.done():
                request = await self._read(connection, reader)
                if request is None:
                    break
                serial += 1
                key = f"kafka:{connection.peer}#{serial}"  # one count per request: the queue bounds a connection
                refusal = self.limits.admit(key) if self.limits is not None else None
                if refusal is not None:
                    log.warning("closing Kafka connection from %s: request refused: %s", connection.peer, refusal)
                    break
                task = self._start(connection, request)
                if self.limits is not None:
                    task.add_done_callback(functools.partial(_release, self.limits, key))
                await answers.put(task)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away
        finally:
            connection.closed = True
            for task in [*connection.pending, sender]:
                task.cancel()
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_exactly(self, connection: Connection, reader: asyncio.StreamReader, count: int) -> bytes | None:
        """``count`` bytes, or None when the connection stayed idle too long (see the module rules)."""
        if not self.max_idle_s:
            return await reader.readexactly(count)
        while True:
            quiet = time.monotonic() - connection.last_active
            if not connection.pending and quiet >= self.max_idle_s:
                log.info("closing idle Kafka connection from %s (kafka_connections_max_idle_ms)", connection.peer)
                return None
            wait = self.max_idle_s if connection.pending else self.max_idle_s - quiet
            try:  # a readexactly cancelled by the timeout consumed nothing: reading again is safe
                data = await asyncio.wait_for(reader.readexactly(count), wait)
            except TimeoutError:
                continue
            connection.last_active = time.monotonic()
            return data

    async def _read(self, connection: Connection, reader: asyncio.StreamReader) -> Request | None:
        """The next request, or None to close the connection (the reason logged)."""
        head = await self._read_exactly(connection, reader, SIZE.size)
        if head is None:
            return None
        size = SIZE.unpack(head)[0]
        if size < 8 or size > self.max_request_bytes:
            log.warning(
                "closing Kafka connection from %s: frame size %d is outside 8..%d (max_request_bytes)",
                connection.peer,
                size,
                self.max_request_bytes,
            )
            return None
        frame = await self._read_exactly(connection, reader, size)
        if frame is None:
            return None
        try:
            return parse_request(frame, self.registry.served)
        except MalformedFrame as exc:
            log.warning("closing Kafka connection from %s: %s", connection.peer, exc)
            return None

    def _start(self, connection: Connection, request: Request) -> asyncio.Task[bytes | None]:
        """Start serving ``request`` after what it must wait for (SASL requests: everything earlier)."""
        if request.api_key in EXCLUSIVE:
            earlier: list[asyncio.Task[bytes | None]] = list(connection.pending)
        else:
            earlier = [connection.barrier] if connection.barrier is not None else []
        task = asyncio.create_task(self._answer(connection, request, earlier))
        connection.pending.add(task)
        task.add_done_callback(connection.pending.discard)
        if request.api_key in EXCLUSIVE:
            connection.barrier = task
        return task

    async def _answer(
        self, connection: Connection, request: Request, earlier: list[asyncio.Task[bytes | None]]
    ) -> bytes | None:
        """The frame answering ``request``, or None when it gets no answer (Produce acks=0)."""
        if earlier:
            await asyncio.wait(earlier)
        if request.body is None:
            log.info(
                "Kafka client %s asked api %d v%d, not served: UNSUPPORTED_VERSION",
                connection.peer,
                request.api_key,
                request.api_version,
            )
            answer = unsupported_answer(request, self.registry.unsupported_api_versions)
            if answer is None:
                raise KetchError(
                    f"api {request.api_key} v{request.api_version} is not served and its answer has no "
                    "error code to say so",
                    code=ErrorCode.UNSUPPORTED_VERSION,
                )
            return answer
        api = self.registry.handler(request.api_key)
        assert self.caller is not None
        caller = self.caller
        ctx = KafkaContext(
            api_version=request.api_version,
            client_id=request.client_id,
            principal=connection.principal,
            response_type=load_response_schema(request.api_key, request.api_version),
            call=lambda method, pb_request: caller.call(connection, method, pb_request),
            node_id=self.node_id,
            connection_state=connection.state,
        )
        response = await api.handler(request.body, ctx)
        if request.api_key == PRODUCE and request.body.acks == 0:
            failed = [p for t in response.responses for p in t.partition_responses if p.error_code != 0]
            if failed:  # the producer hears of it only this way, and refreshes its metadata
                raise KetchError(f"acks=0 produce failed ({failed[0].error_code.name}); closing, as Kafka does")
            return None
        return encode_response(request.correlation_id, response)

    async def _send(
        self, connection: Connection, answers: asyncio.Queue[asyncio.Task[bytes | None]], writer: asyncio.StreamWriter
    ) -> None:
        """Write the answers in request order; a failed request closes the connection."""
        while True:
            task = await answers.get()
            try:
                frame = await task
            except asyncio.CancelledError:
                raise
            except KetchError as exc:
                log.info("closing Kafka connection from %s: %s", connection.peer, exc)
                break
            except Exception:
                log.exception("closing Kafka connection from %s: a request failed", connection.peer)
                break
            if frame is not None:
                writer.write(frame)
                await writer.drain()
            connection.last_active = time.monotonic()
        writer.close()  # the read loop then ends
