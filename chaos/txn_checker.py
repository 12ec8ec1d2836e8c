"""The transactional history checker: pure functions from a recorded history to anomalies and figures.

The history (chaos/history.py, written by chaos/txn_workload.py) has these operations
besides ``fault`` (every one with ``t``, ``f``, ``type``, ``proc``):

- ``init``: ``invoke`` with ``tid`` — a producer session (InitProducerId) for a
  transactional id starts; it fences the id's older sessions and aborts their open
  transaction. ``ok`` when it was answered.
- ``txn``: ``begin`` with ``tid``, ``txn`` (unique in the run) and ``timeout_ms`` (the
  producer's ``transaction.timeout.ms``, if known).
- ``send``: ``invoke`` with ``id``, ``value`` (unique in the run), ``topic`` and, inside
  a transaction, ``txn``; consume-transform-produce outputs also carry ``input`` (the
  input value copied). Completions ``ok`` (``topic``, ``partition``, ``offset``),
  ``fail`` (definitely not written) or ``unknown``, with the same ``id``.
- ``end_txn``: ``invoke`` with ``txn`` and ``commit`` (true: commit_transaction, false:
  abort_transaction), then ``ok``, ``fail`` (definitely not done) or ``unknown``.
- ``read``: ``ok`` with ``topic``, ``partition``, ``offset``, ``value`` and ``iso``
  (``read_committed`` or ``read_uncommitted``); readers read each partition in offset
  order from offset 0. ``proc == "final"`` is the read_committed drain after healing,
  ``"final-uncommitted"`` the read_uncommitted one.
- ``drain``: ``ok`` with ``proc`` and ``topics`` — that drain read those topics to their end.

A transaction's outcome: ``committed`` (a commit answered ok), ``unknown`` (a commit was
invoked and not answered ok: it may have committed or aborted), ``aborted`` (only an abort
was invoked, or a commit failed definitely) or ``open`` (never ended by its producer: a
fence or the transaction timeout aborts it). It is *closed* (may be decided) from the
earliest of its first ``end_txn`` invoke, the next ``init`` invoke of its transactional
id (the fencing abort) and ``begin + timeout_ms`` (the coordinator's timeout abort: the
timeout runs from the first AddPartitionsToTxn, which comes after the begin). That last
bound assumes the coordinator's clock runs at the harness's pace, so a clock-jump run
may see reads past an open transaction that are timeout aborts.

Anomalies (each needs the data it names; without a completed drain the final-drain
checks are skipped):
- aborted read: a read_committed reader returned a value of an aborted or open
  transaction, or a value no send invoked.
- lost committed write: a value of a committed transaction (its send not ``fail``)
  that the final read_committed drain of its topic does not return.
- torn transaction: a committed or unknown transaction of which the final drain
  returns some values but not all; or a read_committed reader that, in a partition it
  read from below to above all of a transaction's offsets, saw part of it, or none of
  it though the final drain shows it.
- read past an open transaction: a read_committed read, at time t, of an offset at
  or above a value of a transaction not closed at t (its own value before its commit
  was invoked, or another transaction's value at a lower offset of the partition):
  the last stable offset must hold readers below an open transaction.
- consume-transform-produce duplicate: one input value copied into two or more
  records the final read_committed drain returns.
- duplicate write: one value at two places in the final read_uncommitted drain
  (idempotent sends store a value once).
- consume-transform-produce loss: an acknowledged input value missing from the final
  read_committed output, once the history says the group caught up (``ctp``
  ``caught_up``: its committed offsets reached the end of the input topic).
- fenced commit: a commit answered ok although a newer session of the same
  transactional id had its InitProducerId answered after the transaction began and
  before the commit was invoked (a zombie must be fenced).

Nothing here does I/O or reads a clock: the same history always gives the same verdict.
"""

from __future__ import annotations

import bisect
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

Op = dict[str, Any]
Place = tuple[str, int, int]  # topic, partition, offset
READ_COMMITTED = "read_committed"
FINAL, FINAL_UNCOMMITTED = "final", "final-uncommitted"
ANOMALIES = (
    "aborted_reads",
    "lost",
    "torn",
    "read_past_open",
    "ctp_duplicates",
    "duplicate_writes",
    "fenced_commits",
    "ctp_lost",
)


@dataclass
class Txn:
    txn: str
    tid: str
    proc: str
    begin_t: float
    values: list[str] = field(default_factory=list)
    commit_t: float | None = None  # first commit invoke
    end_t: float | None = None  # first end_txn invoke (commit or abort)
    committed_ok: bool = False
    commit_failed: bool = False
    close_t: float | None = None
    timeout_t: float | None = None  # the earliest time the coordinator may time it out

    @property
    def outcome(self) -> str:
        if self.committed_ok:
            return "committed"
        if self.commit_t is not None and not self.commit_failed:
            return "unknown"
        if self.end_t is not None:
            return "aborted"
        return "open"


@dataclass
class TxnVerdict:
    transactions: int = 0
    committed: int = 0
    aborted: int = 0
    unknown: int = 0
    open: int = 0
    sends: int = 0
    reads: int = 0
    ctp_inputs: int = 0
    ctp_outputs: int = 0
    ctp_unprocessed: int = 0
    final_topics: list[str] = field(default_factory=list)
    aborted_reads: list[dict[str, Any]] = field(default_factory=list)
    lost: list[dict[str, Any]] = field(default_factory=list)
    torn: list[dict[str, Any]] = field(default_factory=list)
    read_past_open: list[dict[str, Any]] = field(default_factory=list)
    ctp_duplicates: list[dict[str, Any]] = field(default_factory=list)
    duplicate_writes: list[dict[str, Any]] = field(default_factory=list)
    fenced_commits: list[dict[str, Any]] = field(default_factory=list)
    ctp_lost: list[dict[str, Any]] = field(default_factory=list)
    ctp_caught_up: bool = False

    @property
    def safe(self) -> bool:
        return not any(getattr(self, name) for name in ANOMALIES)

    def counts(self) -> dict[str, int]:
        return {name: len(getattr(self, name)) for name in ANOMALIES}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["safe"] = self.safe
        return out


def check(history: Iterable[Op]) -> TxnVerdict:
    ops = list(history)
    v = TxnVerdict()
    txns: dict[str, Txn] = {}
    inits: dict[str, list[float]] = defaultdict(list)
    inits_ok: dict[str, list[float]] = defaultdict(list)
    sends: dict[Any, Op] = {}  # id -> invoke
    send_outcome: dict[Any, Op] = {}
    value_send: dict[str, Op] = {}
    reads: list[Op] = []
    final_topics: set[str] = set()
    for op in ops:
        f, kind = op.get("f"), op.get("type")
        if f == "init" and kind == "invoke":
            inits[op["tid"]].append(op["t"])
        elif f == "init" and kind == "ok":
            inits_ok[op["tid"]].append(op["t"])
        elif f == "txn" and kind == "begin":
            txns[op["txn"]] = Txn(op["txn"], op.get("tid", ""), op.get("proc", ""), op["t"])
            if op.get("timeout_ms") is not None:
                txns[op["txn"]].timeout_t = op["t"] + op["timeout_ms"] / 1000
        elif f == "send":
            if kind == "invoke":
                sends[op["id"]] = op
                value_send[op["value"]] = op
                t = txns.get(op.get("txn", ""))
                if t is not None:
                    t.values.append(op["value"])
            else:
                send_outcome[op["id"]] = op
        elif f == "end_txn":
            t = txns.get(op.get("txn", ""))
            if t is None:
                continue
            commit = bool(op.get("commit"))
            if kind == "invoke":
                t.end_t = op["t"] if t.end_t is None else t.end_t
                if commit and t.commit_t is None:
                    t.commit_t = op["t"]
            elif commit and kind == "ok":
                t.committed_ok = True
            elif commit and kind == "fail":
                t.commit_failed = True
        elif f == "read" and kind == "ok":
            reads.append(op)
        elif f == "ctp" and kind == "caught_up":
            v.ctp_caught_up = True
        elif f == "drain" and kind == "ok" and op.get("proc") == FINAL:
            final_topics.update(op.get("topics", []))
    v.final_topics = sorted(final_topics)
    for t in txns.values():
        later_inits = [i for i in inits.get(t.tid, []) if i >= t.begin_t]
        candidates = [x for x in (t.end_t, min(later_inits, default=None), t.timeout_t) if x is not None]
        t.close_t = min(candidates) if candidates else None
        setattr(v, t.outcome, getattr(v, t.outcome) + 1)
        if t.committed_ok and t.commit_t is not None:
            fenced_at = [i for i in inits_ok.get(t.tid, []) if t.begin_t < i < t.commit_t]
            if fenced_at:
                v.fenced_commits.append({"txn": t.txn, "tid": t.tid, "fenced_t": fenced_at[0], "commit_t": t.commit_t})
    v.transactions = len(txns)
    v.sends = len(sends)
    failed_values = {sends[i]["value"] for i, o in send_outcome.items() if o.get("type") == "fail" and i in sends}
    value_txn = {value: op["txn"] for value, op in value_send.items() if op.get("txn") in txns}

    # Where each value sits: acknowledged places, then places any reader saw it at.
    place: dict[str, Place] = {}
    for i, o in send_outcome.items():
        if o.get("type") == "ok" and i in sends:
            topic = str(o.get("topic", sends[i].get("topic", "")))
            place[sends[i]["value"]] = (topic, o["partition"], o["offset"])
    for r in reads:
        place.setdefault(r["value"], (r.get("topic", ""), r["partition"], r["offset"]))

    committed_reads = [r for r in reads if r.get("iso") == READ_COMMITTED]
    v.reads = len(committed_reads)
    final_reads = [r for r in committed_reads if r.get("proc") == FINAL]
    final_values = Counter(r["value"] for r in final_reads)

    _aborted_reads(v, committed_reads, value_send, value_txn, txns)
    _read_past_open(v, committed_reads, place, value_txn, txns)
    if final_topics:
        _final(v, txns, final_values, final_topics, failed_values, value_send)
    _reader_torn(v, committed_reads, place, txns, final_values, final_topics, failed_values, value_send)
    _ctp(v, value_send, send_outcome, sends, final_reads, final_topics)
    _duplicate_writes(v, reads)
    return v


def _aborted_reads(
    v: TxnVerdict, reads: list[Op], value_send: dict[str, Op], value_txn: dict[str, str], txns: dict[str, Txn]
) -> None:
    for r in reads:
        value = r["value"]
        if value not in value_send:
            v.aborted_reads.append({"value": value, "proc": r.get("proc"), "t": r.get("t"), "how": "never sent"})
            continue
        txn = value_txn.get(value)
        if txn is None:
            continue  # a plain (non-transactional) value, e.g. the consume-transform-produce input
        outcome = txns[txn].outcome
        if outcome in ("aborted", "open"):
            v.aborted_reads.append(
                {
                    "value": value,
                    "txn": txn,
                    "outcome": outcome,
                    "proc": r.get("proc"),
                    "t": r.get("t"),
                    "at": _where(r),
                }
            )


def _where(r: Op) -> list[Any]:
    return [r.get("topic", ""), r["partition"], r["offset"]]


def _read_past_open(
    v: TxnVerdict, reads: list[Op], place: dict[str, Place], value_txn: dict[str, str], txns: dict[str, Txn]
) -> None:
    # Per partition: transactional values by offset and, for each prefix, the latest close time
    # (None = never closed as far as the history shows: then it cannot be timed; skipped).
    by_partition: dict[tuple[str, int], list[tuple[int, float, str]]] = defaultdict(list)
    for value, txn in value_txn.items():
        t = txns[txn]
        if value in place and t.close_t is not None:
            topic, partition, offset = place[value]
            by_partition[(topic, partition)].append((offset, t.close_t, txn))
    prefix: dict[tuple[str, int], tuple[list[int], list[tuple[float, int, str]]]] = {}
    for key, entries in by_partition.items():
        entries.sort()
        offsets, best = [], []
        running: tuple[float, int, str] = (float("-inf"), -1, "")
        for offset, close_t, txn in entries:
            if close_t > running[0]:
                running = (close_t, offset, txn)
            offsets.append(offset)
            best.append(running)
        prefix[key] = (offsets, best)
    for r in reads:
        if r.get("proc") == FINAL:
            continue
        own = value_txn.get(r["value"])
        if own is not None:
            commit_t = txns[own].commit_t
            if commit_t is not None and r["t"] < commit_t:
                v.read_past_open.append(
                    {
                        "value": r["value"],
                        "txn": own,
                        "proc": r.get("proc"),
                        "t": r["t"],
                        "commit_invoked_t": commit_t,
                        "at": _where(r),
                        "how": "read before its commit was invoked",
                    }
                )
                continue
        key = (r.get("topic", ""), r["partition"])
        if key not in prefix:
            continue
        offsets, best = prefix[key]
        n = bisect.bisect_left(offsets, r["offset"])  # values strictly below the read offset
        if n and best[n - 1][0] > r["t"]:
            close_t, offset, txn = best[n - 1]
            v.read_past_open.append(
                {
                    "value": r["value"],
                    "proc": r.get("proc"),
                    "t": r["t"],
                    "at": _where(r),
                    "open_txn": txn,
                    "open_at": offset,
                    "closed_t": close_t,
                    "how": "read above a transaction still open",
                }
            )


def _expected(t: Txn, failed_values: set[str], value_send: dict[str, Op], topics: set[str]) -> list[str]:
    return [x for x in t.values if x not in failed_values and value_send[x].get("topic", "") in topics]


def _final(
    v: TxnVerdict,
    txns: dict[str, Txn],
    final_values: Counter[str],
    topics: set[str],
    failed_values: set[str],
    value_send: dict[str, Op],
) -> None:
    for t in txns.values():
        expected = _expected(t, failed_values, value_send, topics)
        if not expected or t.outcome not in ("committed", "unknown"):
            continue
        seen = [x for x in expected if x in final_values]
        if t.outcome == "committed":
            for x in expected:
                if x not in final_values:
                    v.lost.append({"value": x, "txn": t.txn, "topic": value_send[x].get("topic")})
        if seen and len(seen) < len(expected):
            v.torn.append(
                {
                    "txn": t.txn,
                    "outcome": t.outcome,
                    "how": "final drain",
                    "seen": len(seen),
                    "of": len(expected),
                    "missing": sorted(set(expected) - set(seen))[:5],
                }
            )


def _reader_torn(
    v: TxnVerdict,
    reads: list[Op],
    place: dict[str, Place],
    txns: dict[str, Txn],
    final_values: Counter[str],
    topics: set[str],
    failed_values: set[str],
    value_send: dict[str, Op],
) -> None:
    seen: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for r in reads:
        if r.get("proc") in (FINAL, FINAL_UNCOMMITTED):
            continue
        seen[(r.get("proc", ""), r.get("topic", ""), r["partition"])].add(r["offset"])
    if not seen:
        return
    # Per partition, each transaction's offsets there and whether the final drain shows it.
    parts: dict[tuple[str, int], list[tuple[Txn, list[int], bool]]] = defaultdict(list)
    for t in txns.values():
        expected = [x for x in t.values if x not in failed_values and x in place]
        by_key: dict[tuple[str, int], list[int]] = defaultdict(list)
        for x in expected:
            topic, partition, offset = place[x]
            by_key[(topic, partition)].append(offset)
        visible = any(x in final_values for x in expected)
        for key, offs in by_key.items():
            parts[key].append((t, sorted(offs), visible))
    for (proc, topic, partition), offsets in sorted(seen.items()):
        lo, hi = min(offsets), max(offsets)
        for t, offs, visible in parts.get((topic, partition), []):
            if offs[0] < lo or offs[-1] > hi:
                continue
            got = [o for o in offs if o in offsets]
            if got and len(got) < len(offs):
                v.torn.append(
                    {
                        "txn": t.txn,
                        "outcome": t.outcome,
                        "how": f"reader {proc} saw part",
                        "at": [topic, partition],
                        "seen": len(got),
                        "of": len(offs),
                    }
                )
            elif not got and visible and topic in topics:
                v.torn.append(
                    {
                        "txn": t.txn,
                        "outcome": t.outcome,
                        "how": f"reader {proc} skipped it",
                        "at": [topic, partition],
                        "seen": 0,
                        "of": len(offs),
                    }
                )
            elif got and not visible and topic in topics and t.outcome == "unknown":
                v.lost.append(
                    {
                        "txn": t.txn,
                        "topic": topic,
                        "partition": partition,
                        "how": f"reader {proc} saw it, the final drain does not",
                    }
                )


def _ctp(
    v: TxnVerdict,
    value_send: dict[str, Op],
    send_outcome: dict[Any, Op],
    sends: dict[Any, Op],
    final_reads: list[Op],
    topics: set[str],
) -> None:
    outputs: Counter[str] = Counter()
    for r in final_reads:
        op = value_send.get(r["value"])
        if op is not None and "input" in op:
            outputs[op["input"]] += 1
    v.ctp_outputs = sum(outputs.values())
    for value, n in sorted(outputs.items()):
        if n > 1:
            v.ctp_duplicates.append({"input": value, "copies": n})
    inputs = {
        sends[i]["value"]
        for i, o in send_outcome.items()
        if o.get("type") == "ok" and i in sends and sends[i].get("ctp_input")
    }
    v.ctp_inputs = len(inputs)
    if topics:
        unprocessed = sorted(inputs - set(outputs))
        v.ctp_unprocessed = len(unprocessed)
        if v.ctp_caught_up:
            v.ctp_lost = [
                {"input": value, "how": "acknowledged, committed past, not in the output"} for value in unprocessed
            ]


def _duplicate_writes(v: TxnVerdict, reads: list[Op]) -> None:
    at: dict[str, set[Place]] = defaultdict(set)
    for r in reads:
        if r.get("proc") == FINAL_UNCOMMITTED:
            at[r["value"]].add((r.get("topic", ""), r["partition"], r["offset"]))
    for value, places in sorted(at.items()):
        if len(places) > 1:
            v.duplicate_writes.append({"value": value, "at": sorted(places)})
