"""bench/group_load.py with tiny numbers: the loaded state survives compaction and the log shrinks.

The figures that matter (seconds) are not asserted: they depend on the
machine. What is: both loads give every committed offset the writer's
coordinator holds, and the cleaned log keeps one record per key plus the
log's last batch (never cleaned: replication/compaction.py rule 1).
"""

from __future__ import annotations

import io
import json

import pytest

from bench.group_load import run_group_load
from bench.run import main as bench_main


def test_load_state_survives_compaction_and_the_log_shrinks() -> None:
    result = run_group_load(commits=2_000, keys=40, groups=4, out=io.StringIO())
    assert result.identical
    assert result.before.batches == result.before.records == 2_000  # one batch per commit
    assert result.after.records == 40 + 1  # each key's latest, and the last batch's record (uncleaned)
    assert result.after.batches == result.after.records
    assert result.records_removed == 2_000 - 41
    assert result.after.bytes < result.before.bytes // 20
    assert result.bytes_removed == result.before.bytes - result.after.bytes


def test_bench_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["group-load", "--commits", "300", "--keys", "30", "--groups", "3", "--json"]) == 0
    out = capsys.readouterr().out
    assert "committed offsets: identical before and after" in out
    assert "python -m bench.group_load --commits 300 --keys 30 --groups 3" in out
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["tool"] == "group-load" and figures["identical"] is True
    assert figures["keys"] == 30 and figures["partitions_per_group"] == 10
    assert figures["after"]["records"] == 31


def test_keys_must_split_evenly_over_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["group-load", "--commits", "10", "--keys", "10", "--groups", "3"]) == 2
    assert "keys divisible by groups" in capsys.readouterr().err
