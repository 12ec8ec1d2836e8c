"""``python -m node.healthcheck``: the Docker HEALTHCHECK command, against a real node.

Rules checked: exit 0 and a SERVING line for a serving node (by address, and
with no address from KETCH_LISTEN as the container sets it); exit 1 for a
service name the node does not serve; exit 2 when nothing answers.
"""

from __future__ import annotations

import os
import subprocess
import sys

from node.healthcheck import default_target
from node.process import NodeProcess, free_ports


def probe(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.healthcheck", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
    )


def test_default_target_follows_ketch_listen() -> None:
    assert default_target({}) == "127.0.0.1:9092"
    assert default_target({"KETCH_LISTEN": "0.0.0.0:9093"}) == "127.0.0.1:9093"
    assert default_target({"KETCH_LISTEN": "[::]:9094"}) == "127.0.0.1:9094"
    assert default_target({"KETCH_LISTEN": "10.1.2.3:9095"}) == "10.1.2.3:9095"
    assert default_target({"KETCH_LISTEN": "[::1]:9096"}) == "[::1]:9096"


def test_probe_answers_for_a_serving_node(node: NodeProcess) -> None:
    by_address = probe(node.bootstrap)
    assert by_address.returncode == 0, by_address.stdout + by_address.stderr
    assert by_address.stdout.strip() == f"{node.bootstrap}: SERVING"

    from_env = probe(env={"KETCH_LISTEN": f"0.0.0.0:{node.port}"})
    assert from_env.returncode == 0, from_env.stdout + from_env.stderr

    client_api = probe(node.bootstrap, "--service", "ketch.v1.Ketch")
    assert client_api.returncode == 0, client_api.stdout

    unknown = probe(node.bootstrap, "--service", "no.such.Service")
    assert unknown.returncode == 1
    assert "unknown" in unknown.stdout


def test_probe_fails_when_nothing_listens() -> None:
    (port,) = free_ports(1)
    result = probe(f"127.0.0.1:{port}", "--timeout", "1")
    assert result.returncode == 2
    assert "unreachable" in result.stdout
