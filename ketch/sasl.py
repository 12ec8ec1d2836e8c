"""A SCRAM login to one node (RFC 5802 through scramp), as a pure exchange with thin drivers.

``ScramLogin`` makes the two ``SaslAuthenticate`` requests and checks the two answers; the
drivers send them: ``login_async`` for the clients' connections (ketch/aio/connection.py) and
``login_blocking`` for the commands that call a node directly. A login ends with a session token
that every later call to that node carries as ``authorization: Bearer TOKEN`` (``bearer``).

Rules:
- Any refusal (a wrong password, an unknown user, a mechanism the node does not take, a server
  proof that does not verify: the node is not who it says) is ``AuthenticationFailedError``
  (SASL_AUTHENTICATION_FAILED, or UNSUPPORTED_SASL_MECHANISM), not retriable, never a hang.
- The password stays in this process: only SCRAM's proofs are sent.
"""

from __future__ import annotations

from typing import Any

import scramp

from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import AuthenticationFailedError, error_for
from ketch.tls import SecurityConfig

__all__ = ["ScramLogin", "bearer", "login_async", "login_blocking"]


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


class ScramLogin:
    def __init__(self, security: SecurityConfig, where: str) -> None:
        assert security.sasl and security.sasl_mechanism
        self.mechanism = security.sasl_mechanism
        self.where = where
        self.client = scramp.ScramClient([self.mechanism], security.sasl_plain_username, security.sasl_plain_password)
        self.session_id = ""

    def first(self) -> pb.SaslAuthenticateRequest:
        return pb.SaslAuthenticateRequest(mechanism=self.mechanism, auth_bytes=self.client.get_client_first().encode())

    def final(self, answer: pb.SaslAuthenticateResponse) -> pb.SaslAuthenticateRequest:
        self._check(answer)
        self.session_id = answer.session_id
        try:
            self.client.set_server_first(answer.auth_bytes.decode("utf-8"))
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise self._failed(f"the node's first answer is not SCRAM: {exc}") from None
        return pb.SaslAuthenticateRequest(
            mechanism=self.mechanism,
            session_id=self.session_id,
            auth_bytes=self.client.get_client_final().encode(),
        )

    def token(self, answer: pb.SaslAuthenticateResponse) -> str:
        self._check(answer)
        try:
            self.client.set_server_final(answer.auth_bytes.decode("utf-8"))
        except (scramp.ScramException, UnicodeDecodeError) as exc:
            raise self._failed(f"the node's proof does not verify ({exc}): it does not hold this user's key") from None
        return answer.token

    def _check(self, answer: pb.SaslAuthenticateResponse) -> None:
        if answer.error_code:  # SASL_AUTHENTICATION_FAILED or UNSUPPORTED_SASL_MECHANISM: not retriable
            raise error_for(answer.error_code, f"{self.where}: {answer.error_message}")

    def _failed(self, why: str) -> AuthenticationFailedError:
        return AuthenticationFailedError(f"{self.where}: SCRAM login failed: {why}")


async def login_async(stub: Any, security: SecurityConfig, where: str, timeout: float) -> str:
    login = ScramLogin(security, where)
    answer = await stub.SaslAuthenticate(login.first(), timeout=timeout)
    answer = await stub.SaslAuthenticate(login.final(answer), timeout=timeout)
    return login.token(answer)


def login_blocking(stub: Any, security: SecurityConfig, where: str, timeout: float) -> str:
    login = ScramLogin(security, where)
    answer = stub.SaslAuthenticate(login.first(), timeout=timeout)
    answer = stub.SaslAuthenticate(login.final(answer), timeout=timeout)
    return login.token(answer)
