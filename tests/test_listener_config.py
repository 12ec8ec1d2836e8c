"""Listener settings (node/listeners.py), broker endpoints in the metadata records, image and
snapshots, and the controller's check of a registration's endpoints. Pure: no process."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.metadata import MetadataImage, decode_snapshot, encode_snapshot, replay_batch
from coordinator.metadata import records as rec
from coordinator.metadata.records import Endpoint
from ketch.errors import ErrorCode, KetchError
from ketch.tls import SecurityConfig
from node.config import ConfigError, NodeConfig, validate
from node.healthcheck import default_target, probe_security
from node.listeners import Listener, resolve
from tests.test_metadata_support import Cluster, check_snapshot

SSL_FILES: dict[str, Any] = {"ssl_cafile": "ca.pem", "ssl_certfile": "n.pem", "ssl_keyfile": "n-key.pem"}


def test_without_listeners_one_listener_is_named_after_security_protocol() -> None:
    plain = resolve(NodeConfig(listen="0.0.0.0:9092"))
    assert plain.all == (Listener("PLAINTEXT", "0.0.0.0", 9092, "127.0.0.1", 0, "PLAINTEXT"),)
    assert (plain.inter_broker, plain.controller) == ("PLAINTEXT", ("PLAINTEXT",))
    ssl = resolve(NodeConfig(listen="127.0.0.1:0", advertised_listener="ketch-1:9092", security_protocol="SSL"))
    assert ssl.all == (Listener("SSL", "127.0.0.1", 0, "ketch-1", 9092, "SSL"),)
    assert ssl.first.advertised(40000) == ("ketch-1", 9092)
    assert plain.first.advertised(9092) == ("127.0.0.1", 9092)  # a wildcard is advertised as loopback


def test_named_listeners_with_advertised_addresses_protocols_and_roles() -> None:
    config = NodeConfig(
        listeners="INTERNAL://0.0.0.0:9092,external://0.0.0.0:19092,SSL://[::1]:0",
        advertised_listeners="INTERNAL://ketch-1:9092,EXTERNAL://localhost:19092",
        listener_security_protocol_map="INTERNAL:PLAINTEXT,EXTERNAL:SSL",
        inter_broker_listener_name="INTERNAL",
        controller_listener_names="SSL",
        **SSL_FILES,
    )
    validate(config)
    listeners = resolve(config)
    assert listeners.names == ["INTERNAL", "EXTERNAL", "SSL"]  # names are upper-cased, like Kafka's
    assert listeners["INTERNAL"].advertised(9092) == ("ketch-1", 9092)
    assert listeners["EXTERNAL"].security_protocol == "SSL"
    assert listeners["SSL"].security_protocol == "SSL" and listeners["SSL"].bind == "[::1]:0"
    assert listeners["SSL"].advertised(41000) == ("::1", 41000)
    assert (listeners.inter_broker_protocol, listeners.controller_protocol) == ("PLAINTEXT", "SSL")
    defaults = resolve(
        NodeConfig(
            listeners="A://127.0.0.1:1,B://127.0.0.1:2", listener_security_protocol_map="A:PLAINTEXT,B:PLAINTEXT"
        )
    )
    assert (defaults.inter_broker, defaults.controller) == ("A", ("A",))  # both default to the first


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"listeners": "INTERNAL://h:1"}, "listener INTERNAL has no security protocol"),
        ({"listeners": "PLAINTEXT://h:1", "listener_security_protocol_map": "OTHER:SSL"}, "names OTHER, which"),
        ({"listeners": "PLAINTEXT://h:1", "advertised_listeners": "SSL://h:2"}, "advertised_listeners names SSL"),
        ({"listeners": "PLAINTEXT://h:1,PLAINTEXT://h:2"}, "PLAINTEXT appears twice"),
        ({"listeners": "PLAINTEXT://h:1,SSL://h:1", **SSL_FILES}, "both bind port 1"),
        ({"listeners": "PLAINTEXT://h"}, "expected NAME://HOST:PORT"),
        ({"listeners": "h:1"}, "expected NAME://HOST:PORT"),
        ({"listeners": "PLAINTEXT://h:70000"}, "not 0..65535"),
        ({"listeners": "A://h:1", "listener_security_protocol_map": "A:SASL_SSL"}, "PLAINTEXT or SSL"),
        ({"listeners": "A://h:1", "listener_security_protocol_map": "A"}, "expected NAME:PROTOCOL"),
        ({"listeners": "PLAINTEXT://h:1", "inter_broker_listener_name": "X"}, "inter_broker_listener_name X"),
        ({"listeners": "PLAINTEXT://h:1", "controller_listener_names": "PLAINTEXT,Y"}, "controller_listener_names: Y"),
        ({"listeners": "SSL://h:1"}, "the SSL listener SSL needs ssl_certfile"),
        ({"listeners": "PLAINTEXT://h:1", "advertised_listener": "h:1"}, "use advertised_listeners"),
        ({"advertised_listeners": "PLAINTEXT://h:1"}, "advertised_listeners needs listeners"),
        ({"ssl_certfile": "c", "ssl_keyfile": "k"}, "need security_protocol SSL"),
    ],
)
def test_listener_settings_that_cannot_work_are_config_errors(settings: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        validate(NodeConfig(**settings))  # type: ignore[arg-type]


def test_ssl_files_are_allowed_when_any_listener_is_ssl() -> None:
    validate(NodeConfig(listeners="PLAINTEXT://h:1,SSL://h:2", ssl_client_auth="required", **SSL_FILES))


ENDPOINTS = (Endpoint("INTERNAL", "ketch-1", 9092, "PLAINTEXT"), Endpoint("EXTERNAL", "localhost", 19092, "SSL"))


def test_the_image_answers_a_brokers_address_per_listener() -> None:
    image = replay_batch(
        MetadataImage(),
        3,
        [rec.register_broker(1, "i1", "ketch-1", 9092, endpoints=ENDPOINTS), rec.register_broker(2, "i2", "old", 9)],
    )
    new, old = image.brokers[1], image.brokers[2]
    assert (new.host, new.port, new.endpoints) == ("ketch-1", 9092, ENDPOINTS)
    assert new.endpoint("EXTERNAL") == ("localhost", 19092)
    assert new.endpoint("INTERNAL") == ("ketch-1", 9092)
    assert new.endpoint("OTHER") is None
    # A record from before listeners: its broker had one listener, served under any name.
    assert old.endpoints == () and old.endpoint("EXTERNAL") == old.endpoint("PLAINTEXT") == ("old", 9)
    check_snapshot(image)
    assert decode_snapshot(encode_snapshot(image)).brokers[1].endpoints == ENDPOINTS


def test_the_controller_records_endpoints_and_refuses_bad_ones() -> None:
    c = Cluster()
    c.run(c.ctl.register_broker(1, "i1", "ketch-1", 9092, now_ms=0, endpoints=ENDPOINTS))
    assert c.image.brokers[1].endpoints == ENDPOINTS
    for bad in (
        (ENDPOINTS[0], ENDPOINTS[0]._replace(port=1)),
        (Endpoint("", "h", 1, "PLAINTEXT"),),
        (Endpoint("A", "h", 0, "PLAINTEXT"),),
        (Endpoint("A", "", 1, "PLAINTEXT"),),
    ):
        with pytest.raises(KetchError) as refused:
            c.ctl.register_broker(2, "i2", "h", 1, now_ms=0, endpoints=bad)
        assert refused.value.code == ErrorCode.INVALID_REQUEST


def test_the_health_probe_dials_the_first_named_listener_with_its_protocol() -> None:
    env = {
        "KETCH_LISTEN": "127.0.0.1:1",
        "KETCH_LISTENERS": "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092",
        "KETCH_ADVERTISED_LISTENERS": "INTERNAL://ketch-1:9092",
        "KETCH_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:SSL,EXTERNAL:PLAINTEXT",
        **{"KETCH_" + k.upper(): v for k, v in SSL_FILES.items()},
    }
    assert default_target(env) == "127.0.0.1:9092"
    security, options = probe_security(env)
    assert security.secure and options == [("grpc.ssl_target_name_override", "ketch-1")]
    plain = {**env, "KETCH_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:PLAINTEXT,EXTERNAL:SSL"}
    assert probe_security(plain) == (SecurityConfig(), [])
