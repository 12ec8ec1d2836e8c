"""``python scripts/spurious_fencing.py [SECONDS] [BUSY_LOOPS]``: are the failover defaults too eager?

A three-node cluster with node/config.py's defaults (``EXTRA="--broker-session-timeout-ms 2000"``
adds node flags), a topic of 6 partitions (RF 3, min.insync.replicas 2), an acks=all producer
writing 100-byte records as fast as it can, and BUSY_LOOPS Python processes spinning on the same
cores (default 2: this 2-core machine flat out, as the test suite runs it). Nothing is killed,
paused or cut off, so every fence, controller election after the first, ISR shrink or stalled
metadata stream it counts in the node logs is spurious. Prints the counts and the cluster path.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ketch import aio
from node.cluster import LocalCluster

COUNTS = [
    ("session fences", r"session expired"),
    ("probe fences", r"refused a connection"),
    ("controller elections (the first is the start)", r"leads the quorum in term"),
    ("ISR shrinks", r"\(shrink"),
    ("stalled metadata streams", r"stalled at offset"),
]


async def produce(bootstrap: str, seconds: float) -> tuple[int, int]:
    async with aio.Admin(bootstrap) as admin:
        await admin.create_topics([aio.NewTopic("load", 6, 3, configs={"min.insync.replicas": "2"})])
    acked = errors = 0
    async with aio.Producer(bootstrap, linger_ms=5) as producer:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            futures = [await producer.send("load", b"x" * 100) for _ in range(200)]
            for future in futures:
                try:
                    await future
                    acked += 1
                except Exception:
                    errors += 1
            await asyncio.sleep(0.05)
    return acked, errors


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 180.0
    busy = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    root = Path(tempfile.mkdtemp(prefix="spurious-")) / "cluster"
    cluster = LocalCluster(root, 3, extra_args=os.environ.get("EXTRA", "").split())
    loops: list[subprocess.Popen[bytes]] = []
    try:
        cluster.start()
        cluster.wait_ready(60)
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
        acked, errors = asyncio.run(produce(cluster.bootstrap, seconds))
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
        cluster.close()
    text = "\n".join((root / f"node-{i}" / "node.log").read_text() for i in sorted(cluster.nodes))
    print(f"{seconds:.0f} s with {busy} busy loops: {acked} records acknowledged, {errors} failed")
    for name, pattern in COUNTS:
        print(f"{name}: {len(re.findall(pattern, text))}")
    print(root)


if __name__ == "__main__":
    main()
