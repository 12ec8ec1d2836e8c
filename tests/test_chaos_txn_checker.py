"""The transactional history checker (chaos/txn_checker.py) against synthetic histories.

Rules: ``Sim`` is a small model of partitions under transactions (append, markers,
the last stable offset, read_committed readers that stop at it and skip aborted
data) that writes the history a correct system would give. Each test plants one
anomaly in such a history and asserts the checker finds it; a Hypothesis test
drives the model through any sequence of begins, sends, commits, aborts, unknown
outcomes, fences and reads and asserts no anomaly. Pure: no cluster, no clock.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chaos import txn_checker

Key = tuple[str, int]


class Sim:
    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.t = 0.0
        self.ids = itertools.count()
        self.logs: dict[Key, list[tuple[str, str | None]]] = {}
        self.txns: dict[str, dict[str, Any]] = {}
        self.open: dict[str, str] = {}  # tid -> its open txn
        self.pos: dict[tuple[str, Key], int] = {}
        self.n = itertools.count()

    def op(self, f: str, type_: str, **fields: Any) -> dict[str, Any]:
        self.t = round(self.t + 0.01, 4)
        op = {"t": self.t, "f": f, "type": type_, **fields}
        self.ops.append(op)
        return op

    def init(self, tid: str) -> None:
        self.op("init", "invoke", proc=tid, tid=tid)
        if tid in self.open:  # the fencing abort
            self.txns[self.open.pop(tid)].update(closed=True, visible=False)

    def begin(self, tid: str) -> str:
        txn = f"{tid}-{next(self.n)}"
        self.txns[txn] = {"closed": False, "visible": False}
        self.open[tid] = txn
        self.op("txn", "begin", proc=tid, tid=tid, txn=txn)
        return txn

    def send(self, txn: str | None, topic: str, partition: int, value: str | None = None, **extra: Any) -> str:
        value = value or f"v{next(self.n)}"
        i = next(self.ids)
        fields = {"txn": txn} if txn else {}
        self.op("send", "invoke", id=i, proc="p", value=value, topic=topic, **fields, **extra)
        log = self.logs.setdefault((topic, partition), [])
        log.append((value, txn))
        self.op("send", "ok", id=i, proc="p", value=value, topic=topic, partition=partition, offset=len(log) - 1)
        return value

    def end(self, txn: str, commit: bool, outcome: str = "ok", visible: bool | None = None) -> None:
        self.op("end_txn", "invoke", proc="p", txn=txn, commit=commit)
        self.txns[txn].update(closed=True, visible=commit if visible is None else visible)
        self.open = {k: x for k, x in self.open.items() if x != txn}
        self.op("end_txn", outcome, proc="p", txn=txn, commit=commit)

    def _visible(self, txn: str | None) -> bool:
        return txn is None or bool(self.txns[txn]["visible"])

    def lso(self, key: Key) -> int:
        log = self.logs.get(key, [])
        return next((o for o, (_, txn) in enumerate(log) if txn and not self.txns[txn]["closed"]), len(log))

    def read(self, proc: str, topic: str, partition: int) -> None:
        key = (topic, partition)
        start = self.pos.get((proc, key), 0)
        end = self.lso(key)
        for offset in range(start, end):
            value, txn = self.logs[key][offset]
            if self._visible(txn):
                self.op(
                    "read",
                    "ok",
                    proc=proc,
                    iso="read_committed",
                    topic=topic,
                    partition=partition,
                    offset=offset,
                    value=value,
                )
        self.pos[(proc, key)] = max(start, end)

    def drain(self, skip: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        for (topic, partition), log in sorted(self.logs.items()):
            for offset, (value, txn) in enumerate(log):
                where = {"topic": topic, "partition": partition, "offset": offset, "value": value}
                self.op("read", "ok", proc="final-uncommitted", iso="read_uncommitted", **where)
                if self._visible(txn) and value not in skip:
                    self.op("read", "ok", proc="final", iso="read_committed", **where)
        topics = sorted({topic for topic, _ in self.logs})
        self.op("drain", "ok", proc="final", topics=topics)


def verdict(sim: Sim) -> txn_checker.TxnVerdict:
    return txn_checker.check(sim.ops)


def only(v: txn_checker.TxnVerdict, name: str) -> None:
    counts = v.counts()
    assert counts[name] > 0, counts
    assert all(n == 0 for k, n in counts.items() if k != name), counts


def committed_pair(sim: Sim, tid: str = "a") -> tuple[str, list[str]]:
    txn = sim.begin(tid)
    values = [sim.send(txn, "txn", 0), sim.send(txn, "txn", 1)]
    sim.end(txn, commit=True)
    return txn, values


def test_a_clean_history_has_no_anomaly_and_counts_outcomes() -> None:
    sim = Sim()
    sim.init("a")
    committed_pair(sim)
    aborted = sim.begin("a")
    sim.send(aborted, "txn", 0)
    sim.end(aborted, commit=False)
    unknown = sim.begin("a")
    sim.send(unknown, "txn", 1)
    sim.end(unknown, commit=True, outcome="unknown", visible=False)
    sim.read("r", "txn", 0)
    sim.read("r", "txn", 1)
    sim.drain()
    v = verdict(sim)
    assert v.safe, v.counts()
    assert (v.committed, v.aborted, v.unknown, v.open) == (1, 1, 1, 0)
    assert v.final_topics == ["txn"]


def test_aborted_read() -> None:
    sim = Sim()
    txn = sim.begin("a")
    value = sim.send(txn, "txn", 0)
    sim.end(txn, commit=False)
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value=value)
    sim.drain()
    only(verdict(sim), "aborted_reads")


def test_a_read_of_an_open_transaction_fenced_later_is_an_aborted_read() -> None:
    sim = Sim()
    txn = sim.begin("a")
    value = sim.send(txn, "txn", 0)
    sim.init("a")  # a new session fences the zombie: its transaction is aborted
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value=value)
    v = verdict(sim)
    assert v.open == 1
    only(v, "aborted_reads")


def test_read_uncommitted_reads_are_not_judged() -> None:
    sim = Sim()
    txn = sim.begin("a")
    value = sim.send(txn, "txn", 0)
    sim.end(txn, commit=False)
    sim.op("read", "ok", proc="r", iso="read_uncommitted", topic="txn", partition=0, offset=0, value=value)
    assert verdict(sim).safe


def test_lost_committed_write() -> None:
    sim = Sim()
    _, values = committed_pair(sim)
    sim.drain(skip={values[0], values[1]})
    v = verdict(sim)
    only(v, "lost")
    assert {x["value"] for x in v.lost} == set(values)


def test_a_committed_transaction_partly_in_the_final_drain_is_torn_and_lost() -> None:
    sim = Sim()
    _, values = committed_pair(sim)
    sim.drain(skip={values[1]})
    v = verdict(sim)
    assert [x["value"] for x in v.lost] == [values[1]]
    assert v.torn and v.torn[0]["how"] == "final drain"


def test_an_unknown_commit_may_go_either_way_but_not_half() -> None:
    for visible in (True, False):
        sim = Sim()
        txn = sim.begin("a")
        sim.send(txn, "txn", 0)
        sim.send(txn, "txn", 1)
        sim.end(txn, commit=True, outcome="unknown", visible=visible)
        sim.drain()
        assert verdict(sim).safe
    sim = Sim()
    txn = sim.begin("a")
    sim.send(txn, "txn", 0)
    half = sim.send(txn, "txn", 1)
    sim.end(txn, commit=True, outcome="unknown", visible=True)
    sim.drain(skip={half})
    only(verdict(sim), "torn")


def test_a_reader_that_saw_part_of_a_transaction_it_read_past_is_torn() -> None:
    sim = Sim()
    txn = sim.begin("a")
    first = sim.send(txn, "txn", 0)
    sim.send(txn, "txn", 0)
    sim.end(txn, commit=True)
    after = sim.send(None, "txn", 0)
    sim.drain()
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value=first)
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=2, value=after)
    v = verdict(sim)
    only(v, "torn")
    assert "saw part" in v.torn[0]["how"]


def test_a_reader_that_skipped_a_committed_transaction_is_torn() -> None:
    sim = Sim()
    before = sim.send(None, "txn", 0)
    committed_pair(sim)
    after = sim.send(None, "txn", 0)
    sim.drain()
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value=before)
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=2, value=after)
    v = verdict(sim)
    only(v, "torn")
    assert "skipped" in v.torn[0]["how"]


def test_reading_a_value_before_its_commit_was_invoked_is_read_past_open() -> None:
    sim = Sim()
    txn = sim.begin("a")
    value = sim.send(txn, "txn", 0)
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value=value)
    sim.end(txn, commit=True)
    sim.drain()
    v = verdict(sim)
    only(v, "read_past_open")
    assert "before its commit" in v.read_past_open[0]["how"]


def test_reading_above_another_open_transaction_is_read_past_open() -> None:
    sim = Sim()
    slow = sim.begin("a")
    sim.send(slow, "txn", 0)
    fast = sim.begin("b")
    value = sim.send(fast, "txn", 0)
    sim.end(fast, commit=True)
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=1, value=value)
    sim.end(slow, commit=False)
    sim.drain()
    v = verdict(sim)
    only(v, "read_past_open")
    assert v.read_past_open[0]["open_txn"] == slow


def test_consume_transform_produce_duplicate() -> None:
    sim = Sim()
    source = sim.send(None, "in", 0, ctp_input=True)
    for _ in range(2):
        txn = sim.begin("ctp-0")
        sim.send(txn, "out", 0, value=f"{source}@{txn}", input=source)
        sim.end(txn, commit=True)
    sim.drain()
    v = verdict(sim)
    only(v, "ctp_duplicates")
    assert v.ctp_duplicates == [{"input": source, "copies": 2}]


def test_an_aborted_copy_then_a_committed_one_is_no_duplicate() -> None:
    sim = Sim()
    source = sim.send(None, "in", 0, ctp_input=True)
    for commit in (False, True):
        txn = sim.begin("ctp-0")
        sim.send(txn, "out", 0, value=f"{source}@{txn}", input=source)
        sim.end(txn, commit=commit)
    sim.drain()
    v = verdict(sim)
    assert v.safe, v.counts()
    assert (v.ctp_inputs, v.ctp_outputs, v.ctp_unprocessed) == (1, 1, 0)


def test_duplicate_write() -> None:
    sim = Sim()
    value = sim.send(None, "txn", 0)
    sim.logs[("txn", 0)].append((value, None))  # stored twice
    sim.drain()
    only(verdict(sim), "duplicate_writes")


def test_a_phantom_is_an_aborted_read() -> None:
    sim = Sim()
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value="ghost")
    v = verdict(sim)
    only(v, "aborted_reads")
    assert v.aborted_reads[0]["how"] == "never sent"


TIDS = ["a", "b", "c"]
Step = st.one_of(
    st.tuples(st.just("begin"), st.sampled_from(TIDS)),
    st.tuples(st.just("send"), st.sampled_from(TIDS), st.sampled_from(["txn", "txn2"]), st.integers(0, 2)),
    st.tuples(st.just("end"), st.sampled_from(TIDS), st.sampled_from(["commit", "abort", "unknown-in", "unknown-out"])),
    st.tuples(st.just("init"), st.sampled_from(TIDS)),
    st.tuples(st.just("read"), st.sampled_from(["r0", "r1"]), st.sampled_from(["txn", "txn2"]), st.integers(0, 2)),
    st.tuples(st.just("plain"), st.sampled_from(["txn", "txn2"]), st.integers(0, 2)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(Step, max_size=60))
def test_generated_clean_histories_have_no_anomaly(steps: list[tuple[Any, ...]]) -> None:
    sim = Sim()
    for step in steps:
        kind = step[0]
        if kind == "begin" and step[1] not in sim.open:
            sim.begin(step[1])
        elif kind == "send" and step[1] in sim.open:
            sim.send(sim.open[step[1]], step[2], step[3])
        elif kind == "end" and step[1] in sim.open:
            how = step[2]
            txn = sim.open[step[1]]
            if how in ("commit", "abort"):
                sim.end(txn, commit=how == "commit")
            else:
                sim.end(txn, commit=True, outcome="unknown", visible=how == "unknown-in")
        elif kind == "init":
            sim.init(step[1])
        elif kind == "read":
            sim.read(step[1], step[2], step[3])
        elif kind == "plain":
            sim.send(None, step[1], step[2])
    for tid in list(sim.open):
        sim.end(sim.open[tid], commit=False)
    for key in sorted(sim.logs):
        sim.read("r0", *key)
    sim.drain()
    v = verdict(sim)
    assert v.safe, (v.counts(), v.to_dict())


def test_a_commit_answered_ok_after_a_newer_session_fenced_it_is_a_fenced_commit() -> None:
    sim = Sim()
    txn = sim.begin("a")
    sim.send(txn, "txn", 0)
    sim.op("init", "invoke", proc="a2", tid="a")
    sim.op("init", "ok", proc="a2", tid="a")
    sim.end(txn, commit=True)  # the zombie's commit must have been refused
    sim.drain()
    v = verdict(sim)
    assert v.fenced_commits and v.fenced_commits[0]["txn"] == txn


def test_a_zombie_commit_that_failed_is_aborted_and_must_stay_invisible() -> None:
    sim = Sim()
    txn = sim.begin("a")
    value = sim.send(txn, "txn", 0)
    sim.init("a")
    sim.op("init", "ok", proc="a", tid="a")
    sim.end(txn, commit=True, outcome="fail", visible=False)
    sim.drain()
    assert verdict(sim).safe
    sim.op("read", "ok", proc="r", iso="read_committed", topic="txn", partition=0, offset=0, value=value)
    only(verdict(sim), "aborted_reads")


def test_an_input_missing_from_the_output_is_lost_once_the_group_caught_up() -> None:
    sim = Sim()
    done = sim.send(None, "in", 0, ctp_input=True)
    sim.send(None, "in", 0, ctp_input=True)
    txn = sim.begin("ctp-0")
    sim.send(txn, "out", 0, value=f"{done}@{txn}", input=done)
    sim.end(txn, commit=True)
    sim.drain()
    v = verdict(sim)
    assert v.safe and v.ctp_unprocessed == 1  # the group may not have got there
    sim.op("ctp", "caught_up", proc="ctp-check")
    v = verdict(sim)
    only(v, "ctp_lost")
    assert v.ctp_caught_up


def test_a_read_above_a_transaction_past_its_timeout_is_no_read_past_open() -> None:
    sim = Sim()
    slow = sim.begin("a")
    sim.ops[-1]["timeout_ms"] = 1000  # the coordinator may abort it 1 s after the begin
    sim.send(slow, "txn", 0)
    fast = sim.begin("b")
    value = sim.send(fast, "txn", 0)
    sim.end(fast, commit=True)
    read = {"proc": "r", "iso": "read_committed", "topic": "txn", "partition": 0, "offset": 1, "value": value}
    sim.op("read", "ok", **read)
    assert verdict(sim).read_past_open  # 0.05 s after the begin: the transaction was open
    sim.t += 2.0
    sim.op("read", "ok", **{**read, "proc": "r2"})
    sim.end(slow, commit=False)  # its producer learns late
    sim.drain()
    assert [r["proc"] for r in verdict(sim).read_past_open] == ["r"]
