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
  without one, and fails on a refused token or an unknown node.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "ketch"
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
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_lint_strict_passes(variant: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NS)
    assert report["total_charts_linted"] == 1
    assert serious(report) == []


# CRDs have no schema in kubernetes-validate; everything else the chart renders must validate.
CRD_KINDS = {"ServiceMonitor"}


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
