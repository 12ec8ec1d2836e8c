"""The Kafka listener's settings (node/listeners.py, node/config.py, node/main.py) and Metadata's
controller id (node/kafka/metadata.py). Pure: no process."""

from __future__ import annotations

from typing import Any

import pytest

from node.config import ConfigError, NodeConfig, load, validate
from node.kafka.metadata import client_controller_id
from node.listeners import KAFKA, Listener, resolve
from node.main import kafka_server

SSL_FILES: dict[str, Any] = {"ssl_cafile": "ca.pem", "ssl_certfile": "n.pem", "ssl_keyfile": "n-key.pem"}


def test_kafka_listen_adds_the_kafka_listener_beside_the_grpc_ones() -> None:
    listeners = resolve(NodeConfig(listen="127.0.0.1:9092", kafka_listen="0.0.0.0:29092"))
    assert listeners.kafka == Listener(KAFKA, "0.0.0.0", 29092, "127.0.0.1", 0, "PLAINTEXT")
    assert listeners.kafka.advertised(29092) == ("127.0.0.1", 29092)
    assert [listener.name for listener in listeners.all] == ["PLAINTEXT"]  # not a gRPC server
    assert [listener.name for listener in listeners.registered] == ["PLAINTEXT", KAFKA]  # but registered
    advertised = resolve(NodeConfig(kafka_listen="0.0.0.0:0", kafka_advertised_listener="kafka-1.example.com:9093"))
    assert advertised.kafka is not None and advertised.kafka.advertised(40000) == ("kafka-1.example.com", 9093)
    assert resolve(NodeConfig()).kafka is None


def test_kafka_listen_comes_from_the_flag_the_environment_or_the_file() -> None:
    assert load(env={"KETCH_KAFKA_LISTEN": "127.0.0.1:29092"}).kafka_listen == "127.0.0.1:29092"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"kafka_listen": "", "kafka_advertised_listener": "x:1"}, "kafka_advertised_listener needs kafka_listen"),
        ({"listen": "127.0.0.1:9092", "kafka_listen": "127.0.0.1:9092"}, "both bind port 9092"),
        (
            {"listeners": "KAFKA://0.0.0.0:9092", "listener_security_protocol_map": "KAFKA:PLAINTEXT"},
            "name KAFKA is kafka_listen",
        ),
        ({"kafka_security_protocol": "SASL_SSL"}, "kafka_security_protocol must be PLAINTEXT or SSL"),
        ({"kafka_listen": "nope"}, "expected HOST:PORT"),
        ({"kafka_security_protocol": "SSL"}, "needs ssl_certfile"),
    ],
)
def test_kafka_settings_that_cannot_work_are_config_errors(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(NodeConfig(**{"kafka_listen": "127.0.0.1:29092", **settings}))


def test_listener_ssl_client_auth_may_name_the_kafka_listener() -> None:
    config = NodeConfig(
        kafka_listen="127.0.0.1:0",
        kafka_security_protocol="SSL",
        listener_ssl_client_auth="KAFKA:required",
        **SSL_FILES,
    )
    listeners = resolve(config)
    assert listeners.kafka is not None
    assert (listeners.kafka.security_protocol, listeners.kafka.client_auth) == ("SSL", "required")
    assert listeners.first.client_auth == "none"
    validate(config)  # an SSL Kafka listener is an SSL listener: the ssl files are used
    validate(NodeConfig(kafka_listen="127.0.0.1:0", kafka_security_protocol="SSL", **SSL_FILES))
    # SCRAM logins need an SSL listener; the Kafka one counts.
    validate(
        NodeConfig(
            kafka_listen="127.0.0.1:0",
            kafka_security_protocol="SSL",
            sasl_enabled_mechanisms="SCRAM-SHA-256",
            **SSL_FILES,
        )
    )
    with pytest.raises(ConfigError, match="KAFKA is not among the listeners"):
        resolve(NodeConfig(listener_ssl_client_auth="KAFKA:required"))


def test_only_a_broker_serves_the_kafka_listener() -> None:
    config = NodeConfig(roles="controller", kafka_listen="127.0.0.1:0")
    with pytest.raises(ConfigError, match="needs the broker role"):
        kafka_server(config, resolve(config))
    assert kafka_server(NodeConfig(), resolve(NodeConfig())) is None


def test_metadata_names_a_broker_as_the_controller() -> None:
    assert client_controller_id(2, [1, 2, 3]) == 2  # combined mode: the active controller is a broker
    assert client_controller_id(1001, [1, 2, 3]) == 1  # a dedicated controller: clients cannot reach it
    assert client_controller_id(-1, [3, 2]) == 2
    assert client_controller_id(1001, []) == -1


def test_a_kafka_port_in_use_is_a_config_error() -> None:
    import asyncio
    import socket

    from node.kafka.server import kafka_server as build

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = NodeConfig(kafka_listen=f"127.0.0.1:{taken.getsockname()[1]}")
        listener = resolve(config).kafka
        assert listener is not None
        with pytest.raises(ConfigError, match=r"cannot listen on 127\.0\.0\.1:\d+ \(listener KAFKA, kafka_listen\)"):
            asyncio.run(build(config, listener).bind())
