"""deploy/helm/ketch: ``helm lint --strict`` and ``helm template``, through Helm's own Go library.

helm-python-sdk (the ``helm_python`` module) embeds Helm v4's SDK as a shared
library, so lint, schema validation and rendering are Helm's, with no binary
and no cluster. Rules checked on the rendered manifests (parsed with PyYAML):

- lint --strict reports no warning or error for the defaults, 5 nodes and
  dedicated controllers (with rack-from-zone and the ServiceMonitor on), and
  does report values that break values.schema.json (the linter can fail);
- the StatefulSet has the asked-for replicas, a Parallel pod policy, the
  headless Service, and a voter list naming every voter by its pod DNS name
  ``<release>-ketch-<i>.<headless>.<ns>.svc.cluster.local:9092`` with id i+1;
  the node id and advertised address come from the pod name in the command;
- gRPC readiness, liveness and startup probes on the client port; a PVC
  template mounted at the data dir; a PDB with maxUnavailable 1 per StatefulSet;
  pod anti-affinity and a zone topology spread; a termination grace above
  shutdown_grace_s + 5 (and a render that refuses one that is not);
- dedicated controllers: a second StatefulSet with roles=controller holding the
  voters (ids offset + i + 1), brokers with roles=broker, the client Service
  selecting brokers only;
- every rendered manifest (but the ServiceMonitor CRD) validates strictly against
  Kubernetes' own JSON schemas for 1.27 (the chart's floor) and 1.37
  (kubernetes-validate), and a broken one does not;
- the rack init container, the ClusterRole that lets it read nodes (get, nothing
  else) and the KETCH_RACK export; its rendered command, run against a fake
  Kubernetes API over TLS, writes the node's zone label, an empty rack for a node
  without one, and fails on a refused token or an unknown node;
- tls.enabled: every node of both StatefulSets gets KETCH_SECURITY_PROTOCOL=SSL,
  KETCH_SSL_CLIENT_AUTH and KETCH_SSL_* paths into the Secret, mounted read-only as
  a directory (no subPath, which never updates), and exec probes of
  node/healthcheck.py with the grpc probes' timings; the cert-manager Certificate
  (only with tls.certManager.enabled) validates against cert-manager's own CRD
  schema (tests/schemas), names every pod of both StatefulSets through its
  wildcard, the client Service and the advertised hosts, and is usable as server
  and client; rendering refuses a Certificate without an issuer;
- the rendered exec probe, run against a real node serving mutual TLS from a
  directory laid out as the kubelet writes a Secret (files -> ..data -> a
  timestamped directory): it passes; after the kubelet-style atomic swap to a new
  certificate the node serves the new one on the next handshake without a restart,
  and after a swap to a certificate not naming the pod the probe fails (2);
- externalAccess.enabled: one Service per broker pod selecting it by pod name
  (LoadBalancer on externalAccess.port, or NodePort on nodePorts[i]), the named
  listener env strings exactly (the per-pod KETCH_ADVERTISED_LISTENERS from the
  rendered command run for a given pod name), no external listener on dedicated
  controllers, the single-listener env unchanged when off, and a render that fails
  with a clear message when advertisedHosts (or nodePorts) has fewer entries than pods.
"""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema  # type: ignore[import-untyped]  # pinned through kubernetes-validate; ships no type information
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml
from cryptography import x509

from ketch.tls import SecurityConfig
from node import certificates
from node.process import NodeProcess, free_ports

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "ketch"
NS = "streaming"
SUFFIX = f"rel-ketch-headless.{NS}.svc.cluster.local"

Manifest = dict[str, Any]


def render(values: dict[str, Any] | None = None) -> list[Manifest]:
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name="rel", namespace=NS, is_install=True)
    docs = [doc for path, text in files.items() if path.endswith(".yaml") for doc in yaml.safe_load_all(text)]
    return [doc for doc in docs if doc]


def notes(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name="rel", namespace=NS)["ketch/templates/NOTES.txt"]


def one(docs: list[Manifest], kind: str, name: str) -> Manifest:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return found[0]


def container(sts: Manifest) -> Manifest:
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    result: Manifest = c
    return result


def env(sts: Manifest) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container(sts)["env"]}


def serious(report: dict[str, Any]) -> list[str]:
    """Lint messages of severity warning (2) or error (3); --strict fails on both."""
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]


VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "five": {"replicas": 5},
    "dedicated": {
        "controllers": {"dedicated": True},
        "rack": {"fromNodeZone": True},
        "serviceMonitor": {"enabled": True},
        "podAntiAffinity": "hard",
    },
    "tls-cert-manager": {
        "controllers": {"dedicated": True},
        "tls": {"enabled": True, "certManager": {"enabled": True, "issuerRef": {"name": "ketch-ca"}}},
        "externalAccess": {"enabled": True, "advertisedHosts": ["k0.example.com", "k1.example.com", "203.0.113.7"]},
    },
    "tls-own-secret": {
        "tls": {"enabled": True, "secretName": "my-ketch-certs", "clientAuth": "none"},
        "externalAccess": {
            "enabled": True,
            "advertisedHosts": ["192.0.2.10", "192.0.2.11", "192.0.2.12"],
            "service": {"type": "NodePort", "nodePorts": [31090, 31091, 31092]},
        },
    },
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_strict_passes(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NS)
    assert report["total_charts_linted"] == 1
    assert serious(report) == []


# CRDs have no schema in kubernetes-validate; everything else the chart renders must validate.
# The Certificate is checked against cert-manager's own schema (test_cert_manager_certificate).
CRD_KINDS = {"ServiceMonitor", "Certificate"}


@pytest.mark.parametrize("kube", ["1.27.0", "1.37.0"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_rendered_manifests_match_the_kubernetes_schemas(variant: str, kube: str) -> None:
    """Strict: an unknown or misplaced field fails, as `kubectl apply --validate=strict` would."""
    docs = render(VARIANTS[variant])
    checked = [d for d in docs if d["kind"] not in CRD_KINDS]
    assert len(checked) >= 5
    for doc in checked:
        kubernetes_validate.validate(doc, kube, strict=True)


def test_schema_validation_can_fail() -> None:
    sts = one(render(), "StatefulSet", "rel-ketch")
    container(sts)["readinessProbe"]["grpc"]["port"] = "client"  # a named port: not allowed for grpc probes
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(sts, "1.37.0", strict=True)


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": 0}, "/replicas"),
        ({"controllers": {"replicas": 4}}, "/controllers/replicas"),
        ({"config": {"node_id": 7}}, "node_id"),
        ({"podAntiAffinity": "sometimes"}, "/podAntiAffinity"),
        ({"replica": 3}, "replica"),
        ({"config": {"ssl_certfile": "/x.pem"}}, "ssl_certfile"),  # the chart's, from tls.*
        ({"config": {"listeners": "A://:1"}}, "listeners"),  # the chart's, from externalAccess.*
        ({"tls": {"clientAuth": "requested"}}, "/tls/clientAuth"),
        ({"externalAccess": {"service": {"type": "ClusterIP"}}}, "/externalAccess/service/type"),
        ({"externalAccess": {"service": {"nodePorts": [9092]}}}, "/externalAccess/service/nodePorts/0"),
        # A host goes into the container's shell command: host-name and IP characters only.
        ({"externalAccess": {"advertisedHosts": ["a.example.com", "$(reboot)"]}}, "/externalAccess/advertisedHosts/1"),
    ],
)
def test_lint_reports_values_the_schema_refuses(values: dict[str, Any], where: str) -> None:
    problems = serious(helm.lint(CHART, values, strict=True, namespace=NS))
    assert problems and any(where in p for p in problems), problems


def voters(value: str) -> dict[int, str]:
    return {int(i): address for i, address in (v.split("@") for v in value.split(","))}


@pytest.mark.parametrize("replicas", [3, 5])
def test_combined_statefulset(replicas: int) -> None:
    docs = render({"replicas": replicas})
    sts = one(docs, "StatefulSet", "rel-ketch")
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    c = container(sts)
    e = env(sts)
    assert spec["replicas"] == replicas
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["serviceName"] == "rel-ketch-headless"
    assert e["KETCH_ROLES"] == "broker,controller"
    assert voters(e["KETCH_CONTROLLER_QUORUM_VOTERS"]) == {
        i + 1: f"rel-ketch-{i}.{SUFFIX}:9092" for i in range(replicas)
    }
    assert e["KETCH_LISTEN"] == "0.0.0.0:9092" and e["KETCH_DATA_DIR"] == "/var/lib/ketch"
    assert e["KETCH_METRICS_HOST"] == "0.0.0.0"
    assert re.fullmatch(r"[0-9a-f]{32}", e["KETCH_CLUSTER_ID"])
    assert not any(k in e for k in ("KETCH_NODE_ID", "KETCH_ADVERTISED_LISTENER")), "per-pod: set in the command"
    assert c["env"][0] == {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["grpc"] == {"port": 9092}, probe
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert {"name": claim["metadata"]["name"], "mountPath": "/var/lib/ketch"} in c["volumeMounts"]
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["terminationGracePeriodSeconds"] > float(e["KETCH_SHUTDOWN_GRACE_S"]) + 5
    selector = spec["selector"]["matchLabels"]
    assert spec["template"]["metadata"]["labels"] == selector
    (term,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term["podAffinityTerm"] == {
        "topologyKey": "kubernetes.io/hostname",
        "labelSelector": {"matchLabels": selector},
    }
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["labelSelector"]["matchLabels"] == selector
    assert "initContainers" not in pod and pod["automountServiceAccountToken"] is False

    headless = one(docs, "Service", "rel-ketch-headless")
    assert headless["spec"]["clusterIP"] == "None" and headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= selector.items()
    client = one(docs, "Service", "rel-ketch")
    assert client["spec"]["selector"] == selector
    pdb = one(docs, "PodDisruptionBudget", "rel-ketch-broker")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    assert [d for d in docs if d["kind"] == "StatefulSet"] == [sts]
    assert not [d for d in docs if d["kind"] in ("ServiceMonitor", "ClusterRole")]
    assert f"rel-ketch.{NS}.svc.cluster.local:9092" in notes({"replicas": replicas})


def test_node_id_and_advertised_address_come_from_the_pod_name(tmp_path: Path) -> None:
    """Run the container's shell command with `ketch` replaced by a stub that prints its environment."""
    sts = one(render(), "StatefulSet", "rel-ketch")
    c = container(sts)
    assert c["command"] == ["/bin/sh", "-c"]
    (script,) = c["args"]
    assert script.rstrip().endswith("exec ketch node")
    stub = tmp_path / "ketch"
    stub.write_text('#!/bin/sh\necho "$KETCH_NODE_ID $KETCH_ADVERTISED_LISTENER [$KETCH_RACK] $*"\n')
    stub.chmod(0o755)
    out = subprocess.run(
        ["/bin/sh", "-c", script],
        env={"PATH": f"{tmp_path}:/usr/bin:/bin", "POD_NAME": "rel-ketch-4"},
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"5 rel-ketch-4.{SUFFIX}:9092 [] node"


def test_dedicated_controllers() -> None:
    docs = render(VARIANTS["dedicated"])
    brokers = one(docs, "StatefulSet", "rel-ketch")
    controllers = one(docs, "StatefulSet", "rel-ketch-controller")
    assert env(brokers)["KETCH_ROLES"] == "broker"
    assert env(controllers)["KETCH_ROLES"] == "controller"
    assert brokers["spec"]["replicas"] == 3 and controllers["spec"]["replicas"] == 3
    expected = {1001 + i: f"rel-ketch-controller-{i}.{SUFFIX}:9092" for i in range(3)}
    assert voters(env(brokers)["KETCH_CONTROLLER_QUORUM_VOTERS"]) == expected
    assert voters(env(controllers)["KETCH_CONTROLLER_QUORUM_VOTERS"]) == expected
    assert 'KETCH_NODE_ID="$((ordinal + 1001))"' in container(controllers)["args"][0]
    assert controllers["spec"]["serviceName"] == brokers["spec"]["serviceName"] == "rel-ketch-headless"
    broker_labels = brokers["spec"]["selector"]["matchLabels"]
    controller_labels = controllers["spec"]["selector"]["matchLabels"]
    assert broker_labels["app.kubernetes.io/component"] == "broker"
    assert controller_labels["app.kubernetes.io/component"] == "controller"
    headless = one(docs, "Service", "rel-ketch-headless")["spec"]["selector"]
    assert headless.items() <= broker_labels.items() and headless.items() <= controller_labels.items()
    assert one(docs, "Service", "rel-ketch")["spec"]["selector"] == broker_labels
    controller_pdb = one(docs, "PodDisruptionBudget", "rel-ketch-controller")
    assert controller_pdb["spec"]["selector"]["matchLabels"] == controller_labels
    assert one(docs, "PodDisruptionBudget", "rel-ketch-broker")["spec"]["maxUnavailable"] == 1
    for sts in (brokers, controllers):
        pod = sts["spec"]["template"]["spec"]
        (required,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert required["labelSelector"]["matchLabels"] == sts["spec"]["selector"]["matchLabels"]
        assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"]
    assert [c["name"] for c in brokers["spec"]["template"]["spec"]["initContainers"]] == ["rack-from-node-zone"]
    assert "initContainers" not in controllers["spec"]["template"]["spec"], "controllers place no replicas"
    monitor = one(docs, "ServiceMonitor", "rel-ketch")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    headless_labels = one(docs, "Service", "rel-ketch-headless")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= headless_labels.items()
    assert "dedicated controllers" in notes(VARIANTS["dedicated"])


def test_rack_from_node_zone() -> None:
    docs = render({"rack": {"fromNodeZone": True}})
    sts = one(docs, "StatefulSet", "rel-ketch")
    pod = sts["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["command"][:2] == ["python", "-c"]
    script = init["command"][2]
    assert script == (CHART / "files" / "rack_from_node_zone.py").read_text()
    compile(script, "rack_from_node_zone.py", "exec")
    init_env = {e["name"]: e for e in init["env"]}
    assert init_env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert init_env["ZONE_LABEL"]["value"] == "topology.kubernetes.io/zone"
    mounts = {m["mountPath"] for m in init["volumeMounts"]}
    assert {"/etc/ketch-rack", "/var/run/secrets/kubernetes.io/serviceaccount"} <= mounts
    assert "KETCH_RACK=" in container(sts)["args"][0]
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}]
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": NS}]


def test_render_refuses_a_grace_period_shorter_than_the_shutdown() -> None:
    with pytest.raises(helm.HelmRenderError, match="terminationGracePeriodSeconds"):
        render({"config": {"shutdown_grace_s": 30}, "terminationGracePeriodSeconds": 30})
    docs = render({"config": {"shutdown_grace_s": 30}, "terminationGracePeriodSeconds": 40})
    sts = one(docs, "StatefulSet", "rel-ketch")
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 40


class FakeKubeApi(BaseHTTPRequestHandler):
    """GET /api/v1/nodes/<name> with the right bearer token; node labels from the server's ``nodes``."""

    def do_GET(self) -> None:
        nodes: dict[str, dict[str, str]] = self.server.nodes  # type: ignore[attr-defined]
        name = self.path.removeprefix("/api/v1/nodes/")
        if self.headers.get("Authorization") != "Bearer t0ken":
            self.send_response(401)
            body = b"{}"
        elif name not in nodes:
            self.send_response(404)
            body = b"{}"
        else:
            self.send_response(200)
            body = json.dumps({"kind": "Node", "metadata": {"name": name, "labels": nodes[name]}}).encode()
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_rack_script_reads_the_zone_label_from_the_api(tmp_path: Path) -> None:
    """Run the rendered init container command against a fake API server over TLS."""
    (init,) = one(render({"rack": {"fromNodeZone": True}}), "StatefulSet", "rel-ketch")["spec"]["template"]["spec"][
        "initContainers"
    ]
    account = tmp_path / "account"
    account.mkdir()
    key, cert = str(tmp_path / "key.pem"), str(account / "ca.crt")
    openssl = (
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
    )
    subprocess.run(
        [*openssl.split(), "-keyout", key, "-out", cert],
        check=True,
        capture_output=True,
        timeout=60,
    )
    (account / "token").write_text("t0ken\n")
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKubeApi)
    server.nodes = {"node-a": {"topology.kubernetes.io/zone": "eu-west-1a"}, "node-b": {}}  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base_env = {e["name"]: e["value"] for e in init["env"] if "value" in e}

    def run(node: str, token: str = "t0ken\n") -> tuple[int, str]:
        (account / "token").write_text(token)
        rack = tmp_path / "rack"
        rack.unlink(missing_ok=True)
        env = {
            **base_env,
            "PATH": os.environ["PATH"],
            "NODE_NAME": node,
            "RACK_FILE": str(rack),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(server.server_address[1]),
            "SERVICE_ACCOUNT_DIR": str(account),
        }
        command = [sys.executable, *init["command"][1:]]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        return result.returncode, rack.read_text() if rack.exists() else "<none>"

    try:
        assert run("node-a") == (0, "eu-west-1a")
        assert run("node-b") == (0, "")
        assert run("node-a", token="wrong") == (1, "<none>")
        assert run("node-z")[0] != 0
    finally:
        server.shutdown()
        server.server_close()


# -- TLS ------------------------------------------------------------------------------------------

TLS_DIR = "/etc/ketch/tls"
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")


def statefulsets(docs: list[Manifest]) -> list[Manifest]:
    return [d for d in docs if d["kind"] == "StatefulSet"]


@pytest.mark.parametrize("variant", ["tls-cert-manager", "tls-own-secret"])
def test_tls_env_secret_directory_and_exec_probes(variant: str) -> None:
    values = VARIANTS[variant]
    docs = render(values)
    plain = {c["metadata"]["name"]: container(c) for c in statefulsets(render({"controllers": {"dedicated": True}}))}
    secret = values["tls"].get("secretName") or "rel-ketch-tls"
    client_auth = values["tls"].get("clientAuth", "required")
    assert len(statefulsets(docs)) == (2 if values.get("controllers") else 1)
    for sts in statefulsets(docs):
        c, e = container(sts), env(sts)
        assert e["KETCH_SECURITY_PROTOCOL"] == "SSL"
        assert e["KETCH_SSL_CLIENT_AUTH"] == client_auth
        assert (e["KETCH_SSL_CAFILE"], e["KETCH_SSL_CERTFILE"], e["KETCH_SSL_KEYFILE"]) == (
            f"{TLS_DIR}/ca.crt",
            f"{TLS_DIR}/tls.crt",
            f"{TLS_DIR}/tls.key",
        )
        (mount,) = [m for m in c["volumeMounts"] if m["name"] == "tls"]
        assert mount == {"name": "tls", "mountPath": TLS_DIR, "readOnly": True}, "a directory, never subPath"
        assert not any("subPath" in m or "subPathExpr" in m for m in c["volumeMounts"])
        (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == secret and "items" not in volume["secret"]
        assert volume["secret"]["defaultMode"] == 0o440
        assert sts["spec"]["template"]["spec"]["securityContext"]["fsGroup"] == 10001, "the key is group-readable"
        grpc_probes = plain["rel-ketch-controller" if "controller" in sts["metadata"]["name"] else "rel-ketch"]
        for probe in PROBES:
            assert "grpc" not in c[probe], "Kubernetes' grpc probe cannot do TLS"
            shell, flag, script = c[probe]["exec"]["command"]
            assert (shell, flag) == ("/bin/sh", "-c")
            assert "exec python -m node.healthcheck 127.0.0.1:9092" in script
            assert f'KETCH_ADVERTISED_LISTENER="${{POD_NAME}}.{SUFFIX}:9092"' in script
            assert c[probe]["timeoutSeconds"] > 3
            timings = {k: c[probe][k] for k in ("periodSeconds", "failureThreshold")}
            assert timings == {k: grpc_probes[probe][k] for k in timings}, probe
    certificates_rendered = [d for d in docs if d["kind"] == "Certificate"]
    assert len(certificates_rendered) == (1 if values["tls"].get("certManager", {}).get("enabled") else 0)
    text = notes(values)
    assert "KETCH_SSL_CERTFILE" in text and f"get secret {secret}" in text and "No TLS" not in text


def test_tls_off_keeps_grpc_probes_and_no_secret() -> None:
    docs = render({"tls": {"certManager": {"enabled": True, "issuerRef": {"name": "x"}}}})
    sts = one(docs, "StatefulSet", "rel-ketch")
    assert not [k for k in env(sts) if k.startswith(("KETCH_SSL", "KETCH_SECURITY"))]
    assert all(container(sts)[p]["grpc"] == {"port": 9092} for p in PROBES)
    assert not [d for d in docs if d["kind"] == "Certificate"]
    assert "No TLS" in notes()


def strict_schema(schema: Any) -> Any:
    """A CRD's structural schema as the API server applies it with strict field validation:
    an object with properties refuses unknown fields, unless it preserves them."""
    if isinstance(schema, dict):
        out = {k: strict_schema(v) for k, v in schema.items()}
        preserves = out.get("x-kubernetes-preserve-unknown-fields")
        if "properties" in out and "additionalProperties" not in out and not preserves:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict_schema(v) for v in schema]
    return schema


CERT_MANAGER_SCHEMA = Path(__file__).parent / "schemas" / "cert-manager-v1.21.1-certificate.json"


def wildcard_matches(pattern: str, host: str) -> bool:
    """RFC 6125: a leading * stands for exactly one whole label."""
    if pattern.startswith("*."):
        return host.split(".", 1)[1] == pattern[2:] and "." not in host.split(".", 1)[0]
    return pattern == host


def test_cert_manager_certificate() -> None:
    docs = render(VARIANTS["tls-cert-manager"])
    cert = one(docs, "Certificate", "rel-ketch")
    schema = strict_schema(json.loads(CERT_MANAGER_SCHEMA.read_text()))
    jsonschema.validate(cert, schema)
    broken = json.loads(json.dumps(cert))
    broken["spec"]["usage"] = broken["spec"].pop("usages")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)

    spec = cert["spec"]
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert spec["secretName"] == "rel-ketch-tls"
    assert spec["issuerRef"] == {"name": "ketch-ca", "kind": "Issuer", "group": "cert-manager.io"}
    assert {"server auth", "client auth"} <= set(spec["usages"]), "a node is a server and a client of its peers"
    assert spec["commonName"] == "rel-ketch"
    names = spec["dnsNames"]
    pods = [f"rel-ketch-{i}.{SUFFIX}" for i in range(3)] + [f"rel-ketch-controller-{i}.{SUFFIX}" for i in range(3)]
    for pod in pods:
        assert any(wildcard_matches(n, pod) for n in names), pod
    service = [f"rel-ketch{s}" for s in ("", f".{NS}", f".{NS}.svc", f".{NS}.svc.cluster.local")]
    assert set(service) <= set(names)
    assert {"k0.example.com", "k1.example.com"} <= set(names) and "203.0.113.7" not in names
    assert spec["ipAddresses"] == ["203.0.113.7"]
    assert not any(wildcard_matches(n, f"rel-ketch-0.other-headless.{NS}.svc.cluster.local") for n in names)
    for sts in statefulsets(docs):
        (volume,) = [v for v in sts["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls"]
        assert volume["secret"]["secretName"] == spec["secretName"]


def test_cert_manager_needs_an_issuer() -> None:
    with pytest.raises(helm.HelmRenderError, match=r"tls.certManager.issuerRef.name"):
        render({"tls": {"enabled": True, "certManager": {"enabled": True}}})


def kubelet_secret_dir(mount: Path, files: dict[str, bytes], generation: int) -> None:
    """Write a Secret volume as the kubelet's atomic writer does: the files in a timestamped
    directory, ``..data`` a symlink to it (swapped by a rename), each key a symlink through ``..data``."""
    target = mount / f"..2026_12_04_00_00_0{generation}.{generation}"
    target.mkdir(parents=True)
    for name, content in files.items():
        (target / name).write_bytes(content)
    tmp = mount / "..data_tmp"
    tmp.symlink_to(target.name)
    os.replace(tmp, mount / "..data")
    for name in files:
        if not (mount / name).is_symlink():
            (mount / name).symlink_to(f"..data/{name}")


def served_serial(port: int, client: tuple[Path, Path], ca: Path) -> int:
    """The serial number of the certificate the node presents in a new TLS handshake."""
    context = ssl.create_default_context(cafile=str(ca))
    context.check_hostname = False
    context.load_cert_chain(*client)
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def test_exec_probe_against_a_tls_node_through_a_rotated_secret(tmp_path: Path) -> None:
    """The rendered probe against a real node whose certificate files sit where the chart mounts
    the Secret (moved under tmp_path), through two kubelet-style Secret updates."""
    (port,) = free_ports(1)
    values = {**VARIANTS["tls-cert-manager"], "ports": {"client": port, "metrics": 9644}}
    docs = render(values)
    spec = one(docs, "Certificate", "rel-ketch")["spec"]
    sts = one(docs, "StatefulSet", "rel-ketch")
    e = env(sts)
    ca_dir, mount = tmp_path / "ca", tmp_path / "secret"
    mount.mkdir()

    def issue(hosts: list[str]) -> dict[str, bytes]:
        cert, key = certificates.issue(ca_dir, spec["commonName"], hosts)
        return {"ca.crt": (ca_dir / "ca.pem").read_bytes(), "tls.crt": cert.read_bytes(), "tls.key": key.read_bytes()}

    def serial(files: dict[str, bytes]) -> int:
        return x509.load_pem_x509_certificate(files["tls.crt"]).serial_number

    first = issue(spec["dnsNames"] + spec.get("ipAddresses", []))
    kubelet_secret_dir(mount, first, 1)
    client = certificates.issue(ca_dir, "alice")
    local = {k: v.replace(TLS_DIR, str(mount)) for k, v in e.items() if k.startswith(("KETCH_SSL", "KETCH_SECURITY"))}
    flags = [f"--{k.removeprefix('KETCH_').lower().replace('_', '-')}={v}" for k, v in local.items()]
    node = NodeProcess(
        tmp_path / "data",
        port=port,
        extra_args=flags,
        security=SecurityConfig("SSL", str(mount / "ca.crt"), str(client[0]), str(client[1])),
    )
    # The image's `python` is its virtualenv's; here it is the test's (a symlink elsewhere would leave the venv).
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "python").exists()
    probe_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("KETCH_")},
        **local,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "POD_NAME": "rel-ketch-0",
    }

    def probe(kind: str = "readinessProbe") -> int:
        command = container(sts)[kind]["exec"]["command"]
        result = subprocess.run(command, env=probe_env, capture_output=True, text=True, timeout=30, cwd=ROOT)
        return result.returncode

    try:
        node.start()
        assert [probe(p) for p in PROBES] == [0, 0, 0]
        assert served_serial(port, client, mount / "ca.crt") == serial(first)
        # cert-manager renews: the kubelet swaps ..data; the next handshake gets the new certificate.
        second = issue(spec["dnsNames"])
        kubelet_secret_dir(mount, second, 2)
        assert served_serial(port, client, mount / "ca.crt") == serial(second)
        assert probe() == 0
        # A certificate that does not name the pod: the probe checks the name a peer would dial.
        kubelet_secret_dir(mount, issue([n for n in spec["dnsNames"] if not n.startswith("*.")]), 3)
        assert probe() == 2
        assert node.proc is not None and node.proc.poll() is None, "rotations never restart the node"
    finally:
        node.kill()


# -- external access ------------------------------------------------------------------------------


def advertised_listeners(sts: Manifest, pod: str) -> str:
    """Run the container's command for one pod name, with `ketch` a stub printing the listener env."""
    with tempfile.TemporaryDirectory() as stub_dir:
        stub = Path(stub_dir) / "ketch"
        stub.write_text('#!/bin/sh\necho "$KETCH_NODE_ID|$KETCH_ADVERTISED_LISTENERS|$KETCH_ADVERTISED_LISTENER"\n')
        stub.chmod(0o755)
        out = subprocess.run(
            ["/bin/sh", "-c", container(sts)["args"][0]],
            env={"PATH": f"{stub_dir}:/usr/bin:/bin", "POD_NAME": pod},
            capture_output=True,
            text=True,
            timeout=10,
        )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_external_access_load_balancer() -> None:
    docs = render(VARIANTS["tls-cert-manager"])
    brokers = one(docs, "StatefulSet", "rel-ketch")
    e = env(brokers)
    assert "KETCH_LISTEN" not in e
    assert e["KETCH_LISTENERS"] == "INTERNAL://0.0.0.0:9092,EXTERNAL://0.0.0.0:19092"
    assert e["KETCH_LISTENER_SECURITY_PROTOCOL_MAP"] == "INTERNAL:SSL,EXTERNAL:SSL"
    assert e["KETCH_INTER_BROKER_LISTENER_NAME"] == "INTERNAL"
    assert e["KETCH_CONTROLLER_LISTENER_NAMES"] == "INTERNAL"
    assert {"name": "external", "containerPort": 19092} in container(brokers)["ports"]
    hosts = VARIANTS["tls-cert-manager"]["externalAccess"]["advertisedHosts"]
    for i, host in enumerate(hosts):
        assert advertised_listeners(brokers, f"rel-ketch-{i}") == (
            f"{i + 1}|INTERNAL://rel-ketch-{i}.{SUFFIX}:9092,EXTERNAL://{host}:19092|"
        )
    selector = brokers["spec"]["selector"]["matchLabels"]
    for i in range(3):
        service = one(docs, "Service", f"rel-ketch-{i}-external")["spec"]
        assert service["type"] == "LoadBalancer"
        assert service["selector"] == {**selector, "statefulset.kubernetes.io/pod-name": f"rel-ketch-{i}"}
        assert service["ports"] == [{"name": "external", "port": 19092, "targetPort": "external"}]
    assert len([d for d in docs if d["metadata"]["name"].endswith("-external")]) == 3
    controllers = one(docs, "StatefulSet", "rel-ketch-controller")
    c = env(controllers)
    assert c["KETCH_LISTEN"] == "0.0.0.0:9092" and "KETCH_LISTENERS" not in c, "nothing outside dials a controller"
    assert advertised_listeners(controllers, "rel-ketch-controller-2") == (
        f"1003||rel-ketch-controller-2.{SUFFIX}:9092"
    )
    assert "k1.example.com:19092  (rel-ketch-1-external)" in notes(VARIANTS["tls-cert-manager"])


def test_external_access_node_port_plaintext() -> None:
    values = {
        "externalAccess": {
            "enabled": True,
            "advertisedHosts": ["192.0.2.10", "192.0.2.11", "2001:db8::12"],
            "service": {"type": "NodePort", "nodePorts": [31090, 31091, 31092]},
        }
    }
    docs = render(values)
    brokers = one(docs, "StatefulSet", "rel-ketch")
    assert env(brokers)["KETCH_LISTENER_SECURITY_PROTOCOL_MAP"] == "INTERNAL:PLAINTEXT,EXTERNAL:PLAINTEXT"
    assert "KETCH_SECURITY_PROTOCOL" not in env(brokers)
    assert advertised_listeners(brokers, "rel-ketch-2") == (
        f"3|INTERNAL://rel-ketch-2.{SUFFIX}:9092,EXTERNAL://[2001:db8::12]:31092|"
    )
    for i in range(3):
        service = one(docs, "Service", f"rel-ketch-{i}-external")["spec"]
        assert service["type"] == "NodePort"
        port = {"name": "external", "port": 19092, "targetPort": "external", "nodePort": 31090 + i}
        assert service["ports"] == [port]
    # Scaled past the list (kubectl scale): that pod refuses to start, saying why.
    (script,) = container(brokers)["args"]
    out = subprocess.run(["/bin/sh", "-c", script], env={"POD_NAME": "rel-ketch-3"}, capture_output=True, text=True)
    assert out.returncode == 1 and "advertisedHosts has no entry for pod rel-ketch-3" in out.stderr


def test_external_access_off_keeps_the_single_listener() -> None:
    docs = render({"externalAccess": {"advertisedHosts": ["a"]}})
    sts = one(docs, "StatefulSet", "rel-ketch")
    e = env(sts)
    assert e["KETCH_LISTEN"] == "0.0.0.0:9092"
    assert not [k for k in e if k.startswith(("KETCH_LISTENER", "KETCH_INTER_BROKER", "KETCH_CONTROLLER_LISTENER"))]
    assert advertised_listeners(sts, "rel-ketch-1") == f"2||rel-ketch-1.{SUFFIX}:9092"
    assert not [d for d in docs if d["metadata"]["name"].endswith("-external")]
    assert [p["name"] for p in container(sts)["ports"]] == ["client", "metrics", "kafka"]  # kafka: ports.kafka


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"replicas": 5, "externalAccess": {"enabled": True, "advertisedHosts": ["a", "b", "c", "d"]}},
            "externalAccess.advertisedHosts needs one host per broker pod: 5 pods (rel-ketch-0..4), 4 given",
        ),
        (
            {"externalAccess": {"enabled": True}},
            "externalAccess.advertisedHosts needs one host per broker pod: 3 pods (rel-ketch-0..2), 0 given",
        ),
        (
            {
                "externalAccess": {
                    "enabled": True,
                    "advertisedHosts": ["a", "b", "c"],
                    "service": {"type": "NodePort", "nodePorts": [31000]},
                }
            },
            "NodePort needs externalAccess.service.nodePorts, one per broker pod: 3 pods, 1 given",
        ),
    ],
)
def test_external_access_refuses_too_few_hosts(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(values)
