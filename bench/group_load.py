"""Group-coordinator load time after many offset commits, before and after compaction (issue 14).

    python -m bench.group_load [--commits 1000000] [--keys 1000] [--groups 10] [--json]
    python -m bench group-load ...        ketch perf group-load ...

One process, one temporary RocksDB, no node and no network; every step runs
the product's own code, and only the clock around it is the benchmark's:

1. Write. ``--commits`` offset commits, round-robin over ``--keys`` keys:
   ``--groups`` groups x ``keys / groups`` partitions of one topic (default
   10 x 100). Each commit is one call of the pure
   ``GroupCoordinator.commit_offsets`` (a simple commit: generation -1, as a
   consumer without group membership makes, so no join or sync is needed),
   whose records go through the group coordinator's driver
   (``GroupManager._append``: ``encode_record``, one batch per call, an
   acks=all append) into partition 0 of ``__consumer_offsets``: a real leader
   ``Partition`` (one replica) over a ``RocksPartitionLog`` in a
   ``NodeStore``. So the log holds what a coordinator writes for these
   commits: one batch of one record per commit. The topic has one partition
   (``offsets_topic_num_partitions=1``), so every group lives on it.
2. Load before: the driver's load (``InternalTopicCoordinators._load``:
   1 MiB reads from the log start, ``GroupManager.decode_chunk`` per read,
   then ``GroupManager.build``), timed from start to coordinator.
3. Clean: the bounds the node's ``LogCleaner`` reads for a replica (high
   watermark, last stable offset, generation, live producers, the topic's
   ``CleanerConfig``: cleanup.policy=compact and the node defaults), then
   ``node.log_cleaner.clean_once``, timed.
4. Load after, timed as in 2. The committed offset of every group and
   partition must be the same in both loads and in the writer's own
   coordinator; the tool exits 1 otherwise.
5. Load once more after RocksDB compacted the log's column family: the
   cleaner deletes each removed batch's key, and until RocksDB's own
   compaction drops those delete tombstones a read over the cleaned range
   steps over every one of them. Step 4 is what a coordinator sees right after
   a pass; this step shows how much of it is those tombstones.

The harness (bench/offsets_harness.py, imported only when the tool runs, so
``ketch`` itself does not load the node to build its command line) says
which real objects run those code paths.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.offsets_harness import LogFigures

SUMMARY = "group-coordinator load time after N offset commits, before and after compaction"
TOPIC = "orders"  # the topic whose offsets the groups commit


@dataclass(frozen=True)
class GroupLoadResult:
    commits: int
    keys: int
    groups: int
    partitions_per_group: int
    write_seconds: float
    before: LogFigures
    after: LogFigures
    load_before_seconds: float
    load_after_seconds: float
    load_after_rocksdb_compaction_seconds: float
    cleaning_seconds: float
    records_removed: int
    bytes_removed: int
    identical: bool  # every committed offset the same in both loads and in the writer

    def json(self) -> str:
        return json.dumps({"tool": "group-load", **asdict(self)})


def run_group_load(commits: int, keys: int, groups: int, out: Any = sys.stdout) -> GroupLoadResult:
    if commits < 1 or keys < 1 or groups < 1 or keys % groups:
        raise ValueError(
            f"need commits, keys, groups >= 1 and keys divisible by groups; got {commits}, {keys}, {groups}"
        )
    from bench.offsets_harness import TopicPartition, committed, offsets_partition

    per_group = keys // groups
    names = [f"group-{g}" for g in range(groups)]
    with offsets_partition() as offsets:
        started = time.perf_counter()
        for i in range(commits):
            key = i % keys
            offsets.commit(names[key // per_group], TopicPartition(TOPIC, key % per_group), i // keys)
        write_s = time.perf_counter() - started
        assert offsets.writer.coordinator is not None
        written = committed(offsets.writer.coordinator)
        print(f"wrote {commits:,} commits in {write_s:.1f} s", file=out, flush=True)
        before = offsets.figures()
        loaded, load_before = offsets.load()
        state_before = committed(loaded)
        print(f"loaded {before.batches:,} batches in {load_before:.2f} s", file=out, flush=True)
        stats, clean_s = offsets.clean()
        after = offsets.figures()
        loaded, load_after = offsets.load()
        state_after = committed(loaded)
        offsets.compact_rocksdb()
        loaded, load_compacted = offsets.load()
        state_compacted = committed(loaded)
    return GroupLoadResult(
        commits=commits,
        keys=keys,
        groups=groups,
        partitions_per_group=per_group,
        write_seconds=round(write_s, 3),
        before=before,
        after=after,
        load_before_seconds=round(load_before, 3),
        load_after_seconds=round(load_after, 3),
        load_after_rocksdb_compaction_seconds=round(load_compacted, 3),
        cleaning_seconds=round(clean_s, 3),
        records_removed=stats.records_removed,
        bytes_removed=stats.bytes_removed,
        identical=state_before == state_after == state_compacted == written and sum(map(len, written.values())) == keys,
    )


def report(result: GroupLoadResult, command: str) -> str:
    b, a = result.before, result.after
    rows = [
        ("log bytes", f"{b.bytes:,}", f"{a.bytes:,}"),
        ("batches", f"{b.batches:,}", f"{a.batches:,}"),
        ("records", f"{b.records:,}", f"{a.records:,}"),
        ("load seconds", f"{result.load_before_seconds:.3f}", f"{result.load_after_seconds:.3f}"),
    ]
    lines = [
        f"__consumer_offsets-0: {result.commits:,} offset commits on {result.keys:,} keys "
        f"({result.groups} groups x {result.partitions_per_group} partitions), one batch per commit",
        f"{'':14} {'before':>14} {'after':>14}",
        *(f"{name:14} {x:>14} {y:>14}" for name, x, y in rows),
        f"load after RocksDB compacted the log (the cleaner's delete tombstones gone): "
        f"{result.load_after_rocksdb_compaction_seconds:.3f} s",
        f"cleaning: {result.cleaning_seconds:.3f} s, {result.records_removed:,} records and "
        f"{result.bytes_removed:,} bytes removed (writing took {result.write_seconds:.1f} s)",
        "committed offsets: " + ("identical before and after" if result.identical else "DIFFER"),
        f"command: {command}",
    ]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--commits", type=int, default=1_000_000, help="offset commits to write (default 1000000)")
    parser.add_argument("--keys", type=int, default=1000, help="distinct (group, partition) keys (default 1000)")
    parser.add_argument("--groups", type=int, default=10, help="groups the keys are spread over (default 10)")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    parser.set_defaults(handler=handler)


def handler(args: argparse.Namespace) -> int:
    command = f"python -m bench.group_load --commits {args.commits} --keys {args.keys} --groups {args.groups}"
    try:
        result = run_group_load(args.commits, args.keys, args.groups)
    except ValueError as exc:
        print(f"group-load: {exc}", file=sys.stderr, flush=True)
        return 2
    print(report(result, command), flush=True)
    if args.json:
        print(result.json(), flush=True)
    return 0 if result.identical else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.group_load", description=SUMMARY)
    add_arguments(parser)
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
