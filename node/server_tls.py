"""The node's TLS listener credentials, reloaded from disk without a restart.

Settings (node/config.py, Kafka's names): ``security_protocol = "SSL"`` turns TLS on for
the node's one listener and for every channel it opens to other nodes (replica fetching,
Raft, the controller); with named listeners (node/listeners.py) each SSL listener gets its
own ``ServerCertificates`` from the same files, and a channel to another node uses TLS when
the listener it dials (inter-broker or controller) is SSL; ``ssl_certfile`` / ``ssl_keyfile``
are the node's certificate and key, presented as a server and as a client; ``ssl_cafile`` holds the CAs trusted to sign
the other nodes' and the clients' certificates; ``ssl_client_auth`` is ``required``
(mutual TLS: a client without a certificate the CA signed is refused in the handshake)
or ``none``.

Rules:
- gRPC asks ``ServerCertificates.fetch`` before each new handshake. It answers a new
  configuration only when one of the three files changed (size or modification time)
  and the new key matches the new certificate; otherwise the listener keeps what it
  has. A rotation therefore takes effect for the next connection, sessions already
  open keep going, and a half-copied pair (the certificate written, the key not yet)
  is never served: it is picked up on the handshake after the copy completes.
- A file that is missing or unreadable when the node starts is a ``ConfigError``;
  once running, the node keeps its last good pair and logs the problem once per change.
- The node's outgoing channels read the same files when they open (ketch/tls.py).
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ketch.tls import SecurityConfig
from node.config import ConfigError, NodeConfig

log = logging.getLogger("ketch.tls")


def client_security(config: NodeConfig, protocol: str | None = None) -> SecurityConfig:
    """How this node dials other nodes on a listener of ``protocol`` (default: the node's one
    listener's, ``security_protocol``): with TLS, its own certificate (node/listeners.py says
    which listener each kind of call uses)."""
    if (protocol or config.security_protocol) != "SSL":
        return SecurityConfig()
    return SecurityConfig("SSL", config.ssl_cafile or None, config.ssl_certfile, config.ssl_keyfile)


class ServerCertificates:
    def __init__(self, cafile: str, certfile: str, keyfile: str, require_client_auth: bool) -> None:
        self.paths = [Path(p) for p in (certfile, keyfile)] + ([Path(cafile)] if cafile else [])
        self.require_client_auth = require_client_auth
        self._stamp = self._stat()
        if self._stamp is None:
            missing = [str(p) for p in self.paths if not p.is_file()]
            raise ConfigError(f"TLS: cannot read {', '.join(missing)}")
        try:
            self._current = self._load()
        except ValueError as exc:
            raise ConfigError(f"TLS: {exc}") from None
        self._refused: tuple[tuple[int, int], ...] | None = None

    @classmethod
    def from_config(cls, config: NodeConfig, client_auth: str | None = None) -> ServerCertificates:
        """The node's files; ``client_auth`` (a listener's own) over ``ssl_client_auth``."""
        required = (client_auth or config.ssl_client_auth) == "required"
        return cls(config.ssl_cafile, config.ssl_certfile, config.ssl_keyfile, required)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._current, self.fetch, require_client_authentication=self.require_client_auth
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's certificate_configuration_fetcher: a new configuration, or None to keep the current one."""
        stamp = self._stat()
        if stamp is None or stamp == self._stamp or stamp == self._refused:
            return None
        try:
            loaded = self._load()
        except Exception as exc:  # never raise into gRPC's handshake
            self._refused = stamp
            log.warning("TLS: keeping the current certificate, the files on disk do not load: %s", exc)
            return None
        self._stamp, self._current = stamp, loaded
        log.info("TLS: certificate reloaded from %s", self.paths[0])
        return loaded

    def _stat(self) -> tuple[tuple[int, int], ...] | None:
        try:
            return tuple((s.st_mtime_ns, s.st_size) for s in (p.stat() for p in self.paths))
        except OSError:
            return None

    def _load(self) -> grpc.ServerCertificateConfiguration:
        cert_pem, key_pem = self.paths[0].read_bytes(), self.paths[1].read_bytes()
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{self.paths[0]} / {self.paths[1]}: not a PEM certificate and key: {exc}") from None
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if cert.public_key().public_bytes(*fmt) != key.public_key().public_bytes(*fmt):
            raise ValueError(f"{self.paths[1]} is not the key of {self.paths[0]}")
        root = self.paths[2].read_bytes() if len(self.paths) > 2 else None
        return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=root)
