"""Fault injectors: each one a loop of inject → hold → heal until the run's deadline.

Rules:
- A fault records ``fault start`` when it strikes and ``fault end`` when it is healed
  (chaos/history.py); the checker measures unavailability from the start.
- Every fault heals in ``finally``: whatever happens (an exception, a cancelled run),
  a killed node is started again, a paused one continued, the proxy opened, the
  filler file removed, the clock set back. ``heal()`` is idempotent.
- Between rounds a fault waits until the partition has a leader and a full ISR
  again (bounded), so at most one replica is ever disturbed at a time and the
  run measures recovery, not a cluster that lost its quorum.
- Random choices (hold times, pauses) come from the run's seeded ``random.Random``;
  timing on real processes still varies, so the seed fixes the plan, not the outcome.
- Blocking cluster calls run in a thread (``asyncio.to_thread``) so the workload's
  event loop keeps its clients going.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import random
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from chaos.cluster import ChaosCluster
from chaos.history import History


@dataclass
class Context:
    cluster: ChaosCluster
    history: History
    topic: str
    rng: random.Random
    deadline: float  # time.monotonic() when injecting stops
    log: Callable[[str], None] = print
    faults: list[dict[str, object]] = field(default_factory=list)
    txn_ids: list[str] = field(default_factory=list)  # the transactional workload's ids and group
    group_ids: list[str] = field(default_factory=list)

    @property
    def session_s(self) -> float:
        """The nodes' broker session: pauses and partitions are held past it."""
        return self.cluster.session_timeout_ms / 1000

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def start(self, name: str, node: int | None, **extra: object) -> None:
        self.history.record("fault", "start", name=name, node=node, **extra)
        self.faults.append({"name": name, "node": node, "t": self.history.now(), **extra})
        self.log(f"[{self.history.now():7.2f}s] fault {name} on node {node} {extra or ''}")

    def end(self, name: str, node: int | None) -> None:
        self.history.record("fault", "end", name=name, node=node)
        self.log(f"[{self.history.now():7.2f}s] healed {name} on node {node}")


async def leader(ctx: Context, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = await asyncio.to_thread(ctx.cluster.describe_partition, ctx.topic)
        if p is not None and p.leader_id > 0 and ctx.cluster.alive(p.leader_id):
            return int(p.leader_id)
        await asyncio.sleep(0.2)
    raise TimeoutError("no partition leader")


async def settle(ctx: Context, timeout_s: float = 45.0) -> bool:
    """Wait until every node runs and the partition's ISR holds all its replicas; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        p = await asyncio.to_thread(ctx.cluster.describe_partition, ctx.topic)
        running = all(ctx.cluster.alive(i) for i in ctx.cluster.ids)
        if running and p is not None and p.leader_id > 0 and len(p.isr) == len(p.replicas):
            return True
        await asyncio.sleep(0.3)
    ctx.log("warning: the ISR did not fill up again in time")
    return False


async def restart(ctx: Context, node_id: int) -> None:
    if not ctx.cluster.alive(node_id):
        ctx.cluster.node(node_id).kill()  # reap
        await asyncio.to_thread(ctx.cluster.start_node, node_id)


async def hold(ctx: Context, low: float, high: float) -> None:
    await asyncio.sleep(ctx.rng.uniform(low, high))


Fault = Callable[[Context], Awaitable[None]]


async def rounds(ctx: Context, one: Callable[[], Awaitable[None]], gap: tuple[float, float] = (1.0, 3.0)) -> None:
    while ctx.left() > 0:
        await one()
        await settle(ctx)
        if ctx.left() > 0:
            await hold(ctx, *gap)


async def kill_leader(ctx: Context) -> None:
    """kill -9 of the partition leader, restarted after 1-4 s, in a loop."""

    async def one() -> None:
        node = await leader(ctx)
        ctx.start("kill-leader", node)
        try:
            ctx.cluster.node(node).kill()
            await hold(ctx, 1.0, 4.0)
        finally:
            await restart(ctx, node)
            ctx.end("kill-leader", node)

    await rounds(ctx, one)


async def new_controller(ctx: Context, killed: int, timeout_s: float = 4.0) -> None:
    """Poll the live nodes every 50 ms until one calls itself the Raft leader; record the seconds
    since the kill in the fault (``new_controller_s``, the issue's new-active-controller figure)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        found = await asyncio.to_thread(ctx.cluster.self_declared_leader, killed)
        if found is not None:
            seconds = round(time.monotonic() - t0, 3)
            ctx.faults[-1]["new_controller_s"] = seconds
            ctx.history.record("fault", "new-controller", node=found, seconds=seconds)
            ctx.log(f"           node {found} leads the quorum {seconds:.2f}s after the kill")
            return
        await asyncio.sleep(0.05)
    ctx.faults[-1]["new_controller_s"] = None
    ctx.log(f"           no new controller within {timeout_s}s")


async def kill_controller(ctx: Context) -> None:
    """kill -9 of the active controller (Raft leader), restarted after 1-4 s."""

    async def one() -> None:
        node = await asyncio.to_thread(ctx.cluster.active_controller)
        if node is None:
            await asyncio.sleep(0.5)
            return
        ctx.start("kill-controller", node, wall=time.time())  # wall: matched against node log lines
        try:
            ctx.cluster.node(node).kill()
            await asyncio.gather(new_controller(ctx, node), hold(ctx, 1.0, 4.0))
        finally:
            await restart(ctx, node)
            ctx.end("kill-controller", node)

    await rounds(ctx, one)


def _signal(ctx: Context, node_id: int, sig: signal.Signals) -> None:
    proc = ctx.cluster.node(node_id).proc
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)


async def pause_leader(ctx: Context) -> None:
    """SIGSTOP of the leader for longer than its broker session, then SIGCONT."""

    async def one() -> None:
        node = await leader(ctx)
        ctx.start("pause-leader", node)
        try:
            _signal(ctx, node, signal.SIGSTOP)
            await hold(ctx, ctx.session_s + 1.0, ctx.session_s + 4.0)
        finally:
            _signal(ctx, node, signal.SIGCONT)
            ctx.end("pause-leader", node)

    await rounds(ctx, one)


def isolation_links(ctx: Context, node_id: int) -> list[str]:
    """Every link to and from ``node_id`` plus the inbound port followers fetch through."""
    others = [j for j in ctx.cluster.ids if j != node_id]
    return [f"in-{node_id}", *(f"{node_id}->{j}" for j in others), *(f"{j}->{node_id}" for j in others)]


async def partition_leader(ctx: Context) -> None:
    """Cut the leader off from its followers and the controllers (clients still reach it)."""

    async def one() -> None:
        node = await leader(ctx)
        links = isolation_links(ctx, node)
        ctx.start("partition-leader", node)
        try:
            ctx.cluster.proxy.block(*links)
            await hold(ctx, ctx.session_s + 2.0, ctx.session_s + 5.0)
        finally:
            ctx.cluster.proxy.heal(*links)
            ctx.end("partition-leader", node)

    await rounds(ctx, one)


async def rolling_restart(ctx: Context) -> None:
    """SIGTERM (controlled shutdown) of each node in turn, started again at once; at least one whole
    round, so a short run restarts the partition's leader too."""
    order = list(ctx.cluster.ids)
    i = 0
    while ctx.left() > 0 or i < len(order):
        node = order[i % len(order)]
        i += 1
        ctx.start("rolling-restart", node)
        try:
            await asyncio.to_thread(ctx.cluster.node(node).stop)
        finally:
            await restart(ctx, node)
            ctx.end("rolling-restart", node)
        await settle(ctx)
        await hold(ctx, 0.5, 1.5)


def fill(path: str, chunk: int = 1 << 20) -> int:
    """Write zeros to ``path`` until the filesystem is full; returns bytes written."""
    written = 0
    block = b"\0" * chunk
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if chunk <= 4096:
                    return written
                chunk //= 16
                block = block[:chunk]


async def disk_full(ctx: Context) -> None:
    """Fill the leader's data filesystem (a small tmpfs) for 3-6 s, then free it. A node
    stops on its first failed write (replication/rocks_store.py); like a supervisor
    (docker-compose ``restart: unless-stopped``), the fault starts it again once there is
    room, after waiting up to 10 s for a node still stopping to finish."""

    async def one() -> None:
        node = await leader(ctx)
        filler = ctx.cluster.node(node).data_dir / "chaos-filler"
        started = False
        try:
            size = await asyncio.to_thread(fill, str(filler))
            ctx.start("disk-full", node)  # from here every write on the node fails
            started = True
            ctx.log(f"           filled node {node}'s disk with {size >> 20} MiB")
            await hold(ctx, 3.0, 6.0)
        finally:
            with contextlib.suppress(OSError):
                filler.unlink()
            deadline = time.monotonic() + 10.0
            while ctx.cluster.alive(node) and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if not ctx.cluster.alive(node):
                ctx.log(f"           node {node} stopped on the full disk; starting it again")
            await restart(ctx, node)
            if started:
                ctx.end("disk-full", node)

    await rounds(ctx, one)


async def clock_jump(ctx: Context) -> None:
    """Step the leader's wall clock by +1 h, -1 h or +1 d (libfaketime; the monotonic clock
    is not faked) for 4-7 s, then step it back. libfaketime notices the new offset within
    about 2 s (it re-reads the offset file at most once a second), so the node runs on the
    stepped clock for 2-7 s of each round."""

    async def one() -> None:
        node = await leader(ctx)
        offset = ctx.rng.choice([3600, -3600, 86400])
        ctx.start("clock-jump", node, offset_s=offset)
        try:
            ctx.cluster.set_clock_offset(node, offset)
            await hold(ctx, 4.0, 7.0)
        finally:
            ctx.cluster.set_clock_offset(node, 0)
            ctx.end("clock-jump", node)

    await rounds(ctx, one)


async def lagging_leader_kill(ctx: Context) -> None:
    """The control fault: followers stop fetching from the leader (its inbound proxy is
    blocked) for 1.5 s, shorter than the replica lag limit so the ISR stays full, while
    clients keep writing to the leader; then the leader is killed with -9 and the
    followers reconnect. With acks=1 what the leader acknowledged in that window exists
    only on the dead leader, and the new leader (from the full ISR) never had it."""

    async def one() -> None:
        node = await leader(ctx)
        ctx.start("lagging-leader-kill", node)
        try:
            ctx.cluster.proxy.block(f"in-{node}")
            await asyncio.sleep(1.5)
            ctx.cluster.node(node).kill()
            ctx.cluster.proxy.heal(f"in-{node}")
            await hold(ctx, 2.0, 3.0)
        finally:
            ctx.cluster.proxy.heal(f"in-{node}")
            await restart(ctx, node)
            ctx.end("lagging-leader-kill", node)

    await rounds(ctx, one, gap=(2.0, 3.0))


@dataclass(frozen=True)
class Scenario:
    name: str
    fault: Fault
    doc: str
    tmpfs_mb: int = 0
    faketime: bool = False
    grpc_proxy: bool = False  # route the advertised listeners through chaos/grpc_proxy.py


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("kill-leader", kill_leader, "kill -9 of the partition leader in a loop, restarted after 1-4 s"),
        Scenario("kill-controller", kill_controller, "kill -9 of the active controller in a loop"),
        Scenario("pause-leader", pause_leader, "SIGSTOP of the leader past its broker session, then SIGCONT"),
        Scenario("partition-leader", partition_leader, "the leader cut off from followers and controllers (proxy)"),
        Scenario("rolling-restart", rolling_restart, "SIGTERM and restart of each node in turn"),
        Scenario("disk-full", disk_full, "the leader's data disk (a 192 MiB tmpfs) filled for 3-6 s", tmpfs_mb=192),
        Scenario("clock-jump", clock_jump, "the leader's wall clock stepped (libfaketime)", faketime=True),
        Scenario(
            "lagging-leader-kill",
            lagging_leader_kill,
            "followers stalled 1.5 s, then the leader killed (the acks=1 control loses data)",
        ),
    ]
}


async def run_window(
    ctx: Context,
    workload: Any,
    fault: Callable[[Context], Awaitable[None]],
    *,
    warmup_s: float,
    duration_s: float,
    pause_s: float,
) -> tuple[bool, Any]:
    """Start ``workload``, inject ``fault`` for ``duration_s`` after ``warmup_s``, wait for the
    cluster to settle and ``pause_s`` more, stop the workload (also on failure) and drain it:
    (settled, what ``drain`` returned)."""
    ctx.history.t0 = time.monotonic()
    workload.start()
    try:
        await asyncio.sleep(warmup_s)
        ctx.deadline = time.monotonic() + duration_s
        await fault(ctx)
        settled = await settle(ctx, 60)
        await asyncio.sleep(pause_s)
    finally:
        await workload.stop()
    return settled, await workload.drain()
