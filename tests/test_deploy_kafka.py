"""The Kafka listener in the Helm chart: ``ports.kafka`` (compose: tests/test_deploy_compose.py).

Helm (rendered with Helm's own library, tests/test_deploy_helm.py's helpers): brokers bind
KETCH_KAFKA_LISTEN 0.0.0.0:29092, export KETCH_KAFKA_ADVERTISED_LISTENER as their pod DNS name,
name the container port ``kafka``, and both the headless and the client Service carry it; with
``ports.kafka: 0``, with ``tls.enabled`` (the Kafka listener is plaintext) and on dedicated
controllers there is none. Compose: every node binds 0.0.0.0:29092 and advertises
localhost:<its published port> (29092-29094).
"""

from __future__ import annotations

from typing import Any

from tests.test_deploy_helm import SUFFIX, container, env, one, render


def kafka_ports(service: dict[str, Any]) -> list[tuple[str, int]]:
    return [(p["name"], p["port"]) for p in service["spec"]["ports"] if p["name"] == "kafka"]


def test_helm_brokers_serve_kafka_on_their_pod_dns_names() -> None:
    docs = render({})
    sts = one(docs, "StatefulSet", "rel-ketch")
    c = container(sts)
    assert env(sts)["KETCH_KAFKA_LISTEN"] == "0.0.0.0:29092"
    assert f'export KETCH_KAFKA_ADVERTISED_LISTENER="${{POD_NAME}}.{SUFFIX}:29092"' in c["args"][0]
    assert {"name": "kafka", "containerPort": 29092} in c["ports"]
    for name in ("rel-ketch-headless", "rel-ketch"):
        assert kafka_ports(one(docs, "Service", name)) == [("kafka", 29092)], name


def test_helm_without_kafka_when_off_with_tls_and_on_dedicated_controllers() -> None:
    tls = {"enabled": True, "secretName": "my-ketch-certs"}
    for values in ({"ports": {"client": 9092, "metrics": 9644, "kafka": 0}}, {"tls": tls}):
        docs = render(values)
        sts = one(docs, "StatefulSet", "rel-ketch")
        assert "KETCH_KAFKA_LISTEN" not in env(sts) and "KAFKA" not in container(sts)["args"][0]
        assert not kafka_ports(one(docs, "Service", "rel-ketch")), values
    docs = render({"controllers": {"dedicated": True}})
    assert "KETCH_KAFKA_LISTEN" in env(one(docs, "StatefulSet", "rel-ketch"))
    assert "KETCH_KAFKA_LISTEN" not in env(one(docs, "StatefulSet", "rel-ketch-controller"))
