"""Faults of the transactional workload: coordinator kills and delayed, duplicated EndTxn and markers.

Rules (as in chaos/faults.py: inject → hold → heal in ``finally``, ``rounds`` between):
- ``kill-txn-coordinator``: kill -9 of the node leading the ``__transaction_state``
  partition of one of the workload's transactional ids (FindCoordinator key_type 1,
  asked of any live node), restarted after 1-4 s.
- ``kill-group-coordinator``: the same for the consume-transform-produce group's
  coordinator (FindCoordinator key_type 0).
- ``delay-end-txn``: for 3-6 s at a time the gRPC proxy (chaos/grpc_proxy.py, on the
  advertised listeners and the transactional producers' connections) holds every
  EndTxn and WriteTxnMarkers call for 0.2-1.5 s and sends a copy of it again 0.5-4 s
  later: late duplicates of the call that ended transaction (pid, e), arriving while
  (pid, e+1) runs, must decide nothing (the epoch bump, KIP-890).
These scenarios are listed with ``--workload transactional`` only; the workload's
existing faults (kill-leader, pause-leader, ...) aim at partition 0 of topic ``txn``.
"""

from __future__ import annotations

import asyncio

import grpc

from chaos.faults import SCENARIOS, Context, Fault, Scenario, hold, restart, rounds
from ketch.api.v1 import ketch_pb2 as pb
from ketch.api.v1 import ketch_pb2_grpc

TXN_KEY, GROUP_KEY = 1, 0


def find_coordinator(ctx: Context, key: str, key_type: int) -> int | None:
    for i in ctx.cluster.ids:
        if not ctx.cluster.alive(i):
            continue
        try:
            with grpc.insecure_channel(ctx.cluster.node(i).bootstrap) as channel:
                response = ketch_pb2_grpc.KetchStub(channel).FindCoordinator(
                    pb.FindCoordinatorRequest(group_id=key, key_type=key_type), timeout=2.0
                )
        except grpc.RpcError:
            continue
        if response.node_id > 0 and ctx.cluster.alive(response.node_id):
            return int(response.node_id)
    return None


def kill_coordinator(name: str, key_type: int) -> Fault:
    async def fault(ctx: Context) -> None:
        keys = ctx.txn_ids if key_type == TXN_KEY else ctx.group_ids

        async def one() -> None:
            key = ctx.rng.choice(keys)
            node = await asyncio.to_thread(find_coordinator, ctx, key, key_type)
            if node is None:
                await asyncio.sleep(0.5)
                return
            ctx.start(name, node, key=key)
            try:
                ctx.cluster.node(node).kill()
                await hold(ctx, 1.0, 4.0)
            finally:
                await restart(ctx, node)
                ctx.end(name, node)

        if not keys:
            raise RuntimeError(f"{name} needs the transactional workload")
        await rounds(ctx, one)

    return fault


async def delay_end_txn(ctx: Context) -> None:
    proxy = ctx.cluster.grpc_proxy
    if proxy is None:
        raise RuntimeError("delay-end-txn needs the cluster's gRPC proxy (Scenario.grpc_proxy)")

    async def one() -> None:
        ctx.start("delay-end-txn", None)
        try:
            proxy.disturb()
            await hold(ctx, 3.0, 6.0)
        finally:
            proxy.calm()
            ctx.end("delay-end-txn", None)
            ctx.log(f"           proxy so far: {dict(proxy.counts)}")

    await rounds(ctx, one, gap=(0.5, 1.5))


TXN_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario(
            "kill-txn-coordinator",
            kill_coordinator("kill-txn-coordinator", TXN_KEY),
            "kill -9 of a transactional id's coordinator (the __transaction_state leader), restarted after 1-4 s",
        ),
        Scenario(
            "kill-group-coordinator",
            kill_coordinator("kill-group-coordinator", GROUP_KEY),
            "kill -9 of the consume-transform-produce group's coordinator, restarted after 1-4 s",
        ),
        Scenario(
            "delay-end-txn",
            delay_end_txn,
            "EndTxn and WriteTxnMarkers held 0.2-1.5 s and sent again 0.5-4 s later (gRPC proxy)",
            grpc_proxy=True,
        ),
    ]
}
ALL_SCENARIOS: dict[str, Scenario] = {**SCENARIOS, **TXN_SCENARIOS}
