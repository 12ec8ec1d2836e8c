"""SASL SCRAM on the Kafka listener: SaslHandshake, then SaslAuthenticate frames (KIP-152).

The exchange is node/sasl.py's ``SaslSessions`` (RFC 5802 through scramp, the users' SCRAM
credentials in the metadata image), reached through ``ctx.call("SaslAuthenticate", ...)`` like
the gRPC clients' logins. What a Kafka connection adds is state: Kafka's SaslAuthenticate has no
session id, so the connection keeps it between the two steps.

Rules:
- SaslHandshake v0-1 names the mechanism; the answer lists the SCRAM mechanisms this node takes
  (each asked of ``SaslSessions`` with an empty first step: UNSUPPORTED_SASL_MECHANISM means not
  taken). A mechanism not taken is UNSUPPORTED_SASL_MECHANISM (33), and the connection stays
  unauthenticated.
- Only the framed form: after the handshake, SaslAuthenticate v0-2 frames carry the SCRAM
  messages (client-first, then client-final). The legacy form (handshake v0, then raw tokens
  without Kafka framing) is not served; every maintained client uses handshake v1 and frames.
- A SaslAuthenticate without a handshake first is ILLEGAL_SASL_STATE (34); any refusal (wrong
  password, unknown user, stale or malformed step) is SASL_AUTHENTICATION_FAILED (58) with
  ``SaslSessions``' message, and the exchange starts over with a new handshake.
- On success the connection's principal is ``User:NAME`` (NAME from the client-first message,
  RFC 5802's saslname unescaped, the name SaslSessions looked up) in
  ``ctx.connection_state["principal"]``; the server runs later requests as it. v1+ answers the
  session lifetime (Kafka's connections.max.reauth.ms); a client re-authenticates with a new
  handshake before it ends (KIP-368).
"""

from __future__ import annotations

import datetime
from typing import Any

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.kafka.answers import Refused, call
from node.kafka.context import Api, KafkaContext
from node.kafka.wire import build, kafka_error

ILLEGAL_SASL_STATE = 34  # not in ketch/errors.py: only this listener has a handshake
SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
PRINCIPAL = "principal"
MECHANISM = "sasl_mechanism"
SESSION = "sasl_session_id"
USER = "sasl_user"


async def _taken(ctx: KafkaContext, mechanism: str) -> bool:
    """Whether this node takes ``mechanism``: an empty first step fails, but not as unsupported."""
    answer = await call(ctx, "SaslAuthenticate", pb.SaslAuthenticateRequest(mechanism=mechanism, auth_bytes=b""))
    code = answer.code if isinstance(answer, Refused) else int(answer.error_code)
    return code != ErrorCode.UNSUPPORTED_SASL_MECHANISM


async def sasl_handshake(request: Any, ctx: KafkaContext) -> Any:
    state = ctx.connection_state
    for key in (MECHANISM, SESSION, USER):
        state.pop(key, None)
    taken = [m for m in SCRAM_MECHANISMS if await _taken(ctx, m)]
    if request.mechanism not in taken:
        return build(
            ctx.response_type, error_code=kafka_error(ErrorCode.UNSUPPORTED_SASL_MECHANISM), mechanisms=tuple(taken)
        )
    state[MECHANISM] = request.mechanism
    return build(ctx.response_type, error_code=kafka_error(0), mechanisms=tuple(taken))


def scram_user(client_first: bytes) -> str:
    """The user name of a SCRAM client-first message (``n,,n=NAME,r=NONCE``); ValueError if none."""
    text = client_first.decode("utf-8")
    parts = text.split(",")
    if len(parts) < 4:
        raise ValueError("not a SCRAM client-first message")
    for attribute in parts[2:]:
        if attribute.startswith("n="):
            return attribute[2:].replace("=2C", ",").replace("=3D", "=")
    raise ValueError("no user name in the SCRAM client-first message")


async def sasl_authenticate(request: Any, ctx: KafkaContext) -> Any:
    state = ctx.connection_state
    mechanism = state.get(MECHANISM)
    if mechanism is None:
        return _refuse(ctx, ILLEGAL_SASL_STATE, "send SaslHandshake with the mechanism first")
    session_id = state.get(SESSION, "")
    if not session_id:
        try:
            state[USER] = scram_user(request.auth_bytes)
        except (UnicodeDecodeError, ValueError) as exc:
            return _fail(ctx, str(exc))
    answer = await call(
        ctx,
        "SaslAuthenticate",
        pb.SaslAuthenticateRequest(
            mechanism=mechanism, session_id=session_id, auth_bytes=request.auth_bytes, connection_bound=True
        ),
    )
    if isinstance(answer, Refused):
        return _fail(ctx, answer.message)
    if answer.error_code:
        return _fail(ctx, answer.error_message)
    if not session_id:  # the first step: keep the session for the client-final message
        state[SESSION] = answer.session_id
        return build(ctx.response_type, error_code=kafka_error(0), error_message=None, auth_bytes=answer.auth_bytes)
    state[PRINCIPAL] = "User:" + state[USER]
    for key in (MECHANISM, SESSION, USER):
        state.pop(key, None)
    return build(
        ctx.response_type,
        error_code=kafka_error(0),
        error_message=None,
        auth_bytes=answer.auth_bytes,
        session_lifetime=datetime.timedelta(milliseconds=answer.session_lifetime_ms),
    )


def _fail(ctx: KafkaContext, message: str) -> Any:
    return _refuse(ctx, ErrorCode.SASL_AUTHENTICATION_FAILED, message)


def _refuse(ctx: KafkaContext, code: int, message: str) -> Any:
    for key in (MECHANISM, SESSION, USER):
        ctx.connection_state.pop(key, None)
    return build(ctx.response_type, error_code=kafka_error(code), error_message=message, auth_bytes=b"")


APIS = [
    Api(17, "SaslHandshake", 0, 1, sasl_handshake),
    Api(36, "SaslAuthenticate", 0, 2, sasl_authenticate),
]
