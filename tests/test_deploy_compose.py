"""deploy/docker-compose.yml, the Dockerfile and the monitoring files, proven without a Docker engine.

Rules:
- ``docker-compose config`` (Debian's docker-compose, installed by
  scripts/ensure_system_packages.py from ``./dev test``) validates and resolves the
  file without an engine; every test reads the *resolved* configuration, so
  anchors, merges and ``${VAR:-default}`` interpolation are compose's own.
  A deliberately broken copy must be rejected (the validator can fail).
- The three ketch services are consistent: distinct node ids, one cluster id,
  the same two listeners (INTERNAL on 9092 for the voters, replication and the
  controller; EXTERNAL on 19092; the Kafka listener on 29092 is published too,
  tests/test_deploy_kafka.py), one voter list naming every node at its
  hostname and INTERNAL port, each advertising INTERNAL as hostname:9092 and
  EXTERNAL as localhost:PORT where PORT is the host port published for its
  EXTERNAL listener, its own volume, a healthcheck through node/healthcheck.py
  and a stop grace period longer than the controlled shutdown.
- Emulation: each ketch service's command runs as a local process with its
  environment, compose hostnames mapped to loopback addresses 127.0.0.2/3/4
  (one per "container"), each INTERNAL port to a free one there, and each
  published EXTERNAL port to a free one on 127.0.0.1 (the "host"), still
  advertised as ``localhost``. The cluster must form; clients reach it only
  through the EXTERNAL listeners, and Metadata through them names only
  localhost addresses, through INTERNAL only the nodes' own (ketch-N) ones; a
  topic created with the compose default replication factor (3) takes produce and
  consume; after the partition leader is killed with SIGKILL, produce (acks=all)
  and consume work again. The compose healthcheck command passes on a live node
  and fails on the killed one, and every metric the Grafana dashboard queries is
  exported by a live node. Every process is ended in ``finally``.
- The TLS override (deploy/docker-compose.tls.yml, resolved together with the
  base file) adds a one-shot ``ketch-certs`` service of the same image writing
  into the ``ketch-tls`` volume; every node waits for it to complete, mounts that
  volume read-only and sets KETCH_SECURITY_PROTOCOL=SSL, client auth required and
  KETCH_SSL_* naming its own certificate in the volume; the base settings stay.
- TLS emulation: each named volume becomes a directory (a service's mount path
  in its command and environment is rewritten to it, hostnames to the loopback
  addresses as above, in the certificates' names too). The ketch-certs command,
  run as a process, issues the CA, a certificate per node (its host, localhost,
  127.0.0.1) and admin's, and run again changes nothing. The nodes then form the
  cluster over mutual TLS on those files: the healthcheck passes, the admin
  certificate creates a topic and produces and consumes, a client without a
  certificate is refused.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID
from prometheus_client.parser import text_string_to_metric_families

from ketch import Admin, Consumer, NewTopic, Producer, TopicPartition
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc
from ketch.errors import KetchConnectionError
from ketch.tls import PLAINTEXT, SecurityConfig, open_channel
from node.config import NodeConfig, split_host_port
from node.healthcheck import probe_security
from node.listeners import Listeners, parse_endpoints, resolve
from node.process import NodeProcess, free_ports

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
COMPOSE_TLS = DEPLOY / "docker-compose.tls.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "ketch.json"
TOPIC = "compose-demo"


def docker_compose(
    *args: str, file: Path = COMPOSE, overrides: tuple[Path, ...] = ()
) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: run ./dev test (scripts/ensure_system_packages.py installs it)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_", "KETCH_"))}
    files = [arg for f in (file, *overrides) for arg in ("-f", str(f))]
    return subprocess.run([exe, *files, *args], capture_output=True, text=True, timeout=60, env=env, cwd=file.parent)


@pytest.fixture(scope="module")
def resolved() -> dict[str, Any]:
    result = docker_compose("--profile", "monitoring", "config")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def resolved_tls() -> dict[str, Any]:
    result = docker_compose("config", overrides=(COMPOSE_TLS,))
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def ketch_services(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in config["services"].items()
        if service.get("command", [])[:2] == ["ketch", "node"]
    }


def listeners_of(env: dict[str, str]) -> Listeners:
    """A service's listeners, read from its environment as the node reads them (node/listeners.py)."""
    config = NodeConfig(
        listeners=env["KETCH_LISTENERS"],
        advertised_listeners=env.get("KETCH_ADVERTISED_LISTENERS", ""),
        listener_security_protocol_map=env.get("KETCH_LISTENER_SECURITY_PROTOCOL_MAP", ""),
        inter_broker_listener_name=env.get("KETCH_INTER_BROKER_LISTENER_NAME", ""),
        controller_listener_names=env.get("KETCH_CONTROLLER_LISTENER_NAMES", ""),
    )
    return resolve(config)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", duration)
    assert match and duration, duration
    return int(match.group(1) or 0) * 60 + float(match.group(2) or 0)


def test_compose_config_validates_without_an_engine(resolved: dict[str, Any]) -> None:
    assert sorted(resolved["services"]) == ["grafana", "ketch-1", "ketch-2", "ketch-3", "prometheus"]
    profiles = {name: s.get("profiles", []) for name, s in resolved["services"].items()}
    assert profiles == {
        "ketch-1": [],
        "ketch-2": [],
        "ketch-3": [],
        "prometheus": ["monitoring"],
        "grafana": ["monitoring"],
    }
    assert sorted(resolved["volumes"]) == sorted(
        ["ketch-1-data", "ketch-2-data", "ketch-3-data", "prometheus-data", "grafana-data"]
    )


def test_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("stop_grace_period: 30s", "stop_grace_period: 30s\n  no_such_key: 1"))
    result = docker_compose("config", file=broken)
    assert result.returncode != 0
    assert "no_such_key" in result.stderr


def test_ketch_services_agree_on_cluster_voters_and_addresses(resolved: dict[str, Any]) -> None:
    services = ketch_services(resolved)
    assert sorted(services) == ["ketch-1", "ketch-2", "ketch-3"]
    envs = {name: s["environment"] for name, s in services.items()}
    assert sorted(int(e["KETCH_NODE_ID"]) for e in envs.values()) == [1, 2, 3]
    (cluster_id,) = {e["KETCH_CLUSTER_ID"] for e in envs.values()}
    assert cluster_id
    assert len({e["KETCH_CONTROLLER_QUORUM_VOTERS"] for e in envs.values()}) == 1
    voters = dict(v.split("@") for v in next(iter(envs.values()))["KETCH_CONTROLLER_QUORUM_VOTERS"].split(","))
    volumes = set()
    published = set()
    for name, service in services.items():
        env = envs[name]
        listeners = listeners_of(env)
        assert "KETCH_LISTEN" not in env and "KETCH_ADVERTISED_LISTENER" not in env
        assert listeners.names == ["INTERNAL", "EXTERNAL"]
        assert listeners.inter_broker == "INTERNAL" and listeners.controller == ("INTERNAL",)
        internal, external = listeners["INTERNAL"], listeners["EXTERNAL"]
        assert (internal.bind, external.bind) == ("0.0.0.0:9092", "0.0.0.0:19092")
        assert service["hostname"] == name
        assert env["KETCH_ROLES"] == "broker,controller"
        assert voters[env["KETCH_NODE_ID"]] == f"{name}:9092", "voter address must be the node's INTERNAL listener"
        assert internal.advertised(0) == (name, 9092)
        ports = {int(p["target"]): int(p["published"]) for p in service["ports"]}
        assert set(ports) == {19092, 29092}, "only EXTERNAL and the Kafka listener are published"
        host_port = ports[19092]
        assert external.advertised(0) == ("localhost", host_port)
        published.add(host_port)
        assert env["KETCH_METRICS_HOST"] == "0.0.0.0"
        (volume,) = service["volumes"]
        assert volume.split(":")[1] == env["KETCH_DATA_DIR"] == "/var/lib/ketch"
        volumes.add(volume.split(":")[0])
        assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "node.healthcheck"]
        assert seconds(service["stop_grace_period"]) > 10 + 5  # shutdown_grace_s + controlled shutdown
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert Path(service["build"]["context"]).resolve() == ROOT
    assert len(volumes) == 3
    assert published == {19092, 19093, 19094}


def test_compose_nodes_publish_their_kafka_listener(resolved: dict[str, Any]) -> None:
    published = set()
    for name, service in ketch_services(resolved).items():
        environment = service["environment"]
        assert environment["KETCH_KAFKA_LISTEN"] == "0.0.0.0:29092", name
        ports = {int(p["target"]): int(p["published"]) for p in service["ports"]}
        assert environment["KETCH_KAFKA_ADVERTISED_LISTENER"] == f"localhost:{ports[29092]}", name
        published.add(ports[29092])
    assert published == {29092, 29093, 29094}


def test_prometheus_scrapes_every_node_and_grafana_is_provisioned(resolved: dict[str, Any]) -> None:
    services = ketch_services(resolved)
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    targets = sorted(t for group in job["static_configs"] for t in group["targets"])
    assert targets == sorted(f"{name}:{s['environment']['KETCH_METRICS_PORT']}" for name, s in services.items())
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in resolved["services"]["prometheus"]["volumes"]}
    assert mounts["/etc/prometheus/prometheus.yml"] == DEPLOY / "prometheus" / "prometheus.yml"
    grafana = {v.split(":")[1]: Path(v.split(":")[0]) for v in resolved["services"]["grafana"]["volumes"]}
    provisioning = grafana["/etc/grafana/provisioning"]
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"]
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "ketch.yml").read_text())["providers"]
    assert grafana[provider["options"]["path"]] == DASHBOARD.parent
    dashboard = json.loads(DASHBOARD.read_text())
    uids = {t["datasource"]["uid"] for p in dashboard["panels"] for t in p.get("targets", [])}
    assert uids == {source["uid"]}


def test_dockerfile_installs_from_the_lock_as_a_non_root_user() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert froms and all(f == "python:3.11-slim" for f in froms)
    assert "pip install -c requirements.lock ." in text
    user = [line.split()[1] for line in lines if line.startswith("USER ")][-1]
    assert user.split(":")[0] not in ("root", "0")
    assert 'VOLUME ["/var/lib/ketch"]' in lines
    assert any(line.startswith("HEALTHCHECK") for line in lines) and "node.healthcheck" in text
    # Every package the project installs is copied in, and .dockerignore lets it through.
    packages = re.search(r"include = \[(.*?)\]", (ROOT / "pyproject.toml").read_text())
    assert packages is not None
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for package in re.findall(r'"(\w+)\*"', packages.group(1)):
        assert f"COPY {package} ./{package}" in lines, package
        assert f"!{package}/" in ignore, package


# -- emulation: the compose services as local processes ------------------------------------------


class ComposeService(NodeProcess):
    """One compose service run as a local process: its command and its (localized) environment."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], host: str, port: int) -> None:
        # The harness reaches a node on its first listener as the node's own probe does (with the
        # node's certificate when that listener is SSL).
        security, _ = probe_security(env)
        super().__init__(
            Path(env["KETCH_DATA_DIR"]), int(env["KETCH_NODE_ID"]), host=host, port=port, security=security
        )
        self.name = name
        self.command = [sys.executable, "-m", "ketch", *command[1:]] if command[0] == "ketch" else command
        self.env = env
        self.advertised: dict[str, str] = {}  # listener name -> advertised host:port

    def start(self, timeout_s: float = 30.0) -> ComposeService:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / "node.log", "a")  # noqa: SIM115 - closed in _reap
        env = {k: v for k, v in os.environ.items() if not k.startswith("KETCH_")} | self.env
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=self._log, text=True, env={**env, "PYTHONUNBUFFERED": "1"}
        )
        ready = self._await_ready(timeout_s)
        assert ready["listen"] == f"{self.host}:{self.port}"
        self.metrics_port = int(ready["metrics_port"])
        return self


def loopback_hosts(resolved: dict[str, Any]) -> dict[str, str]:
    """Each ketch service's hostname -> its own loopback address, 127.0.0.2 onwards."""
    return {name: f"127.0.0.{i + 2}" for i, name in enumerate(sorted(ketch_services(resolved)))}


def named_volumes(service: dict[str, Any], tmp_path: Path) -> dict[str, Path]:
    """A service's mount paths of named volumes -> one directory per volume (shared by every service)."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if not source.startswith(("/", ".")):
            mounts[target] = tmp_path / "volumes" / source
    return mounts


def mount(value: str, mounts: dict[str, Path]) -> str:
    """A path inside a container, as the path of the volume directory it lands in."""
    for target, directory in mounts.items():
        if value == target or value.startswith(target + "/"):
            return str(directory) + value[len(target) :]
    return value


def localize(resolved: dict[str, Any], tmp_path: Path) -> dict[str, ComposeService]:
    """Map each compose hostname to its own loopback address, each unpublished listener port to a
    free port there, each published host port to a free port on 127.0.0.1 (the host, still called
    localhost), and rewrite every environment value that names one of them, the wildcard binds,
    the data volume (one directory per node) or a path in another named volume (KETCH_SSL_*)."""
    services = ketch_services(resolved)
    addresses: dict[tuple[str, int], str] = {}  # (compose host, port) -> local address
    binds: dict[str, dict[int, str]] = {}  # service -> container port -> local bind address
    hosts = loopback_hosts(resolved)
    host_ports = iter(free_ports(len(services) * 3))
    kafka_binds: dict[str, str] = {}  # service -> local bind of its Kafka listener
    for name, service in sorted(services.items()):
        host = hosts[name]
        published = {int(p["target"]): int(p["published"]) for p in service.get("ports", [])}
        binds[name] = {}
        own_ports = iter(free_ports(2, host))
        for _, port in parse_endpoints("listeners", service["environment"]["KETCH_LISTENERS"]).values():
            if port in published:
                local_port = next(host_ports)
                addresses[("localhost", published[port])] = f"localhost:{local_port}"
                binds[name][port] = f"127.0.0.1:{local_port}"
            else:
                addresses[(name, port)] = binds[name][port] = f"{host}:{next(own_ports)}"
        if "KETCH_KAFKA_LISTEN" in service["environment"]:  # published, like EXTERNAL
            local_port = next(host_ports)
            _, port = split_host_port(service["environment"]["KETCH_KAFKA_LISTEN"])
            addresses[("localhost", published[port])] = f"localhost:{local_port}"
            kafka_binds[name] = f"127.0.0.1:{local_port}"
    pattern = re.compile("|".join(rf"\b{re.escape(h)}:{p}\b" for h, p in addresses))
    nodes = {}
    for name, service in services.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        env = {k: pattern.sub(lambda m: addresses[split_host_port(m.group(0))], v) for k, v in env.items()}
        env = {k: mount(v, named_volumes(service, tmp_path)) for k, v in env.items()}
        env["KETCH_LISTENERS"] = ",".join(
            f"{n}://{binds[name][port]}"
            for n, (_, port) in parse_endpoints("listeners", env["KETCH_LISTENERS"]).items()
        )
        if name in kafka_binds:
            env["KETCH_KAFKA_LISTEN"] = kafka_binds[name]
        env["KETCH_METRICS_HOST"] = hosts[name]
        env["KETCH_METRICS_PORT"] = "0"
        listeners = listeners_of(env)
        host, local_port = split_host_port(listeners.first.bind)
        node = ComposeService(name, service["command"], env, host, local_port)
        node.advertised = {n: "{}:{}".format(*listeners[n].advertised(0)) for n in listeners.names}
        nodes[name] = node
    return nodes


@pytest.fixture
def compose_cluster(resolved: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, ComposeService]]:
    nodes = localize(resolved, tmp_path)
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_broker_alive(30)
        yield nodes
    finally:
        for node in nodes.values():
            node.kill()


def healthcheck(resolved: dict[str, Any], node: ComposeService) -> int:
    test = resolved["services"][node.name]["healthcheck"]["test"]
    assert test[:2] == ["CMD", "python"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETCH_")} | node.env
    return subprocess.run([sys.executable, *test[2:]], env=env, capture_output=True, timeout=30).returncode


def read_all(bootstrap: str, expected: int) -> list[bytes]:
    tp = TopicPartition(TOPIC, 0)
    values: list[bytes] = []
    with Consumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest") as consumer:
        consumer.assign([tp])
        deadline = time.monotonic() + 20
        while len(values) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value or b"" for r in records)
    return values


def produce(bootstrap: str, values: list[bytes]) -> list[int]:
    with Producer(bootstrap_servers=bootstrap, acks="all", retry_backoff_ms=100, delivery_timeout_ms=30000) as p:
        futures = [p.send(TOPIC, v, partition=0) for v in values]
        return [f.get(30).offset for f in futures]


def metadata_addresses(address: str) -> dict[int, str]:
    with open_channel(address, PLAINTEXT) as channel:
        answer = ketch_pb2_grpc.KetchStub(channel).Metadata(pb.MetadataRequest(), timeout=5)
    return {b.node_id: f"{b.host}:{b.port}" for b in answer.brokers}


def test_compose_services_form_a_cluster_that_survives_a_kill(
    resolved: dict[str, Any], compose_cluster: dict[str, ComposeService]
) -> None:
    started = time.monotonic()
    nodes = compose_cluster
    by_id = {n.node_id: n for n in nodes.values()}
    external = {n.node_id: n.advertised["EXTERNAL"] for n in nodes.values()}
    internal = {n.node_id: n.advertised["INTERNAL"] for n in nodes.values()}
    assert all(a.startswith("localhost:") for a in external.values())
    assert sorted(internal.values()) == sorted(n.bootstrap for n in nodes.values())  # ketch-N, localized
    # What a host client exports: the published EXTERNAL ports, nothing else.
    bootstrap = ",".join(external.values())
    cluster_id = next(iter(nodes.values())).env["KETCH_CLUSTER_ID"]

    with Admin(bootstrap_servers=bootstrap) as admin:
        described = admin.describe_cluster()
        assert described.cluster_id == cluster_id
        assert {b.node_id: f"{b.host}:{b.port}" for b in described.brokers} == external
        admin.create_topics([NewTopic(TOPIC, 1)])  # replication factor from KETCH_DEFAULT_REPLICATION_FACTOR
        deadline = time.monotonic() + 20
        while True:
            (partition,) = admin.describe_topics([TOPIC])[0].partitions
            if len(partition.isr) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert sorted(partition.replicas) == [1, 2, 3] and sorted(partition.isr) == [1, 2, 3]
    for node in nodes.values():  # each listener names every broker on itself only
        assert metadata_addresses(node.advertised["EXTERNAL"]) == external
        assert metadata_addresses(node.bootstrap) == internal

    first = [b"before-%03d" % i for i in range(100)]
    assert produce(bootstrap, first) == list(range(100))
    assert read_all(bootstrap, 100) == first
    assert all(healthcheck(resolved, n) == 0 for n in nodes.values())

    victim = by_id[partition.leader]
    victim.kill()
    assert healthcheck(resolved, victim) == 2
    survivors = [n for n in nodes.values() if n is not victim]
    bootstrap = ",".join(n.advertised["EXTERNAL"] for n in survivors)
    second = [b"after-%03d" % i for i in range(100)]
    assert produce(bootstrap, second) == list(range(100, 200))
    assert read_all(bootstrap, 200) == first + second
    with Admin(bootstrap_servers=bootstrap) as admin:
        (after,) = admin.describe_topics([TOPIC])[0].partitions
    assert after.leader != victim.node_id and after.leader in {n.node_id for n in survivors}

    # Every metric the Grafana dashboard queries is exported by a live node.
    node = survivors[0]
    text = urllib.request.urlopen(f"http://{node.host}:{node.metrics_port}/metrics", timeout=10).read().decode()
    families = {f.name: f.type for f in text_string_to_metric_families(text)}
    exported = set(families) | {f + "_total" for f, t in families.items() if t == "counter"}
    exported |= {f + s for f, t in families.items() if t == "histogram" for s in ("_bucket", "_count", "_sum")}
    wanted = set(re.findall(r"\bketch_[a-z_]+\b", DASHBOARD.read_text()))
    assert wanted and wanted <= exported, sorted(wanted - exported)
    print(f"\ncompose emulation: leader {victim.node_id} killed, 200 records; {time.monotonic() - started:.1f}s")


# -- the TLS override ------------------------------------------------------------------------------

TLS_ENV = {"KETCH_LISTENER_SECURITY_PROTOCOL_MAP": "INTERNAL:SSL,EXTERNAL:SSL", "KETCH_SSL_CLIENT_AUTH": "required"}


def test_tls_override_adds_certificates_and_the_ssl_env(resolved: dict[str, Any], resolved_tls: dict[str, Any]) -> None:
    always = sorted(name for name, service in resolved_tls["services"].items() if not service.get("profiles"))
    assert always == ["ketch-1", "ketch-2", "ketch-3", "ketch-certs"]
    assert "ketch-tls" in resolved_tls["volumes"]
    certs = resolved_tls["services"]["ketch-certs"]
    nodes = ketch_services(resolved_tls)
    assert sorted(nodes) == ["ketch-1", "ketch-2", "ketch-3"]
    assert certs["image"] == next(iter(nodes.values()))["image"] and certs["build"] == nodes["ketch-1"]["build"]
    assert certs.get("restart", "no") == "no" and "ports" not in certs
    (certs_volume,) = certs["volumes"]
    assert certs_volume.split(":")[:2] == ["ketch-tls", "/var/lib/ketch"], "the image's own (ketch-owned) directory"
    for name, node in nodes.items():
        env, plain = node["environment"], resolved["services"][name]["environment"]
        assert node["depends_on"] == {"ketch-certs": {"condition": "service_completed_successfully"}}
        assert {k: env[k] for k in TLS_ENV} == TLS_ENV
        tls_keys = ("KETCH_SSL", "KETCH_LISTENER_SECURITY")
        assert {k: v for k, v in env.items() if not k.startswith(tls_keys)} == {
            k: v for k, v in plain.items() if not k.startswith(tls_keys)
        }
        mounts = {v.split(":")[1]: v.split(":") for v in node["volumes"]}
        assert mounts["/etc/ketch"] == ["ketch-tls", "/etc/ketch", "ro"]
        assert mounts["/var/lib/ketch"][0] == f"{name}-data"
        assert env["KETCH_SSL_CAFILE"] == "/etc/ketch/tls/ca.pem"
        assert env["KETCH_SSL_CERTFILE"] == f"/etc/ketch/tls/{name}.pem"
        assert env["KETCH_SSL_KEYFILE"] == f"/etc/ketch/tls/{name}-key.pem"
        assert node["healthcheck"] == resolved["services"][name]["healthcheck"]
    script = certs["command"][-1]
    for name in nodes:
        assert f"--name {name} --host {name} --host localhost --host 127.0.0.1" in script
    assert "--name admin" in script


def certs_script(resolved_tls: dict[str, Any], tmp_path: Path) -> str:
    """The ketch-certs command, its volume mounted at a directory and hostnames as loopback addresses."""
    certs = resolved_tls["services"]["ketch-certs"]
    assert certs["command"][:2] == ["/bin/sh", "-ec"]
    script: str = certs["command"][2]
    for target, directory in named_volumes(certs, tmp_path).items():
        script = script.replace(target, str(directory))
    for name, host in loopback_hosts(resolved_tls).items():
        script = re.sub(rf"--host {re.escape(name)}\b", f"--host {host}", script)
    return script


def names_in(pem: Path) -> tuple[str, set[str]]:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    common_name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return str(common_name), set()
    return str(common_name), {str(n.value) for n in san}


def test_tls_services_run_mutual_tls(resolved_tls: dict[str, Any], tmp_path: Path) -> None:
    started = time.monotonic()
    script = certs_script(resolved_tls, tmp_path)
    # The image's PATH: `ketch` and `python` are the installed package's.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KETCH_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

    def run_certs() -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", "-ec", script], env=env, capture_output=True, text=True, timeout=60)

    made = run_certs()
    assert made.returncode == 0, made.stderr
    volume = tmp_path / "volumes" / "ketch-tls" / "tls"
    before = {p.name: p.read_bytes() for p in volume.iterdir()}
    hosts = loopback_hosts(resolved_tls)
    for name, host in hosts.items():
        assert names_in(volume / f"{name}.pem") == (name, {host, "localhost", "127.0.0.1"})
    assert names_in(volume / "admin.pem") == ("admin", set())
    again = run_certs()
    assert again.returncode == 0 and "already" in again.stdout
    assert {p.name: p.read_bytes() for p in volume.iterdir()} == before, "made once"

    nodes = localize(resolved_tls, tmp_path)
    node_env = next(iter(nodes.values())).env
    assert Path(node_env["KETCH_SSL_CAFILE"]) == volume / "ca.pem"
    admin = SecurityConfig("SSL", str(volume / "ca.pem"), str(volume / "admin.pem"), str(volume / "admin-key.pem"))
    try:
        for node in nodes.values():
            node.start()
        for node in nodes.values():
            node.wait_broker_alive(30)
        assert all(healthcheck(resolved_tls, n) == 0 for n in nodes.values())
        bootstrap = ",".join(n.bootstrap for n in nodes.values())
        with Admin(bootstrap_servers=bootstrap, **admin.client_kwargs()) as client:
            client.create_topics([NewTopic(TOPIC, 1)])
        with Producer(bootstrap_servers=bootstrap, acks="all", **admin.client_kwargs()) as producer:
            offsets = [producer.send(TOPIC, b"tls-%d" % i, partition=0).get(30).offset for i in range(20)]
        assert offsets == list(range(20))
        values: list[bytes] = []
        consumer_options = {"auto_offset_reset": "earliest", **admin.client_kwargs()}
        with Consumer(bootstrap_servers=bootstrap, **consumer_options) as consumer:
            consumer.assign([TopicPartition(TOPIC, 0)])
            deadline = time.monotonic() + 20
            while len(values) < 20 and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    values.extend(r.value or b"" for r in records)
        assert values == [b"tls-%d" % i for i in range(20)]
        no_certificate = SecurityConfig("SSL", str(volume / "ca.pem"))
        with (
            pytest.raises(KetchConnectionError),
            Admin(bootstrap_servers=bootstrap, request_timeout_ms=5000, **no_certificate.client_kwargs()) as client,
        ):
            client.describe_cluster()
    finally:
        for node in nodes.values():
            node.kill()
    print(f"\ncompose TLS emulation: certificates, 3 nodes, 20 records; {time.monotonic() - started:.1f}s")
