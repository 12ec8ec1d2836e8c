"""The pieces of TLS: client options, the local CA, the node's reloading credentials, config checks."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from ketch.tls import SecurityConfig
from node import certificates, healthcheck
from node.config import ConfigError, NodeConfig, validate
from node.server_tls import ServerCertificates


def test_security_options_are_checked_with_errors_that_name_the_fix(tmp_path: Path) -> None:
    assert not SecurityConfig().secure
    assert SecurityConfig("ssl").security_protocol == "SSL"
    with pytest.raises(ValueError, match="SASL_PLAINTEXT is refused: passwords go over TLS only"):
        SecurityConfig("SASL_PLAINTEXT")
    with pytest.raises(ValueError, match="SASL_SSL needs sasl_mechanism, sasl_plain_username and sasl_plain_password"):
        SecurityConfig("SASL_SSL", sasl_mechanism="SCRAM-SHA-256")
    with pytest.raises(ValueError, match="sasl_mechanism must be SCRAM-SHA-256 or SCRAM-SHA-512"):
        SecurityConfig("SASL_SSL", sasl_mechanism="PLAIN", sasl_plain_username="a", sasl_plain_password="b")
    assert SecurityConfig("sasl_ssl", None, None, None, "scram-sha-512", "a", "b").sasl_mechanism == "SCRAM-SHA-512"
    assert "b" not in repr(SecurityConfig("SASL_SSL", None, None, None, "SCRAM-SHA-256", "a", "b"))
    with pytest.raises(ValueError, match="give both or neither"):
        SecurityConfig("SSL", ssl_certfile="a.pem")
    with pytest.raises(ValueError, match="need security_protocol='SSL'"):
        SecurityConfig("PLAINTEXT", ssl_cafile="ca.pem")
    with pytest.raises(ValueError, match=r"ssl_cafile: cannot read .*missing\.pem"):
        SecurityConfig("SSL", ssl_cafile=str(tmp_path / "missing.pem")).channel_credentials()
    env = {"KETCH_SECURITY_PROTOCOL": "SSL", "KETCH_SSL_CAFILE": "ca.pem", "KETCH_SSL_CERTFILE": ""}
    assert SecurityConfig.from_env(env) == SecurityConfig("SSL", "ca.pem")
    assert SecurityConfig.from_env({}) == SecurityConfig()


def test_the_local_ca_issues_certificates_for_a_principal_and_its_hosts(tmp_path: Path) -> None:
    cert_path, key_path = certificates.issue(tmp_path, "node-1", ["localhost", "127.0.0.1"])
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == "CN=node-1"
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / "ca-key.pem").st_mode) == 0o600
    # Issuing again rotates the certificate; the CA stays.
    ca_before = (tmp_path / "ca.pem").read_bytes()
    again, _ = certificates.issue(tmp_path, "node-1")
    assert x509.load_pem_x509_certificate(again.read_bytes()).serial_number != cert.serial_number
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Ketch local CA"
    for bad in ("", "ca", "../x", ".hidden"):
        with pytest.raises(ValueError, match="plain file name"):
            certificates.issue(tmp_path, bad)


def test_the_listener_reloads_a_complete_pair_and_never_a_half_copied_one(tmp_path: Path) -> None:
    cert, key = certificates.issue(tmp_path, "node-1", ["127.0.0.1"])
    served = ServerCertificates(str(tmp_path / "ca.pem"), str(cert), str(key), True)
    assert served.fetch() is None  # nothing changed
    # A rotation copied half way: the new certificate, the old key. Kept out.
    old_key = key.read_bytes()
    certificates.issue(tmp_path, "node-1", ["127.0.0.1"])
    new_key = key.read_bytes()
    key.write_bytes(old_key)
    os.utime(key, ns=(1, 1))
    assert served.fetch() is None
    assert served.fetch() is None  # refused once, not retried until the files change again
    key.write_bytes(new_key)
    assert served.fetch() is not None
    assert served.fetch() is None
    key.write_bytes(b"not a key")
    assert served.fetch() is None


def test_a_listener_whose_files_are_missing_or_wrong_is_a_config_error(tmp_path: Path) -> None:
    _, key = certificates.issue(tmp_path, "node-1")
    with pytest.raises(ConfigError, match=r"cannot read .*nope\.pem"):
        ServerCertificates(str(tmp_path / "ca.pem"), str(tmp_path / "nope.pem"), str(key), True)
    other_cert, _ = certificates.issue(tmp_path, "node-2")
    with pytest.raises(ConfigError, match="is not the key of"):
        ServerCertificates(str(tmp_path / "ca.pem"), str(other_cert), str(key), True)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"security_protocol": "TLS"}, "PLAINTEXT or SSL"),
        ({"security_protocol": "SSL"}, "needs ssl_certfile and ssl_keyfile"),
        ({"ssl_client_auth": "required"}, "need security_protocol SSL"),
        ({"security_protocol": "SSL", "ssl_certfile": "c", "ssl_keyfile": "k", "ssl_client_auth": "x"}, "none or"),
        ({"sasl_enabled_mechanisms": "SCRAM-SHA-256"}, "needs an SSL listener"),
        ({"sasl_enabled_mechanisms": "PLAIN"}, "not SCRAM-SHA-256 or SCRAM-SHA-512"),
    ],
)
def test_node_tls_settings_are_validated(settings: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        validate(NodeConfig(**settings))  # type: ignore[arg-type]


def test_the_container_health_probe_speaks_tls_with_the_nodes_own_settings(tmp_path: Path) -> None:
    cert, key = certificates.issue(tmp_path, "node-1", ["ketch-1.example"])
    env = {
        "KETCH_SECURITY_PROTOCOL": "SSL",
        "KETCH_SSL_CAFILE": str(tmp_path / "ca.pem"),
        "KETCH_SSL_CERTFILE": str(cert),
        "KETCH_SSL_KEYFILE": str(key),
        "KETCH_ADVERTISED_LISTENER": "ketch-1.example:9092",
    }

    async def probe() -> tuple[tuple[int, str], tuple[int, str]]:
        server = grpc.aio.server()
        credentials = ServerCertificates(str(tmp_path / "ca.pem"), str(cert), str(key), True).credentials()
        port = server.add_secure_port("127.0.0.1:0", credentials)
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        await health.set("", health_pb2.HealthCheckResponse.SERVING)
        await server.start()
        try:
            security, options = healthcheck.probe_security(env)
            with_tls = await asyncio.to_thread(healthcheck.check, f"127.0.0.1:{port}", "", 3.0, security, options)
            plaintext = await asyncio.to_thread(healthcheck.check, f"127.0.0.1:{port}", "", 3.0)
            return with_tls, plaintext
        finally:
            await server.stop(0)

    with_tls, plaintext = asyncio.run(probe())
    assert with_tls[0] == healthcheck.SERVING, with_tls
    assert plaintext[0] == healthcheck.UNREACHABLE
