"""SASL SCRAM authentication on a node: the two-step exchange and the sessions it opens.

A client with ``security_protocol="SASL_SSL"`` authenticates to each node it talks to with two
``SaslAuthenticate`` calls (RFC 5802 through scramp: client-first / server-first, then
client-final / server-final) and gets a session token; every later call carries
``authorization: Bearer TOKEN`` and runs as ``User:NAME`` (node/principal.py). The credentials
are the users' SCRAM credentials in the metadata image (coordinator/metadata/scram.py).

Rules:
- Only over TLS, and only with ``sasl_enabled_mechanisms`` set (node/config.py checks both at
  start); otherwise UNSUPPORTED_SASL_MECHANISM saying so.
- A wrong password, an unknown user or a stale handshake is SASL_AUTHENTICATION_FAILED with the
  same message for each (no hint which users exist), never a hang.
- Handshakes not finished within ``HANDSHAKE_TTL_S`` are forgotten, and at most
  ``MAX_PENDING`` are kept (the oldest go first), so a flood of first steps cannot grow memory.
- A session lasts ``session_lifetime_ms`` (Kafka's connections.max.reauth.ms, default 1 h here);
  a call with an unknown or expired token gets gRPC UNAUTHENTICATED, and the client
  authenticates again. Sessions live in this process: a restarted node asks for a new one.
- A session token is 32 random bytes: possession is authentication (hence TLS only).
- A ``connection_bound`` login (the Kafka listener, whose connection itself is logged in) gets
  no token and keeps no session, so Kafka logins never evict the gRPC clients' sessions.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import scramp

from coordinator.metadata.image import MetadataImage
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode

HANDSHAKE_TTL_S = 30.0
MAX_PENDING = 1000
MAX_SESSIONS = 100_000
FAILED = "authentication failed: unknown user, wrong password or mechanism, or an expired handshake"


@dataclass
class _Pending:
    server: scramp.core.ScramServer
    mechanism: str
    user: str
    started: float


class SaslSessions:
    def __init__(
        self,
        mechanisms: frozenset[str],
        image: Callable[[], MetadataImage] = MetadataImage,
        session_lifetime_ms: int = 3_600_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mechanisms = mechanisms
        self.image = image
        self.lifetime_s = session_lifetime_ms / 1000
        self.clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()  # token -> (principal, expiry)

    def principal(self, token: str) -> str | None:
        """``User:NAME`` of a live session, or None."""
        found = self._sessions.get(token)
        if found is None:
            return None
        if found[1] < self.clock():
            del self._sessions[token]
            return None
        return found[0]

    def authenticate(self, request: pb.SaslAuthenticateRequest) -> pb.SaslAuthenticateResponse:
        if not self.mechanisms:
            return _refuse(
                ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                "SASL is not enabled here: it needs sasl_enabled_mechanisms on the node, and a TLS listener",
            )
        if request.mechanism not in self.mechanisms:
            return _refuse(
                ErrorCode.UNSUPPORTED_SASL_MECHANISM,
                f"mechanism {request.mechanism!r} is not enabled; this node takes {', '.join(sorted(self.mechanisms))}",
            )
        self._expire()
        try:
            if not request.session_id:
                return self._first(request)
            return self._final(request)
        except (scramp.ScramException, UnicodeDecodeError, ValueError):
            self._pending.pop(request.session_id, None)
            return _refuse(ErrorCode.SASL_AUTHENTICATION_FAILED, FAILED)

    def _first(self, request: pb.SaslAuthenticateRequest) -> pb.SaslAuthenticateResponse:
        credentials = self.image().scram_credentials
        mechanism = request.mechanism

        asked: list[str] = []

        def lookup(username: str) -> tuple[bytes, bytes, bytes, int]:
            asked.append(username)
            cred = credentials.get((username, mechanism))
            if cred is None:
                raise scramp.ScramException("unknown user")
            return cred.salt, cred.stored_key, cred.server_key, cred.iterations

        server = scramp.ScramMechanism(mechanism).make_server(lookup)
        server.set_client_first(request.auth_bytes.decode("utf-8"))
        session_id = secrets.token_hex(16)
        self._pending[session_id] = _Pending(server, mechanism, asked[0], self.clock())
        while len(self._pending) > MAX_PENDING:
            self._pending.popitem(last=False)
        return pb.SaslAuthenticateResponse(session_id=session_id, auth_bytes=server.get_server_first().encode())

    def _final(self, request: pb.SaslAuthenticateRequest) -> pb.SaslAuthenticateResponse:
        pending = self._pending.pop(request.session_id, None)
        if pending is None or pending.mechanism != request.mechanism:
            return _refuse(ErrorCode.SASL_AUTHENTICATION_FAILED, FAILED)
        server = pending.server
        server.set_client_final(request.auth_bytes.decode("utf-8"))
        token = ""
        if not request.connection_bound:  # a Kafka connection keeps its own login: no session here
            token = secrets.token_hex(32)
            self._sessions[token] = ("User:" + pending.user, self.clock() + self.lifetime_s)
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return pb.SaslAuthenticateResponse(
            auth_bytes=server.get_server_final().encode(),
            token=token,
            session_lifetime_ms=int(self.lifetime_s * 1000),
        )

    def _expire(self) -> None:
        cutoff = self.clock() - HANDSHAKE_TTL_S
        while self._pending and next(iter(self._pending.values())).started < cutoff:
            self._pending.popitem(last=False)


def _refuse(code: ErrorCode, message: str) -> pb.SaslAuthenticateResponse:
    return pb.SaslAuthenticateResponse(error_code=int(code), error_message=message)  # type: ignore[arg-type]
