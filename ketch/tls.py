"""Transport security of a connection to a Ketch node: plaintext, TLS or mutual TLS.

The options have Kafka's client names and meanings:

- ``security_protocol``: ``PLAINTEXT`` (the default), ``SSL``, or ``SASL_SSL``: TLS, and a
  username and password checked by SCRAM (``sasl_mechanism`` SCRAM-SHA-256 or SCRAM-SHA-512,
  ``sasl_plain_username``, ``sasl_plain_password``; kafka-python's names). Kafka's
  ``SASL_PLAINTEXT`` is refused: a password travels over TLS only.
- ``ssl_cafile``: PEM file of the certificate authorities trusted to sign the node's
  certificate. Without it an ``SSL`` client trusts gRPC's built-in roots (a public CA).
- ``ssl_certfile`` / ``ssl_keyfile``: the client's own certificate and private key, for a
  node that requires client certificates (mutual TLS). Both or neither.

Every ``ketch`` command reads them from ``KETCH_SECURITY_PROTOCOL``, ``KETCH_SSL_CAFILE``,
``KETCH_SSL_CERTFILE``, ``KETCH_SSL_KEYFILE``, ``KETCH_SASL_MECHANISM``, ``KETCH_SASL_USERNAME``
and ``KETCH_SASL_PASSWORD`` (``SecurityConfig.from_env``); ``ketch cluster up --tls`` prints the
lines to export for its admin certificate.

Rules:
- The files are read when a channel is opened, never cached: a client or a node that
  opens a new channel after a certificate rotation presents the new certificate, and a
  channel already open keeps the session it authenticated. A file that cannot be read is
  a ``ValueError`` naming it, raised before any connection is tried.
- The node's certificate is checked against the host name dialled (gRPC's own check):
  a node's certificate names the hosts and IP addresses it is reached by.
- ``open_aio_channel`` and ``open_channel`` are the only places a channel to a node is
  made, by clients, commands and nodes alike.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

__all__ = ["PROTOCOLS", "SecurityConfig", "open_aio_channel", "open_channel"]

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
ENV = {
    "security_protocol": "KETCH_SECURITY_PROTOCOL",
    "ssl_cafile": "KETCH_SSL_CAFILE",
    "ssl_certfile": "KETCH_SSL_CERTFILE",
    "ssl_keyfile": "KETCH_SSL_KEYFILE",
    "sasl_mechanism": "KETCH_SASL_MECHANISM",
    "sasl_plain_username": "KETCH_SASL_USERNAME",
    "sasl_plain_password": "KETCH_SASL_PASSWORD",
}


@dataclass(frozen=True)
class SecurityConfig:
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: str | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        protocol = self.security_protocol.upper()
        object.__setattr__(self, "security_protocol", protocol)
        if protocol not in PROTOCOLS:
            raise ValueError(
                f"security_protocol must be one of {', '.join(PROTOCOLS)}, not {self.security_protocol!r}"
                + (" (SASL_PLAINTEXT is refused: passwords go over TLS only)" if protocol.startswith("SASL") else "")
            )
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ValueError("ssl_certfile and ssl_keyfile go together: give both or neither")
        if protocol == "PLAINTEXT" and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError("ssl_cafile, ssl_certfile and ssl_keyfile need security_protocol='SSL'")
        sasl = (self.sasl_mechanism, self.sasl_plain_username, self.sasl_plain_password)
        if protocol == "SASL_SSL":
            if not all(sasl):
                raise ValueError("SASL_SSL needs sasl_mechanism, sasl_plain_username and sasl_plain_password")
            mechanism = (self.sasl_mechanism or "").upper()
            object.__setattr__(self, "sasl_mechanism", mechanism)
            if mechanism not in SASL_MECHANISMS:
                raise ValueError(f"sasl_mechanism must be {' or '.join(SASL_MECHANISMS)}, not {self.sasl_mechanism!r}")
        elif any(sasl):
            raise ValueError("sasl_mechanism, sasl_plain_username and sasl_plain_password need SASL_SSL")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SecurityConfig:
        env = os.environ if env is None else env
        values = {name: env.get(key) or None for name, key in ENV.items()}
        return cls(security_protocol=values.pop("security_protocol") or "PLAINTEXT", **values)

    @property
    def secure(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol == "SASL_SSL"

    def client_kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of a Producer, Consumer or Admin."""
        return {
            "security_protocol": self.security_protocol,
            "ssl_cafile": self.ssl_cafile,
            "ssl_certfile": self.ssl_certfile,
            "ssl_keyfile": self.ssl_keyfile,
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": self.sasl_plain_password,
        }

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """gRPC's TLS credentials from the files as they are now."""
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ssl_cafile, "ssl_cafile"),
            private_key=_read(self.ssl_keyfile, "ssl_keyfile"),
            certificate_chain=_read(self.ssl_certfile, "ssl_certfile"),
        )


PLAINTEXT = SecurityConfig()


def _read(path: str | None, name: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror or exc}") from None


def open_aio_channel(
    target: str, security: SecurityConfig = PLAINTEXT, options: Sequence[tuple[str, int | str]] = ()
) -> grpc.aio.Channel:
    if security.secure:
        return grpc.aio.secure_channel(target, security.channel_credentials(), options=list(options))
    return grpc.aio.insecure_channel(target, options=list(options))


def open_channel(
    target: str, security: SecurityConfig = PLAINTEXT, options: Sequence[tuple[str, int | str]] = ()
) -> grpc.Channel:
    if security.secure:
        return grpc.secure_channel(target, security.channel_credentials(), options=list(options))
    return grpc.insecure_channel(target, options=list(options))
