"""SCRAM logins without a cluster: the node's sessions against a metadata image's credentials, the
client's exchange, the controller's command, and the refusals a person can act on."""

from __future__ import annotations

import pytest
import scramp
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.metadata import security_changes
from coordinator.metadata.delta import replay_batch
from coordinator.metadata.image import MetadataImage
from coordinator.metadata.scram import ScramCredential
from coordinator.metadata.snapshot import decode_snapshot, encode_snapshot
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import AuthenticationFailedError, ErrorCode, KetchError
from ketch.sasl import ScramLogin
from ketch.tls import SecurityConfig
from node.sasl import HANDSHAKE_TTL_S, MAX_PENDING, SaslSessions


def credential(name: str, password: str, mechanism: str = "SCRAM-SHA-256") -> ScramCredential:
    salt, stored, server, iterations = scramp.ScramMechanism(mechanism).make_auth_info(password, iteration_count=4096)
    return ScramCredential(name, mechanism, salt, stored, server, iterations)


def image_with(*creds: ScramCredential) -> MetadataImage:
    result = security_changes.alter_scram({}, [], list(creds))
    assert all(code == ErrorCode.NONE for _, code, _ in result.response)
    return replay_batch(MetadataImage(), 7, result.records)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def login(sessions: SaslSessions, user: str, password: str, mechanism: str = "SCRAM-SHA-256") -> str:
    security = SecurityConfig(
        "SASL_SSL", sasl_mechanism=mechanism, sasl_plain_username=user, sasl_plain_password=password
    )
    exchange = ScramLogin(security, "node 1")
    answer = sessions.authenticate(exchange.first())
    answer = sessions.authenticate(exchange.final(answer))
    return exchange.token(answer)


def test_a_login_opens_a_session_for_the_user_until_it_expires() -> None:
    clock = Clock()
    image = image_with(credential("alice", "s3cret"), credential("alice", "other", "SCRAM-SHA-512"))
    sessions = SaslSessions(frozenset({"SCRAM-SHA-256", "SCRAM-SHA-512"}), lambda: image, 60_000, clock)
    token = login(sessions, "alice", "s3cret")
    assert sessions.principal(token) == "User:alice"
    assert sessions.principal(login(sessions, "alice", "other", "SCRAM-SHA-512")) == "User:alice"
    assert sessions.principal("0" * 64) is None
    clock.now += 61
    assert sessions.principal(token) is None


def test_a_connection_bound_login_issues_no_token_and_keeps_no_session() -> None:
    """The Kafka listener's logins: the exchange succeeds (server-final proves the server), no
    session is kept, so a flood of them cannot evict gRPC clients' sessions."""
    image = image_with(credential("alice", "s3cret"))
    sessions = SaslSessions(frozenset({"SCRAM-SHA-256"}), lambda: image, 60_000, Clock())
    grpc_token = login(sessions, "alice", "s3cret")
    security = SecurityConfig(
        "SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice", sasl_plain_password="s3cret"
    )
    exchange = ScramLogin(security, "node 1")
    first = exchange.first()
    first.connection_bound = True
    answer = sessions.authenticate(first)
    final = exchange.final(answer)
    final.connection_bound = True
    answer = sessions.authenticate(final)
    assert answer.error_code == ErrorCode.NONE and answer.auth_bytes and answer.token == ""
    assert sessions._sessions.keys() == {grpc_token}  # only the gRPC login's session
    assert sessions.principal(grpc_token) == "User:alice"


@pytest.mark.parametrize(
    ("user", "password", "mechanism"),
    [("alice", "wrong", "SCRAM-SHA-256"), ("nobody", "s3cret", "SCRAM-SHA-256"), ("alice", "s3cret", "SCRAM-SHA-512")],
)
def test_every_refusal_says_the_same_and_is_not_retriable(user: str, password: str, mechanism: str) -> None:
    image = image_with(credential("alice", "s3cret"))
    sessions = SaslSessions(frozenset({"SCRAM-SHA-256", "SCRAM-SHA-512"}), lambda: image)
    with pytest.raises(AuthenticationFailedError, match="authentication failed: unknown user, wrong password") as e:
        login(sessions, user, password, mechanism)
    assert e.value.code == ErrorCode.SASL_AUTHENTICATION_FAILED and not e.value.retriable


def test_mechanisms_the_node_does_not_take_are_named() -> None:
    image = image_with(credential("alice", "s3cret", "SCRAM-SHA-512"))
    only_256 = SaslSessions(frozenset({"SCRAM-SHA-256"}), lambda: image)
    with pytest.raises(KetchError, match="'SCRAM-SHA-512' is not enabled; this node takes SCRAM-SHA-256") as e:
        login(only_256, "alice", "s3cret", "SCRAM-SHA-512")
    assert e.value.code == ErrorCode.UNSUPPORTED_SASL_MECHANISM
    with pytest.raises(KetchError, match="SASL is not enabled here"):
        login(SaslSessions(frozenset(), lambda: image), "alice", "s3cret", "SCRAM-SHA-512")


def test_a_node_that_does_not_hold_the_key_fails_the_clients_check() -> None:
    """The client verifies the server's proof: a node with another key for alice is refused."""
    real = SaslSessions(frozenset({"SCRAM-SHA-256"}), lambda: image_with(credential("alice", "s3cret")))
    fake_image = image_with(credential("alice", "s3cret"))  # another salt: a different server key
    fake = SaslSessions(frozenset({"SCRAM-SHA-256"}), lambda: fake_image)
    security = SecurityConfig(
        "SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice", sasl_plain_password="s3cret"
    )
    exchange = ScramLogin(security, "node 9")
    first = exchange.first()
    real_answer = real.authenticate(first)
    final = exchange.final(real_answer)
    # the fake node answers the final step for a handshake it did not start: refused, not a token
    forged = fake.authenticate(
        pb.SaslAuthenticateRequest(
            mechanism="SCRAM-SHA-256", session_id=real_answer.session_id, auth_bytes=final.auth_bytes
        )
    )
    assert forged.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED and not forged.token
    with pytest.raises(AuthenticationFailedError):
        exchange.token(pb.SaslAuthenticateResponse(auth_bytes=b"v=AAAA", token="t"))


def test_handshakes_are_bounded_and_expire() -> None:
    clock = Clock()
    image = image_with(credential("alice", "s3cret"))
    sessions = SaslSessions(frozenset({"SCRAM-SHA-256"}), lambda: image, clock=clock)
    security = SecurityConfig(
        "SASL_SSL", sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice", sasl_plain_password="s3cret"
    )
    for _ in range(MAX_PENDING + 50):
        sessions.authenticate(ScramLogin(security, "n").first())
    assert len(sessions._pending) == MAX_PENDING
    exchange = ScramLogin(security, "n")
    answer = sessions.authenticate(exchange.first())
    clock.now += HANDSHAKE_TTL_S + 1
    late = sessions.authenticate(exchange.final(answer))
    assert late.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED
    assert len(sessions._pending) == 0


def test_the_controller_command_and_the_log() -> None:
    alice = credential("alice", "s3cret")
    image = image_with(alice)
    assert decode_snapshot(encode_snapshot(image)) == image
    bad = [
        ScramCredential("", "SCRAM-SHA-256", b"s", alice.stored_key, alice.server_key, 4096),
        ScramCredential("bob", "SCRAM-SHA-1", b"s", alice.stored_key, alice.server_key, 4096),
        ScramCredential("bob", "SCRAM-SHA-256", b"s", alice.stored_key, alice.server_key, 100),
        ScramCredential("bob", "SCRAM-SHA-512", b"s", alice.stored_key, alice.server_key, 4096),
    ]
    result = security_changes.alter_scram(image.scram_credentials, [("carol", "SCRAM-SHA-256")], bad)
    assert result.records == []
    assert [code for _, code, _ in result.response] == [ErrorCode.RESOURCE_NOT_FOUND] + [ErrorCode.INVALID_REQUEST] * 4
    removed = security_changes.alter_scram(image.scram_credentials, [("alice", "SCRAM-SHA-256")], [])
    assert replay_batch(image, 8, removed.records).scram_credentials == {}


@settings(max_examples=300, deadline=None)
@given(first=st.binary(max_size=300), final=st.binary(max_size=300), session=st.text(max_size=40))
def test_hostile_login_bytes_get_a_typed_refusal(first: bytes, final: bytes, session: str) -> None:
    """A login's bytes come from anyone who can reach the port: whatever they are, the node answers
    a refusal (or a well-formed first step), never an exception, and opens no session."""
    image = image_with(credential("alice", "s3cret"))
    sessions = SaslSessions(frozenset({"SCRAM-SHA-256"}), lambda: image)
    answer = sessions.authenticate(pb.SaslAuthenticateRequest(mechanism="SCRAM-SHA-256", auth_bytes=first))
    assert answer.error_code in (ErrorCode.NONE, ErrorCode.SASL_AUTHENTICATION_FAILED)
    for session_id in {answer.session_id, session} - {""}:  # an empty id would be a new first step
        closing = sessions.authenticate(
            pb.SaslAuthenticateRequest(mechanism="SCRAM-SHA-256", session_id=session_id, auth_bytes=final)
        )
        assert closing.error_code == ErrorCode.SASL_AUTHENTICATION_FAILED and not closing.token
    assert not sessions._sessions
