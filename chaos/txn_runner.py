"""One transactional chaos run: cluster up → transactional workload → faults → heal → drains → check.

Rules (as chaos/runner.py, which hands ``--workload transactional`` runs to ``run_async``):
- Topics ``txn`` (3 partitions), ``txn2`` (2), ``ctp-in`` (2) and ``ctp-out`` (2), replication
  factor 3 (or the node count) and ``min.insync.replicas`` 2; faults that aim at a
  partition leader aim at ``txn``-0.
- The workload (chaos/txn_workload.py) runs ``warmup_s`` before the first fault and on
  through healing; after it stops, the read_uncommitted and read_committed drains read
  every partition of ``txn``, ``txn2`` and ``ctp-out`` to its end.
- The verdict is chaos/txn_checker.py's: ``safe`` only with 0 of every anomaly (aborted
  reads, lost committed writes, torn transactions, reads past an open transaction,
  consume-transform-produce duplicates and losses, duplicate writes, commits of fenced
  sessions).
- ``reader_isolation="read_uncommitted"`` is the control run's planted bug: readers that
  claim read_committed but read uncommitted data must show aborted reads.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

from chaos import faults, txn_checker
from chaos.cluster import ChaosCluster
from chaos.history import History
from chaos.txn_faults import ALL_SCENARIOS
from chaos.txn_workload import GROUP, TOPIC_PARTITIONS, TXN_TOPIC, TxnWorkload
from chaos.workload import direct
from coordinator.metadata.topic_config import MIN_INSYNC_REPLICAS
from ketch import aio

COLUMNS = [
    ("scenario", "scenario"),
    ("seed", "seed"),
    ("duration_s", "secs"),
    ("transactions", "txns"),
    ("committed", "commit"),
    ("aborted", "abort"),
    ("unknown", "unknown"),
    ("reads", "reads"),
    ("ctp_outputs", "ctp-out"),
    ("aborted_reads", "ABORTED-READ"),
    ("lost", "LOST"),
    ("torn", "TORN"),
    ("read_past_open", "PAST-OPEN"),
    ("ctp_duplicates", "CTP-DUP"),
    ("duplicate_writes", "DUP"),
    ("fenced_commits", "FENCED"),
    ("ctp_lost", "CTP-LOST"),
    ("faults", "faults"),
]


async def run_async(
    scenario: str,
    duration_s: float,
    seed: int,
    *,
    nodes: int = 3,
    workdir: Path,
    rate: float = 10.0,
    producers: int = 2,
    ctp_members: int = 2,
    reader_isolation: str = "read_committed",
    warmup_s: float = 3.0,
    log: Any = print,
    **_: Any,
) -> dict[str, Any]:
    spec = ALL_SCENARIOS[scenario]
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = ChaosCluster(workdir / "cluster", nodes, grpc_proxy=spec.grpc_proxy)
    history = History(workdir / "history.jsonl")
    started = time.monotonic()
    drained = settled = False
    ctx: faults.Context | None = None
    proxy_counts: dict[str, int] = {}
    try:
        await asyncio.to_thread(cluster.start)
        log(f"cluster up in {time.monotonic() - started:.1f}s ({workdir})")
        rf = min(3, nodes)
        configs = {MIN_INSYNC_REPLICAS: str(min(2, rf))}
        async with direct(aio.Admin(cluster.bootstrap), cluster.real_address) as admin:
            await admin.create_topics([aio.NewTopic(t, n, rf, configs=configs) for t, n in TOPIC_PARTITIONS.items()])
        workload = TxnWorkload(
            cluster.bootstrap,
            history,
            cluster.real_address,
            client_address=cluster.client_address,
            seed=seed,
            producers=producers,
            ctp_members=ctp_members,
            rate=rate,
            reader_isolation=reader_isolation,
        )
        ctx = faults.Context(
            cluster,
            history,
            TXN_TOPIC,
            rng,
            deadline=0.0,
            log=log,
            txn_ids=workload.transactional_ids,
            group_ids=[GROUP],
        )
        await faults.settle(ctx, 30)
        settled, drained = await faults.run_window(
            ctx, workload, spec.fault, warmup_s=warmup_s, duration_s=duration_s, pause_s=2.0
        )
    finally:
        history.close()
        if cluster.grpc_proxy is not None:
            proxy_counts = dict(cluster.grpc_proxy.counts)
        await asyncio.to_thread(cluster.close)
    verdict = txn_checker.check(history.ops)
    counts = verdict.counts()
    return {
        "workload": "transactional",
        "scenario": scenario,
        "seed": seed,
        "nodes": nodes,
        "duration_s": duration_s,
        "reader_isolation": reader_isolation,
        "wall_s": round(time.monotonic() - started, 1),
        "settled": settled,
        "drained": drained,
        "transactions": verdict.transactions,
        "committed": verdict.committed,
        "aborted": verdict.aborted,
        "unknown": verdict.unknown,
        "open": verdict.open,
        "sends": verdict.sends,
        "reads": verdict.reads,
        "ctp_inputs": verdict.ctp_inputs,
        "ctp_outputs": verdict.ctp_outputs,
        "ctp_unprocessed": verdict.ctp_unprocessed,
        "ctp_caught_up": verdict.ctp_caught_up,
        **counts,
        "safe": verdict.safe,
        "faults": ctx.faults if ctx else [],
        "proxy": proxy_counts,
        "examples": {name: getattr(verdict, name)[:10] for name in txn_checker.ANOMALIES},
        "history": str(workdir / "history.jsonl"),
    }


def table(results: list[dict[str, Any]]) -> str:
    """One row per transactional run (pure rendering, like chaos/report.py)."""
    header = [title for _, title in COLUMNS] + ["verdict"]
    rows = []
    for r in results:
        verdict = "ok" if r.get("safe") and r.get("drained") else ("UNSAFE" if not r.get("safe") else "incomplete")
        cells = [str(len(r.get(k) or [])) if k == "faults" else str(r.get(k)) for k, _ in COLUMNS]
        rows.append([*cells, verdict])
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
