"""The offline history checker: pure functions from a recorded history to anomalies and figures.

A history is a list of operations (dicts, one JSON line each in ``history.jsonl``; see
chaos/history.py for the writer). Every operation has ``f`` (what), ``type`` (its
phase or outcome), ``proc`` (the client that did it) and ``t`` (seconds since the
run began, monotonic). The kinds:

- ``send``: ``invoke`` (``id``, ``value``), then one completion with the same ``id``:
  ``ok`` (``partition``, ``offset``), ``fail`` (definitely not written: the broker
  refused it before appending and the client did not retry) or ``unknown`` (may or
  may not have been written: a timeout, a lost connection, a retried send).
- ``read``: ``ok`` with ``partition``, ``offset``, ``value`` — one record a consumer
  returned. Every reader reads a partition in offset order from where it started.
- ``commit``: ``ok`` with ``group``, ``partition``, ``offset`` — a committed consumer
  offset (consumer groups are a later issue; the checker is ready for them).
- ``fault``: ``start`` / ``end`` with ``name`` (and ``node``): a fault window.

Rules (what counts as an anomaly):
- lost: a send acknowledged (``ok``) whose value no read ever returned, once the
  history contains a final read of the whole partition (``proc == "final"``); or whose
  acknowledged offset was read holding another value (``moved``, reported with lost).
- inconsistent offset: one (partition, offset) seen holding two different values,
  across all reads and acknowledgements.
- phantom: a value read that no send invoked, or whose send ended in ``fail``.
- duplicate: one value read at two or more offsets (producer retries without
  idempotence make these; they are counted, not errors).
- out of order: a reader returned offsets of a partition that did not strictly increase.
- commit went backwards: a group's committed offset for a partition decreased.
- unavailability after a fault: from the fault's start to the completion of the first
  acknowledged send invoked at or after that start (none: the run's end, flagged).

Nothing here does I/O or reads a clock: the same history always gives the same verdict.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

Op = dict[str, Any]


@dataclass
class Verdict:
    acknowledged: int = 0
    failed: int = 0
    unknown: int = 0
    reads: int = 0
    lost: list[dict[str, Any]] = field(default_factory=list)
    inconsistent_offsets: list[dict[str, Any]] = field(default_factory=list)
    phantoms: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[dict[str, Any]] = field(default_factory=list)
    out_of_order: list[dict[str, Any]] = field(default_factory=list)
    commits_backwards: list[dict[str, Any]] = field(default_factory=list)
    unavailability: list[dict[str, Any]] = field(default_factory=list)
    final_read: bool = False

    @property
    def safe(self) -> bool:
        """No safety anomaly (duplicates are allowed: the producer is not idempotent)."""
        return not (
            self.lost or self.inconsistent_offsets or self.phantoms or self.out_of_order or self.commits_backwards
        )

    def unavailability_summary(self) -> dict[str, float | None]:
        return summarize([u["seconds"] for u in self.unavailability])

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["safe"] = self.safe
        out["unavailability_s"] = self.unavailability_summary()
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def summarize(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    return {
        "p50": round(statistics.median(values), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "count": len(values),
    }


def check(history: Iterable[Op]) -> Verdict:
    ops = list(history)
    v = Verdict()
    invoked: dict[int, Op] = {}
    outcome: dict[int, Op] = {}
    sent_values: dict[str, int] = {}
    reads: list[Op] = []
    commits: list[Op] = []
    fault_starts: list[Op] = []
    for op in ops:
        f, kind = op.get("f"), op.get("type")
        if f == "send":
            if kind == "invoke":
                invoked[op["id"]] = op
                sent_values[op["value"]] = op["id"]
            else:
                outcome[op["id"]] = op
        elif f == "read" and kind == "ok":
            reads.append(op)
        elif f == "commit" and kind == "ok":
            commits.append(op)
        elif f == "fault" and kind == "start":
            fault_starts.append(op)
    acked = {i: o for i, o in outcome.items() if o["type"] == "ok"}
    failed_values = {invoked[i]["value"] for i, o in outcome.items() if o["type"] == "fail" and i in invoked}
    v.acknowledged = len(acked)
    v.failed = len(failed_values)
    v.unknown = sum(1 for o in outcome.values() if o["type"] == "unknown") + sum(1 for i in invoked if i not in outcome)
    v.reads = len(reads)
    v.final_read = any(r.get("proc") == "final" for r in reads)

    # What each (partition, offset) was seen holding, by reads and by acknowledgements.
    holds: dict[tuple[int, int], dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    read_at: dict[str, set[tuple[int, int]]] = defaultdict(set)
    for r in reads:
        key = (r["partition"], r["offset"])
        holds[key][r["value"]].append(f"read by {r.get('proc')}")
        read_at[r["value"]].add(key)
    for i, o in acked.items():
        value = invoked[i]["value"] if i in invoked else str(o.get("value"))
        holds[(o["partition"], o["offset"])][value].append(f"ack to {o.get('proc')}")
    for (partition, offset), values in sorted(holds.items()):
        if len(values) > 1:
            v.inconsistent_offsets.append(
                {"partition": partition, "offset": offset, "values": {k: sorted(set(w)) for k, w in values.items()}}
            )

    if v.final_read:
        final_at: dict[tuple[int, int], str] = {
            (r["partition"], r["offset"]): r["value"] for r in reads if r.get("proc") == "final"
        }
        for i, o in sorted(acked.items()):
            value = invoked[i]["value"] if i in invoked else str(o.get("value"))
            key = (o["partition"], o["offset"])
            if value not in read_at:
                v.lost.append({"value": value, "partition": key[0], "offset": key[1], "how": "never read"})
            elif key in final_at and final_at[key] != value:
                v.lost.append(
                    {"value": value, "partition": key[0], "offset": key[1], "how": f"offset holds {final_at[key]}"}
                )

    for value, places in sorted(read_at.items()):
        if value not in sent_values:
            v.phantoms.append({"value": value, "at": sorted(places), "how": "never sent"})
        elif value in failed_values:
            v.phantoms.append({"value": value, "at": sorted(places), "how": "its send failed"})
        if len(places) > 1:
            v.duplicates.append({"value": value, "at": sorted(places)})

    last_read: dict[tuple[str, int], int] = {}
    for r in reads:
        key = (r.get("proc", ""), r["partition"])
        previous = last_read.get(key)
        if previous is not None and r["offset"] <= previous:
            v.out_of_order.append(
                {"proc": key[0], "partition": key[1], "offset": r["offset"], "after": previous, "t": r.get("t")}
            )
        last_read[key] = r["offset"]

    last_commit: dict[tuple[str, int], int] = {}
    for c in commits:
        key = (c.get("group", ""), c["partition"])
        previous = last_commit.get(key)
        if previous is not None and c["offset"] < previous:
            v.commits_backwards.append(
                {"group": key[0], "partition": key[1], "offset": c["offset"], "after": previous, "t": c.get("t")}
            )
        last_commit[key] = max(c["offset"], previous if previous is not None else c["offset"])

    v.unavailability = unavailability(fault_starts, invoked, acked, ops)
    return v


def unavailability(fault_starts: list[Op], invoked: dict[int, Op], acked: dict[int, Op], ops: list[Op]) -> list[Op]:
    """Per fault start: seconds until the first acknowledged send invoked at or after it."""
    end_t = max((op.get("t", 0.0) for op in ops), default=0.0)
    acks = sorted((invoked[i]["t"], o["t"]) for i, o in acked.items() if i in invoked)
    out = []
    for fault in fault_starts:
        t0 = fault["t"]
        done = [acked_t for sent_t, acked_t in acks if sent_t >= t0]
        first = min(done) if done else None
        out.append(
            {
                "fault": fault.get("name"),
                "node": fault.get("node"),
                "t": t0,
                "seconds": round((first if first is not None else end_t) - t0, 3),
                "recovered": first is not None,
            }
        )
    return out
