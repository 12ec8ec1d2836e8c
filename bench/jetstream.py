"""NATS JetStream R3 on this machine, and the comparison's workloads against it.

What ``python -m bench compare`` measures on the JetStream side (bench/compare.py runs it):

- ``ensure_nats_server()``: Debian's ``nats-server`` package (2.9.10 on bookworm), installed
  when missing the way scripts/ensure_system_packages.py installs the test suite's packages:
  ``apt-get update`` then ``apt-get install -y --no-install-recommends nats-server``, as
  root directly or through sudo, every command printed. No dpkg/apt-get, not root and no
  sudo, or a failed install: ``NatsUnavailable`` with the command that would install it.
- ``NatsCluster``: three ``nats-server`` processes with JetStream on, one cluster
  (routes between all three), free ports, file storage in a temporary directory, the
  server's defaults otherwise (no fsync per message: JetStream syncs every 2 minutes, as
  Ketch's default stores without an fsync per append). Ready once the JetStream meta
  leader answers ``account_info`` on every server and a stream of three replicas can be
  placed (a meta leader that does not yet count every server current refuses one with
  "no suitable peers for placement", which a compare run once hit).
- ``produce()``: one nats-py connection publishes ``records`` payloads of ``size`` random
  upper-case letters (Ketch's perf payload) to a stream of three replicas, file storage,
  with ``publish_async`` and at most ``in_flight`` (2,000) publishes awaiting their
  PubAck; a PubAck means the stream's leader stored the message and a quorum of its
  replicas has it (JetStream's acks=all for R3). Rate = records from the first publish to
  the last PubAck (one publish before the clock starts waits for the stream's leader).
- ``consume()``: a pull consumer (AckPolicy none, as Ketch's perf consumer commits
  nothing) fetches the stream from the first message in batches of ``fetch_batch``; rate =
  records from the first fetch to the last record.

Both return the same figures as ``ketch perf produce|consume --json`` (records,
records_per_sec, mb_per_sec, elapsed_s), so bench/compare.py can put them side by side.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.produce import make_payload
from bench.stats import MB
from node.process import free_ports

PACKAGE = "nats-server"
STREAM_REPLICAS = 3


class NatsUnavailable(Exception):
    """nats-server is missing and could not be installed here."""


def _run(*cmd: str) -> int:
    print("+", " ".join(cmd), flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(list(cmd), env=env, check=False).returncode


def ensure_nats_server() -> str:
    """The path of ``nats-server``, installing Debian's package when it is missing."""
    found = shutil.which(PACKAGE)
    if found:
        return found
    install = f"apt-get install -y --no-install-recommends {PACKAGE}"
    if shutil.which("dpkg-query") is None or shutil.which("apt-get") is None:
        raise NatsUnavailable(f"{PACKAGE} is missing and there is no apt-get here; install NATS server 2.9 by hand")
    sudo: tuple[str, ...] = ()
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise NatsUnavailable(f"{PACKAGE} is missing; not root and no sudo, so run as root: {install}")
        sudo = ("sudo",)
    print(f"{PACKAGE} is missing: installing Debian's package", flush=True)
    if _run(*sudo, "apt-get", "update", "-q") or _run(
        *sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", PACKAGE
    ):
        raise NatsUnavailable(f"apt-get failed to install {PACKAGE}; try: {install}")
    found = shutil.which(PACKAGE)
    if not found:
        raise NatsUnavailable(f"{PACKAGE} is still missing after apt-get")
    return found


def server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


async def _quiet(exc: Exception) -> None:
    """nats-py's error callback while probing servers that are still starting: a refused
    connection is expected then, and its default callback prints a traceback."""


@dataclass
class NatsCluster:
    """Three local JetStream servers in one cluster; ``stop()`` ends them."""

    root: Path
    binary: str
    size: int = 3
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{p}" for p in self.ports[: self.size]]

    def _config(self, i: int, cluster_ports: list[int]) -> str:
        routes = ", ".join(f"nats://127.0.0.1:{p}" for j, p in enumerate(cluster_ports) if j != i)
        store = self.root / f"n{i + 1}"
        return (
            f'server_name: "n{i + 1}"\nlisten: "127.0.0.1:{self.ports[i]}"\n'
            f'jetstream {{ store_dir: "{store}" }}\n'
            f'cluster {{ name: "bench", listen: "127.0.0.1:{cluster_ports[i]}", routes: [{routes}] }}\n'
        )

    def start(self, timeout_s: float = 30.0) -> NatsCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * self.size)
        self.ports, cluster_ports = ports[: self.size], ports[self.size :]
        for i in range(self.size):
            conf = self.root / f"n{i + 1}.conf"
            conf.write_text(self._config(i, cluster_ports))
            log = open(self.root / f"n{i + 1}.log", "wb")  # noqa: SIM115 - the child keeps it
            self.procs.append(subprocess.Popen([self.binary, "-c", str(conf)], stdout=log, stderr=log))
        try:
            asyncio.run(self._await_ready(timeout_s))
        except BaseException:
            self.stop()
            raise
        return self

    async def _await_ready(self, timeout_s: float) -> None:
        import nats

        deadline = time.monotonic() + timeout_s
        for url in self.urls:
            while True:
                dead = [p.args for p in self.procs if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"nats-server exited: {dead}; see {self.root}/n*.log")
                try:
                    nc = await nats.connect(
                        url, connect_timeout=1, allow_reconnect=False, max_reconnect_attempts=0, error_cb=_quiet
                    )
                    try:
                        await nc.jetstream(timeout=1).account_info()
                        break
                    finally:
                        await nc.close()
                except Exception:  # not listening yet, or no JetStream meta leader yet
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"JetStream not ready after {timeout_s} s; see {self.root}/n*.log") from None
                    await asyncio.sleep(0.2)
        await self._await_placement(deadline)

    async def _await_placement(self, deadline: float) -> None:
        """Until the meta leader places a stream of ``STREAM_REPLICAS`` replicas (then removed)."""
        import nats
        from nats.js.errors import APIError

        nc = await nats.connect(self.urls, error_cb=_quiet)
        try:
            js = nc.jetstream(timeout=5)
            while True:
                try:
                    await js.add_stream(name="ready-probe", subjects=["ready-probe"], num_replicas=STREAM_REPLICAS)
                    await js.delete_stream("ready-probe")
                    return
                except (APIError, TimeoutError):  # nats-py's TimeoutError is one
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"JetStream cannot place a stream; see {self.root}/n*.log") from None
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _figures(tool: str, records: int, size: int, elapsed: float) -> dict[str, Any]:
    elapsed = max(elapsed, 1e-9)
    return {
        "tool": tool,
        "records": records,
        "bytes": records * size,
        "elapsed_s": elapsed,
        "records_per_sec": records / elapsed,
        "mb_per_sec": records * size / elapsed / MB,
    }


async def produce(urls: list[str], stream: str, records: int, size: int, in_flight: int = 2000) -> dict[str, Any]:
    """Publish ``records`` x ``size`` bytes to a new R3 stream ``stream``; the figures."""
    import nats
    from nats.js.api import StorageType

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=30, publish_async_max_pending=in_flight)
        await js.add_stream(name=stream, subjects=[stream], num_replicas=STREAM_REPLICAS, storage=StorageType.FILE)
        payload = make_payload(size)
        await js.publish(stream, payload)  # the stream's leader is elected and answering before the clock starts
        start = time.perf_counter()
        futures = [await js.publish_async(stream, payload) for _ in range(records)]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    return _figures("produce", records, size, elapsed)


async def consume(urls: list[str], stream: str, records: int, size: int, fetch_batch: int = 1000) -> dict[str, Any]:
    """Read ``records`` messages of ``stream`` from the first with a pull consumer; the figures."""
    import nats
    from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

    nc = await nats.connect(urls)
    try:
        js = nc.jetstream(timeout=30)
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        sub = await js.pull_subscribe(stream, durable="bench", stream=stream, config=config)
        count = nbytes = 0
        start = time.perf_counter()
        while count < records:
            msgs = await sub.fetch(min(fetch_batch, records - count), timeout=10)
            count += len(msgs)
            nbytes += sum(len(m.data) for m in msgs)
        elapsed = time.perf_counter() - start
    finally:
        await nc.close()
    if nbytes != count * size:
        raise RuntimeError(f"read {nbytes} bytes in {count} messages of {size} B")
    return _figures("consume", count, size, elapsed)
