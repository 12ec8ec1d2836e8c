"""Real node processes for integration tests (random free ports, temp dirs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from node.cluster import LocalCluster
from node.process import NodeProcess

ROOT = Path(__file__).resolve().parent.parent


def start_node(tmp_path: Path, node_id: int = 1, extra_args: list[str] | None = None) -> NodeProcess:
    """A single combined node in ``tmp_path/node-<id>`` on free ports, its broker
    registered and unfenced (so topics can be placed on it); call ``close()``."""
    node = NodeProcess(tmp_path / f"node-{node_id}", node_id, extra_args).start()
    try:
        wait_broker_alive(node)
    except Exception:
        node.close()
        raise
    return node


def wait_broker_alive(node: NodeProcess, timeout_s: float = 30.0) -> None:
    node.wait_broker_alive(timeout_s)


@contextmanager
def running_cluster(path: Path, nodes: int, extra_args: list[str]) -> Iterator[LocalCluster]:
    """A local cluster of ``nodes`` combined nodes, started and ready; every process ends on exit."""
    c = LocalCluster(path, nodes, extra_args=extra_args)
    try:
        c.start()
        c.wait_ready(60)
        yield c
    finally:
        c.close()


def sigkill_after(code: str, lines: int) -> list[str]:
    """Run ``python -c code`` (a child that prints one line per acknowledged write), kill it with
    SIGKILL once it has printed ``lines`` lines, and return every line it printed before dying:
    each one was acknowledged. Fails the test if the child exits early; always reaps it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out: list[str] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        while len(out) < lines:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited early: {proc.wait()} {proc.stderr.read().decode()}")
            out.append(line.decode())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        out += proc.stdout.read().decode().split("\n")[:-1]  # printed before the kill: acknowledged too
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return out
