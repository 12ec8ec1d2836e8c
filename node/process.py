"""A ``ketch node`` child process: start it, wait until it is ready, stop or kill it.

Used by ``ketch cluster up`` and by the integration tests. ``start()`` runs
``python -m ketch node`` with the node's id, data directory and listen port
(port 0: the node picks a free one) and waits for its KETCH_READY line, which
carries the bound ports; the node's stderr goes to ``DATA_DIR/node.log``.
``restart()`` reuses the data directory and the port it got first, so
clients keep their bootstrap address. ``detach=True`` starts the node in its
own session, so it outlives the command that started it (``ketch cluster up
--detach``) and a Ctrl-C in that terminal does not reach it. ``stop()`` is SIGTERM and a wait (then
SIGKILL if it overruns); ``kill()`` is kill -9, the crash case.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

from ketch.tls import PLAINTEXT, SecurityConfig, open_channel

READY = "KETCH_READY "


class NodeProcess:
    def __init__(
        self,
        data_dir: Path,
        node_id: int = 1,
        extra_args: list[str] | None = None,
        port: int = 0,
        metrics_port: int = 0,
        host: str = "127.0.0.1",
        detach: bool = False,
        security: SecurityConfig = PLAINTEXT,
    ) -> None:
        self.data_dir = data_dir
        self.security = security  # how this harness reaches the node (TLS when the node serves TLS)
        self.node_id = node_id
        self.extra_args = list(extra_args or [])
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.detach = detach
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.listeners: dict[str, str] = {}  # listener name -> bound host:port, from the ready line

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> NodeProcess:
        assert self.proc is None or self.proc.poll() is not None, "node already running"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.data_dir / "node.log", "a")  # noqa: SIM115 - closed in _reap
        cmd = [
            sys.executable,
            "-m",
            "ketch",
            "node",
            "--node-id",
            str(self.node_id),
            "--data-dir",
            str(self.data_dir),
            "--listen",
            f"{self.host}:{self.port}",
            "--metrics-port",
            str(self.metrics_port),
            *self.extra_args,
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, env=env, start_new_session=self.detach
        )
        ready = self._await_ready(timeout_s)
        self.port = int(ready["listen"].rsplit(":", 1)[1])
        self.listeners = dict(ready.get("listeners", {}))
        self.metrics_port = int(ready["metrics_port"])
        return self

    def _await_ready(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if not sel.select(timeout=0.2):
                    if self.proc.poll() is not None:
                        break
                    continue
                line = self.proc.stdout.readline()
                if not line:
                    break
                if line.startswith(READY):
                    result: dict[str, Any] = json.loads(line[len(READY) :])
                    return result
        self.kill()
        raise RuntimeError(f"node {self.node_id} did not become ready; log:\n{self.log_text()[-3000:]}")

    def wait_broker_alive(self, timeout_s: float = 30.0) -> NodeProcess:
        """Wait until this node's broker is registered and unfenced (listed in its own Metadata)."""
        import grpc

        from ketch.api.v1 import ketch_pb2 as pb
        from ketch.api.v1 import ketch_pb2_grpc

        deadline = time.monotonic() + timeout_s
        with open_channel(self.bootstrap, self.security) as channel:
            stub = ketch_pb2_grpc.KetchStub(channel)
            while time.monotonic() < deadline:
                try:
                    if self.node_id in [b.node_id for b in stub.Metadata(pb.MetadataRequest(), timeout=2).brokers]:
                        return self
                except grpc.RpcError:
                    pass
                time.sleep(0.05)
        raise TimeoutError(f"node {self.node_id} did not become a live broker; log:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        path = self.data_dir / "node.log"
        return path.read_text() if path.exists() else ""

    def kill(self) -> None:
        """kill -9: the crash case."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self._reap(10)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self._reap(timeout_s)

    def restart(self) -> NodeProcess:
        self.stop()
        return self.start()

    def _reap(self, timeout_s: float) -> int:
        code = 0
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
            if self.proc.stdout is not None:
                self.proc.stdout.close()
        if self._log is not None:
            self._log.close()
            self._log = None
        return code

    def close(self) -> None:
        self.kill()


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (bound, read, released).

    They are drawn below the kernel's ephemeral range (``ip_local_port_range``),
    where outgoing connections take their source ports: a port picked from inside
    it can be taken by any client socket between this check and the node's bind
    (seen as "Address already in use" in CI). Outside it, only another listener
    could take it."""
    low = _ephemeral_low()
    rng = random.Random()
    sockets: list[socket.socket] = []
    try:
        attempts = 0
        while len(sockets) < count:
            attempts += 1
            if attempts > count * 50:
                raise RuntimeError(f"no {count} free ports below {low} on {host}")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.bind((host, rng.randrange(10_000, low) if low > 10_000 else 0))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (Linux), else 0 (let the kernel pick)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0
