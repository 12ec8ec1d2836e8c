"""``python -m bench compare``: JetStream R3 and Ketch RF 3 side by side, run tiny.

Real processes: three nats-server (Debian's package, installed by the command
when missing; the test skips with the reason when that is impossible here) and
three Ketch nodes. No assertion depends on how fast this machine is: every
record is counted on both sides, and the table's ratio is Ketch's rate over
JetStream's from the same run's figures.
"""

from __future__ import annotations

import json
import re

import pytest

from bench import jetstream
from bench.run import main as bench_main


@pytest.fixture(scope="module", autouse=True)
def nats_server() -> str:
    try:
        return jetstream.ensure_nats_server()
    except jetstream.NatsUnavailable as exc:
        pytest.skip(f"nats-server unavailable: {exc}")


def test_compare_prints_both_systems_and_the_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["compare", "--workload=1000x100", "--quiet", "--json"]) == 0
    out = capsys.readouterr().out
    figures = json.loads(out.strip().splitlines()[-1])
    by = {(f["system"], f["kind"]): f for f in figures}
    assert set(by) == {(s, k) for s in ("jetstream", "ketch") for k in ("produce", "consume")}
    for f in figures:
        assert f["records"] == 1000 and f["bytes"] == 100_000 and f["records_per_sec"] > 0, f
    for kind in ("produce", "consume"):
        row = re.search(rf"^{kind} 100 B +x 1,000 +([\d,]+) rec/s +([\d,]+) rec/s +([\d.]+)x$", out, re.M)
        assert row is not None, out
        js, ketch = by["jetstream", kind]["records_per_sec"], by["ketch", kind]["records_per_sec"]
        assert row.group(1) == f"{js:,.0f}" and row.group(2) == f"{ketch:,.0f}"
        assert float(row.group(3)) == pytest.approx(ketch / js, abs=0.051)
    assert "nats-server: v2." in out
    assert "[1] ketch perf produce --bootstrap=" in out and "--acks=all" in out and "--replication-factor=3" in out
