"""One chaos run: cluster up → workload → faults until the deadline → heal → drain → check.

Rules:
- The topic has one partition, replication factor 3 (or the node count, if smaller)
  and ``min.insync.replicas`` 2, so every fault aims at one leader and its ISR.
- The workload runs for ``warmup_s`` before the first fault and on through healing;
  producers stop only after the cluster settled (full ISR), then the final drain
  reads the whole partition for the checker.
- Whatever happens, the faults heal (chaos/faults.py) and ``ChaosCluster.close()``
  ends every node process, the proxy and mounts (``finally``).
- The result is the checker's verdict plus the run's parameters and timeline data;
  chaos/report.py renders it. The history stays in ``WORKDIR/history.jsonl``.
- ``run(..., workload="transactional")`` hands the run to chaos/txn_runner.py (the
  transactional workload, its topics, faults and checker); the default is this one.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import random
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from chaos import checker, faults
from chaos.cluster import ChaosCluster
from chaos.history import History
from chaos.workload import Workload, direct
from coordinator.metadata.topic_config import MIN_INSYNC_REPLICAS
from ketch import aio

TOPIC = "chaos"


async def run_async(
    scenario: str,
    duration_s: float,
    seed: int,
    *,
    nodes: int = 3,
    acks: str = "all",
    workdir: Path,
    rate: float = 100.0,
    producers: int = 3,
    idempotence: bool = True,
    warmup_s: float = 3.0,
    tls: bool = False,
    timeouts: str = "test",
    log: Any = print,
) -> dict[str, Any]:
    spec = faults.SCENARIOS[scenario]
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = ChaosCluster(
        workdir / "cluster", nodes, tmpfs_mb=spec.tmpfs_mb, faketime=spec.faketime, tls=tls, timeouts=timeouts
    )
    history = History(workdir / "history.jsonl")
    started = time.monotonic()
    drained = False
    settled = False
    ctx: faults.Context | None = None
    try:
        await asyncio.to_thread(cluster.start)
        log(f"cluster up in {time.monotonic() - started:.1f}s ({workdir})")
        rf = min(3, nodes)
        async with direct(
            aio.Admin(cluster.bootstrap, **cluster.security.client_kwargs()), cluster.real_address
        ) as admin:
            await admin.create_topics([aio.NewTopic(TOPIC, 1, rf, configs={MIN_INSYNC_REPLICAS: str(min(2, rf))})])
        ctx = faults.Context(cluster, history, TOPIC, rng, deadline=0.0, log=log)
        await faults.settle(ctx, 30)
        workload = Workload(
            cluster.bootstrap,
            TOPIC,
            history,
            cluster.real_address,
            acks=acks,
            producers=producers,
            rate=rate,
            idempotence=idempotence,
            security=cluster.security,
        )
        settled, drained = await faults.run_window(
            ctx, workload, spec.fault, warmup_s=warmup_s, duration_s=duration_s, pause_s=1.0
        )
    finally:
        history.close()
        await asyncio.to_thread(cluster.close)
    verdict = checker.check(history.ops)
    return {
        "scenario": scenario,
        "seed": seed,
        "acks": acks,
        "idempotence": idempotence,
        "nodes": nodes,
        "tls": tls,
        "duration_s": duration_s,
        "wall_s": round(time.monotonic() - started, 1),
        "settled": settled,
        "drained": drained,
        "acknowledged": verdict.acknowledged,
        "failed": verdict.failed,
        "unknown": verdict.unknown,
        "reads": verdict.reads,
        "lost": len(verdict.lost),
        "duplicates": len(verdict.duplicates),
        "inconsistent_offsets": len(verdict.inconsistent_offsets),
        "phantoms": len(verdict.phantoms),
        "out_of_order": len(verdict.out_of_order),
        "commits_backwards": len(verdict.commits_backwards),
        # Idempotent producers promise no duplicates: then one is a safety anomaly too.
        "safe": verdict.safe and not (idempotence and verdict.duplicates),
        "faults": ctx.faults if ctx else [],
        "timeouts": timeouts,
        "unavailability_s": verdict.unavailability_summary(),
        # kill-controller: seconds from each kill to a live node leading the quorum, as the harness saw
        # it (chaos/faults.py), and to the first "is the active controller" line in the node logs
        "new_controller_s": checker.summarize(
            [float(f["new_controller_s"]) for f in (ctx.faults if ctx else []) if f.get("new_controller_s") is not None]  # type: ignore[arg-type]
        ),
        "active_controller_s": checker.summarize(
            activations_after(ctx.faults if ctx else [], workdir / "cluster" / "logs")
        ),
        "unavailability": verdict.unavailability,
        "examples": {
            "lost": verdict.lost[:10],
            "inconsistent_offsets": verdict.inconsistent_offsets[:10],
            "phantoms": verdict.phantoms[:10],
            "duplicates": verdict.duplicates[:10],
            "out_of_order": verdict.out_of_order[:10],
        },
        "history": str(workdir / "history.jsonl"),
        "timeline": timeline(history.ops),
    }


ACTIVE_LINE = re.compile(r"^(\S+ \S+) INFO ketch\.controller: node (\d+) is the active controller")


def activations_after(faults: list[dict[str, Any]], logs: Path) -> list[float]:
    """For each fault with a ``wall`` time (kill-controller), seconds until a node other than the
    killed one logged that it is the active controller (node logs carry wall-clock time)."""
    active: list[tuple[float, int]] = []
    for path in sorted(logs.glob("node-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            m = ACTIVE_LINE.match(line)
            if m:
                when = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                active.append((when, int(m.group(2))))
    active.sort()
    out = []
    for f in faults:
        wall = f.get("wall")
        if not isinstance(wall, float):
            continue
        after = [t for t, node in active if t >= wall and node != f.get("node")]
        if after:
            out.append(round(after[0] - wall, 3))
    return out


def timeline(ops: list[dict[str, Any]], bucket_s: float = 0.5) -> dict[str, Any]:
    """Per-bucket counts of acknowledged, failed and unknown sends, and the fault windows."""
    end = max((op["t"] for op in ops), default=0.0)
    n = int(end / bucket_s) + 1
    series = {"ok": [0] * n, "fail": [0] * n, "unknown": [0] * n}
    windows: list[dict[str, Any]] = []
    open_: dict[tuple[Any, Any], float] = {}
    for op in ops:
        if op["f"] == "send" and op["type"] in series and op["t"] >= 0:
            series[op["type"]][int(op["t"] / bucket_s)] += 1
        elif op["f"] == "fault":
            key = (op.get("name"), op.get("node"))
            if op["type"] == "start":
                open_[key] = op["t"]
            elif key in open_:
                windows.append({"name": key[0], "node": key[1], "start": open_.pop(key), "end": op["t"]})
    windows += [{"name": k[0], "node": k[1], "start": t, "end": end} for k, t in open_.items()]
    return {"bucket_s": bucket_s, "end": end, **series, "windows": windows}


def run(
    scenario: str,
    duration_s: float,
    seed: int,
    workdir: Path | None = None,
    workload: str = "plain",
    **kwargs: Any,
) -> dict[str, Any]:
    """``workload="transactional"`` runs chaos/txn_runner.py (its own topics, checker and result)."""
    if workdir is None:
        workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{scenario}-"))
    if workload == "transactional":
        from chaos import txn_runner

        return asyncio.run(txn_runner.run_async(scenario, duration_s, seed, workdir=workdir, **kwargs))
    return asyncio.run(run_async(scenario, duration_s, seed, workdir=workdir, **kwargs))


def dump(result: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(result, indent=2, default=str))
