"""Real node processes for integration tests (random free ports, temp dirs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import grpc

from node.cluster import LocalCluster
from node.process import NodeProcess

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


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
def running_cluster(path: Path, nodes: int, extra_args: list[str], kafka: bool = False) -> Iterator[LocalCluster]:
    """A local cluster of ``nodes`` combined nodes (with the Kafka listener if ``kafka``), started and
    ready; every process ends on exit."""
    c = LocalCluster(path, nodes, extra_args=extra_args, kafka=kafka)
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


def retry(call: Callable[[], T], ok: Callable[[T], bool], timeout_s: float = 30.0) -> T:
    """``call()`` every 0.2 s until ``ok`` of its answer or ``timeout_s`` (then the last answer); gRPC
    transport errors are retried too, and raised once the time is up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = call()
            if ok(result) or time.monotonic() > deadline:
                return result
        except grpc.RpcError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
