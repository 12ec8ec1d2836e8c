"""The chaos history checker (chaos/checker.py) against synthetic histories.

Rules: each test plants one kind of anomaly in an otherwise clean history and
asserts the checker finds exactly it; a Hypothesis test builds clean histories
(any interleaving of sends, outcomes, reads, faults) and asserts no anomaly.
Pure: no cluster, no clock.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from chaos import checker, report, runner


class H:
    """A tiny history builder: a clean log of one partition unless told otherwise."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []
        self.t = 0.0
        self.next_id = 0
        self.log: list[str] = []  # what the partition holds, by offset

    def op(self, f: str, type_: str, **fields: Any) -> dict[str, Any]:
        self.t += 0.01
        op = {"t": round(self.t, 4), "f": f, "type": type_, **fields}
        self.ops.append(op)
        return op

    def send(self, value: str, outcome: str | None = "ok", offset: int | None = None, write: bool = True) -> int:
        i = self.next_id
        self.next_id += 1
        self.op("send", "invoke", id=i, proc="producer-0", value=value)
        if write:
            self.log.append(value)
        if outcome == "ok":
            self.op("send", "ok", id=i, proc="producer-0", value=value, partition=0, offset=self._at(value, offset))
        elif outcome is not None:
            self.op("send", outcome, id=i, proc="producer-0", value=value, error="x")
        return i

    def _at(self, value: str, offset: int | None) -> int:
        return offset if offset is not None else len(self.log) - 1 - self.log[::-1].index(value)

    def read(self, proc: str, offset: int, value: str | None = None) -> None:
        self.op("read", "ok", proc=proc, partition=0, offset=offset, value=value or self.log[offset])

    def final(self) -> None:
        for offset, value in enumerate(self.log):
            self.read("final", offset, value)


def clean() -> H:
    h = H()
    for n in range(5):
        h.send(f"v{n}")
    for offset in range(5):
        h.read("consumer-0", offset)
    return h


def test_a_clean_history_has_no_anomaly() -> None:
    h = clean()
    h.final()
    v = checker.check(h.ops)
    assert v.safe and v.acknowledged == 5 and not v.duplicates and v.final_read


def test_an_acknowledged_record_never_read_is_lost() -> None:
    h = clean()
    h.final()
    h.send("gone")
    h.log.pop()  # acknowledged at offset 5, then truncated away
    v = checker.check(h.ops)
    assert [x["value"] for x in v.lost] == ["gone"] and not v.safe


def test_an_acknowledged_offset_holding_another_value_is_lost_and_inconsistent() -> None:
    h = clean()
    h.send("a", offset=5, write=False)  # acknowledged at 5 ...
    h.log.append("b")  # ... but offset 5 holds another value; "a" sits at 6 (moved)
    h.log.append("a")
    h.final()
    v = checker.check(h.ops)
    assert [x["value"] for x in v.lost] == ["a"]
    assert [(x["offset"], sorted(x["values"])) for x in v.inconsistent_offsets] == [(5, ["a", "b"])]


def test_loss_is_only_judged_after_a_final_read() -> None:
    h = clean()
    h.send("late")
    v = checker.check(h.ops)
    assert not v.final_read and not v.lost


def test_two_readers_disagreeing_on_an_offset_is_inconsistent() -> None:
    h = clean()
    h.final()
    h.read("consumer-1", 2, "v9")
    v = checker.check(h.ops)
    assert [x["offset"] for x in v.inconsistent_offsets] == [2]
    assert any(x["value"] == "v9" for x in v.phantoms)  # v9 was never sent either


def test_a_value_at_two_offsets_is_a_duplicate_not_an_error() -> None:
    h = clean()
    h.send("retry", outcome="unknown")  # first attempt written, the client retried
    h.send("retry", outcome="ok")
    h.final()
    v = checker.check(h.ops)
    assert [(x["value"], len(x["at"])) for x in v.duplicates] == [("retry", 2)]
    assert v.safe


def test_a_read_of_a_value_never_sent_is_a_phantom() -> None:
    h = clean()
    h.log.append("ghost")
    h.final()
    v = checker.check(h.ops)
    assert [(x["value"], x["how"]) for x in v.phantoms] == [("ghost", "never sent")]


def test_a_read_of_a_value_whose_send_failed_is_a_phantom() -> None:
    h = clean()
    h.send("refused", outcome="fail")  # the broker said it refused it, yet it is there
    h.final()
    v = checker.check(h.ops)
    assert [(x["value"], x["how"]) for x in v.phantoms] == [("refused", "its send failed")]
    assert v.failed == 1


def test_a_read_of_an_unknown_send_is_fine() -> None:
    h = clean()
    h.send("maybe", outcome="unknown")
    h.send("never-completed", outcome=None)
    h.final()
    v = checker.check(h.ops)
    assert v.safe and v.unknown == 2


def test_reads_going_back_in_one_reader_are_out_of_order() -> None:
    h = clean()
    h.read("consumer-0", 3)
    h.final()
    v = checker.check(h.ops)
    assert [(x["proc"], x["offset"], x["after"]) for x in v.out_of_order] == [("consumer-0", 3, 4)]


def test_a_repeated_read_is_out_of_order_too() -> None:
    h = clean()
    h.read("consumer-0", 4)
    assert [x["offset"] for x in checker.check(h.ops).out_of_order] == [4]


def test_a_committed_offset_going_backwards_is_found() -> None:
    h = clean()
    for offset in (1, 3, 3, 2, 4):
        h.op("commit", "ok", proc="consumer-0", group="g", partition=0, offset=offset)
    h.op("commit", "ok", proc="consumer-0", group="other", partition=0, offset=0)
    v = checker.check(h.ops)
    assert [(x["group"], x["offset"], x["after"]) for x in v.commits_backwards] == [("g", 2, 3)]


def test_unavailability_runs_from_a_fault_to_the_next_ack_of_a_send_invoked_after_it() -> None:
    ops = [
        {"t": 1.0, "f": "send", "type": "invoke", "id": 0, "value": "a"},
        {"t": 2.0, "f": "fault", "type": "start", "name": "kill-leader", "node": 1},
        {"t": 2.5, "f": "send", "type": "ok", "id": 0, "value": "a", "partition": 0, "offset": 0},  # sent before
        {"t": 3.0, "f": "send", "type": "invoke", "id": 1, "value": "b"},
        {"t": 6.0, "f": "send", "type": "ok", "id": 1, "value": "b", "partition": 0, "offset": 1},
        {"t": 7.0, "f": "fault", "type": "start", "name": "kill-leader", "node": 2},
        {"t": 9.0, "f": "send", "type": "invoke", "id": 2, "value": "c"},
    ]
    v = checker.check(ops)
    assert [(u["seconds"], u["recovered"]) for u in v.unavailability] == [(4.0, True), (2.0, False)]
    assert v.unavailability_summary() == {"p50": 3.0, "p99": 4.0, "max": 4.0, "count": 2}


def test_percentile_is_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert checker.percentile(values, 50) == 50.0
    assert checker.percentile(values, 99) == 99.0
    assert checker.percentile([7.0], 99) == 7.0
    assert checker.summarize([]) == {"p50": None, "p99": None, "max": None, "count": 0}


def test_a_report_renders_a_table_and_a_self_contained_page() -> None:
    h = clean()
    h.op("fault", "start", name="kill-leader", node=1)
    h.op("fault", "end", name="kill-leader", node=1)
    h.final()
    v = checker.check(h.ops)
    result = {
        "scenario": "kill-leader",
        "acks": "all",
        "seed": 1,
        "duration_s": 1.0,
        "acknowledged": v.acknowledged,
        "failed": 0,
        "unknown": 0,
        "lost": 0,
        "duplicates": 0,
        "inconsistent_offsets": 0,
        "phantoms": 0,
        "out_of_order": 0,
        "faults": [{"name": "kill-leader"}],
        "safe": True,
        "drained": True,
        "unavailability_s": v.unavailability_summary(),
        "timeline": runner.timeline(h.ops, 0.05),
    }
    text = report.table([result])
    assert "kill-leader" in text and "ok" in text.splitlines()[-1]
    page = report.html_page([result])
    assert "<svg" in page and "<script" not in page and "kill-leader node 1" in page


@st.composite
def clean_histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Sends with any outcomes (a failed send is never written), a reader that reads a prefix
    in order, fault windows anywhere, commits that never go back, then a final read."""
    h = H()
    commit = 0
    for n in range(draw(st.integers(0, 30))):
        action = draw(st.sampled_from(["ok", "ok", "unknown", "unknown-unwritten", "fail", "fault", "commit"]))
        if action == "fault":
            h.op("fault", "start", name="f", node=draw(st.integers(1, 3)))
        elif action == "commit":
            commit += draw(st.integers(0, 3))
            h.op("commit", "ok", proc="c", group="g", partition=0, offset=commit)
        elif action == "unknown-unwritten":
            h.send(f"v{n}", outcome="unknown", write=False)
        else:
            h.send(f"v{n}", outcome=action, write=action != "fail")
    for offset in range(draw(st.integers(0, len(h.log)))):
        h.read("consumer-0", offset)
    h.final()
    return h.ops


@settings(max_examples=200, deadline=None)
@given(clean_histories())
def test_clean_histories_have_no_anomalies(ops: list[dict[str, Any]]) -> None:
    v = checker.check(ops)
    assert v.safe, v.to_dict()
    assert not v.duplicates
    assert all(u["seconds"] >= 0 for u in v.unavailability)


def test_the_cli_lists_scenarios_and_checks_a_recorded_history(tmp_path: Any, capsys: Any) -> None:
    from chaos.__main__ import main
    from chaos.faults import SCENARIOS
    from chaos.history import History, load

    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in SCENARIOS)
    recorder = History(tmp_path / "history.jsonl")
    h = clean()
    h.final()
    for op in h.ops:
        recorder.record(op["f"], op["type"], **{k: v for k, v in op.items() if k not in ("t", "f", "type")})
    recorder.close()
    assert len(load(tmp_path / "history.jsonl")) == len(h.ops)
    assert main(["check", str(tmp_path / "history.jsonl")]) == 0
    with open(tmp_path / "history.jsonl", "a") as f:
        f.write('{"t": 9, "f": "read", "type": "ok", "proc": "final", "partition": 0, "offset": 9, "value": "x"}\n')
    assert main(["check", str(tmp_path / "history.jsonl")]) == 1
