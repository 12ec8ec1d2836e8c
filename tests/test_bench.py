"""``ketch perf produce|consume|suite`` against a real node: the figures add up.

Small counts, so the test is quick; no assertion depends on how fast this
machine is. What is checked: every record sent is counted (acknowledged,
then consumed back), bytes match the record size, rates are positive,
latency percentiles are ordered, and the human-readable lines have
kafka-producer-perf-test's shape.
"""

from __future__ import annotations

import gc
import json
import re
import time
from typing import Any

import pytest

from bench.run import main as bench_main
from ketch import Admin, Consumer, TopicPartition
from ketch.cli import main as ketch_main
from node.process import NodeProcess

SUMMARY = re.compile(
    r"^(\d+) records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency, "
    r"[\d.]+ ms 50th, [\d.]+ ms 95th, [\d.]+ ms 99th, [\d.]+ ms 99.9th\.$",
    re.MULTILINE,
)
WINDOW = re.compile(
    r"^\d+ records sent, [\d.]+ records/sec \([\d.]+ MB/sec\), [\d.]+ ms avg latency, [\d.]+ ms max latency\.$",
    re.MULTILINE,
)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = ketch_main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def last_json(out: str) -> dict[str, Any]:
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return figures


def check_produce(figures: dict[str, Any], records: int, size: int) -> None:
    assert figures["tool"] == "produce"
    assert figures["records"] == records
    assert figures["errors"] == 0
    assert figures["bytes"] == records * size
    assert figures["records_per_sec"] > 0 and figures["mb_per_sec"] > 0 and figures["elapsed_s"] > 0
    assert 0 < figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"] <= figures["p999_ms"]
    assert figures["p999_ms"] <= figures["max_latency_ms"]
    assert 0 < figures["avg_latency_ms"] <= figures["max_latency_ms"]


def check_consume(figures: dict[str, Any], records: int, size: int) -> None:
    assert figures["tool"] == "consume"
    assert figures["records"] == records
    assert figures["bytes"] == records * size
    assert figures["records_per_sec"] > 0 and figures["mb_per_sec"] > 0 and figures["elapsed_s"] > 0


def test_produce_then_consume(node: NodeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    b = f"--bootstrap={node.bootstrap}"
    gc.unfreeze()
    try:
        code, out, err = run(
            capsys,
            "perf",
            "produce",
            b,
            "--topic=bench",
            "--num-records=3000",
            "--record-size=200",
            "--partitions=3",
            "--json",
        )
        frozen = gc.get_freeze_count()  # the tool froze its start-up (bench/produce.py)
    finally:
        gc.unfreeze()  # this is pytest's process
    assert code == 0, err
    assert frozen > 10_000, frozen
    assert "created topic bench with 3 partition(s)" in out
    summary = SUMMARY.search(out)
    assert summary is not None, out
    assert summary.group(1) == "3000"
    check_produce(last_json(out), 3000, 200)

    code, out, err = run(capsys, "perf", "consume", b, "--topic=bench", "--messages=3000", "--json")
    assert code == 0, err
    assert re.search(r"^3000 records consumed, [\d.]+ MB, [\d.]+ MB/sec, [\d.]+ records/sec", out, re.MULTILINE), out
    check_consume(last_json(out), 3000, 200)

    # without --messages: whatever the topic holds when the tool starts
    code, out, err = run(capsys, "perf", "consume", b, "--topic=bench", "--json")
    assert code == 0, err
    assert "reading the 3000 records bench holds" in out
    check_consume(last_json(out), 3000, 200)


def test_throttled_run_prints_progress_lines(node: NodeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    b = f"--bootstrap={node.bootstrap}"
    code, out, err = run(
        capsys,
        "perf",
        "produce",
        b,
        "--topic=slow",
        "--num-records=300",
        "--record-size=10",
        "--throughput=1000",  # >= 0.3 s by construction, so several 0.1 s windows
        "--acks=all",
        "--compression=zstd",
        "--report-interval=0.1",
        "--json",
    )
    assert code == 0, err
    assert WINDOW.search(out), out
    check_produce(last_json(out), 300, 10)


def test_consume_gives_up_after_timeout(node: NodeProcess, capsys: pytest.CaptureFixture[str]) -> None:
    b = f"--bootstrap={node.bootstrap}"
    assert run(capsys, "perf", "produce", b, "--topic=few", "--num-records=10")[0] == 0
    code, out, err = run(capsys, "perf", "consume", b, "--topic=few", "--messages=20", "--timeout-ms=300")
    assert code == 1
    assert "10 records consumed" in out
    assert "exiting after 10 of 20 records" in err

    code, _out, err = run(capsys, "perf", "consume", b, "--topic=missing")
    assert code == 1 and "UNKNOWN_TOPIC_OR_PARTITION" in err


def test_suite_starts_a_node_and_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--workload=400x100", "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    assert "node stopped (exit 0)" in out
    assert re.search(r"^\[1\] +produce acks=1, 400 x 100 B ", out, re.MULTILINE), out
    assert re.search(r"^\[2\] +consume, 400 x 100 B ", out, re.MULTILINE), out
    assert "[1] ketch perf produce --bootstrap=" in out
    produce, consume = json.loads(out.strip().splitlines()[-1])
    check_produce(produce, 400, 100)
    check_consume(consume, 400, 100)


def test_compare_tls_runs_plaintext_then_mutual_tls_and_prints_the_cost(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--workload=300x100", "--quiet", "--compare-tls"]) == 0
    out = capsys.readouterr().out
    assert "mutual TLS on every connection" in out
    assert "The cost of TLS (one run, same machine):" in out
    rows = re.findall(r"^\[(\d)\] +(produce acks=1|consume), 300 x 100 B +([\d,]+) +([\d,]+) +([\d.]+)$", out, re.M)
    assert [(r[0], r[1]) for r in rows] == [("1", "produce acks=1"), ("2", "consume")], out
    assert all(float(r[4]) > 0 for r in rows)


def test_transactional_produce_commits_every_transaction_size_records(
    node: NodeProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    b = f"--bootstrap={node.bootstrap}"
    code, out, err = run(
        capsys,
        "perf",
        "produce",
        b,
        "--topic=txbench",
        "--num-records=250",
        "--record-size=20",
        "--acks=all",
        "--transactional-id=bench-tx",
        "--transaction-size=100",
        "--json",
    )
    assert code == 0, err
    check_produce(last_json(out), 250, 20)
    # Three transactions (100, 100, 50), all committed: read_committed sees every record.
    with Consumer(bootstrap_servers=node.bootstrap, isolation_level="read_committed") as consumer:
        consumer.assign([TopicPartition("txbench", 0)])
        consumer.seek_to_beginning()
        seen = 0
        deadline = time.monotonic() + 30
        while seen < 250 and time.monotonic() < deadline:
            seen += sum(len(records) for records in consumer.poll(timeout_ms=200).values())
    assert seen == 250
    with Admin(bootstrap_servers=node.bootstrap) as admin:  # CompleteCommit follows the markers
        deadline = time.monotonic() + 10
        while (state := admin.describe_transactions(["bench-tx"])[0].state) != "CompleteCommit":
            assert time.monotonic() < deadline, state
            time.sleep(0.1)


def test_follower_fetch_times_a_fetch_with_and_without_a_session(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/follower_fetch.py on a real Broker and RocksDB store. It raises if a fetch with nothing new
    answers anything (so both timed fetches really read nothing back); the figures are printed, not
    bounded here (speed is measured in bench/, not asserted)."""
    assert bench_main(["follower-fetch", "--partitions", "90", "--rounds", "20"]) == 0
    out = capsys.readouterr().out
    assert "broker 1 leads 30 of 90 partitions" in out
    assert re.search(r"^every partition named \(no session\) +[0-9.]+ +[0-9.]+$", out, re.MULTILINE), out
    assert re.search(r"^in a session, none named +[0-9.]+ +[0-9.]+$", out, re.MULTILINE), out
    assert re.search(r"a session fetch costs [0-9.]+ of a sessionless one", out), out


def test_rpc_cost_measures_a_real_server_process(capsys: pytest.CaptureFixture[str]) -> None:
    """bench/rpc_cost.py: a real grpc.aio server in a child process (ended by the tool), real calls; the
    figures are printed, not bounded (speed is measured in bench/, not asserted). A server that did no
    work would show 0 CPU per call. The last row is exchanges over one FetchStream call."""
    assert bench_main(["rpc-cost", "--calls", "400", "--concurrency", "1", "4"]) == 0
    rows = re.findall(
        r"^ +([14]|1 \(stream\)) +([0-9]+) +([0-9]+) +([0-9]+) +([0-9]+)$", capsys.readouterr().out, re.MULTILINE
    )
    assert [row[0] for row in rows] == ["1", "4", "1 (stream)"]
    assert all(int(total) > 0 and int(wall) > 0 for _, total, _, _, wall in rows), rows
