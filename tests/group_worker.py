"""A consumer-group member as its own process, for tests/test_group_integration.py (kill -9 needs a process).

``python -m tests.group_worker --bootstrap B --group G --topic T --dir D --name N [options]``

It consumes ``T`` in group ``G`` with the blocking ``ketch.Consumer`` and
manual commits, and writes three files in ``D``:

- ``N.records``: one line per processed record, ``partition offset value``,
  written (and flushed to the OS, which survives kill -9) *before* the commit
  that covers it: at-least-once.
- ``N.events``: JSON lines: every assignment change (with, for each new
  partition, its position and the group's committed offset at that moment)
  and every acknowledged commit.
- ``N.state``: JSON ``{"assignment": [...], "time": ...}``, replaced
  atomically whenever the assignment changes.

After every polled batch it sleeps ``--batch-delay-ms`` (processing time),
then commits exactly the offsets it processed; a ``CommitFailedError`` (the
group rebalanced) is logged and the records will be processed again by their
next owner. SIGTERM closes the consumer (which leaves the group).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import ketch
from ketch import TopicPartition
from ketch.errors import KetchError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--name", required=True)
    parser.add_argument("--strategy", default="range")
    parser.add_argument("--session-timeout-ms", type=int, default=3000)
    parser.add_argument("--heartbeat-interval-ms", type=int, default=300)
    parser.add_argument("--max-poll-records", type=int, default=20)
    parser.add_argument("--batch-delay-ms", type=int, default=20)
    args = parser.parse_args(argv)

    stop = False

    def on_term(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    base = args.dir / args.name
    records = open(f"{base}.records", "a", buffering=1)  # noqa: SIM115 - closed at the end
    events = open(f"{base}.events", "a", buffering=1)  # noqa: SIM115

    def event(kind: str, **fields: Any) -> None:
        events.write(json.dumps({"event": kind, "time": time.time(), **fields}) + "\n")

    consumer = ketch.Consumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        client_id=args.name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        partition_assignment_strategy=args.strategy,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        max_poll_records=args.max_poll_records,
        request_timeout_ms=5000,
        retry_backoff_ms=50,
        fetch_max_wait_ms=100,
    )

    def save_state() -> None:
        tmp = Path(f"{base}.state.tmp")
        tmp.write_text(json.dumps({"assignment": sorted(consumer.assignment()), "time": time.time()}))
        os.replace(tmp, f"{base}.state")

    class Listener:
        def on_partitions_assigned(self, tps: set[TopicPartition]) -> None:
            starts = {}
            for tp in sorted(tps):
                committed = consumer.committed(tp)
                starts[str(tp.partition)] = {"position": consumer.position(tp), "committed": committed}
            event("assigned", partitions=sorted(tp.partition for tp in tps), starts=starts)
            save_state()

        def on_partitions_revoked(self, tps: set[TopicPartition]) -> None:
            event("revoked", partitions=sorted(tp.partition for tp in tps))
            save_state()

        def on_partitions_lost(self, tps: set[TopicPartition]) -> None:
            event("lost", partitions=sorted(tp.partition for tp in tps))
            save_state()

    consumer.subscribe([args.topic], listener=Listener())
    event("started", pid=os.getpid())
    try:
        while not stop:
            batch = consumer.poll(timeout_ms=200)
            if not batch:
                continue
            processed: dict[TopicPartition, int] = {}
            for tp, recs in batch.items():
                for r in recs:
                    records.write(f"{tp.partition} {r.offset} {(r.value or b'').decode()}\n")
                processed[tp] = recs[-1].offset + 1
            records.flush()
            time.sleep(args.batch_delay_ms / 1000)
            try:
                consumer.commit(processed)
                event("committed", offsets={str(tp.partition): off for tp, off in processed.items()})
            except KetchError as e:
                event("commit-failed", error=str(e), offsets={str(tp.partition): o for tp, o in processed.items()})
    finally:
        consumer.close()
        event("closed")
        records.close()
        events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
