"""The ``ketch`` command line against a real node, as a user types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from node.process import NodeProcess


def ketch(
    node: NodeProcess, *args: str, stdin: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KETCH_BOOTSTRAP": node.bootstrap}
    return subprocess.run(
        [sys.executable, "-m", "ketch", *args], input=stdin, capture_output=True, text=True, env=env, timeout=timeout
    )


def test_seq_1_to_1000_round_trip(node: NodeProcess) -> None:
    assert ketch(node, "topic", "create", "t", "--partitions", "1").returncode == 0
    produced = ketch(node, "produce", "t", stdin="".join(f"{i}\n" for i in range(1, 1001)))
    assert produced.returncode == 0, produced.stderr
    consumed = ketch(node, "consume", "t", "--from-beginning", "--max-messages", "1000")
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.splitlines() == [str(i) for i in range(1, 1001)]


def test_keys_offsets_partitions_and_json(node: NodeProcess) -> None:
    ketch(node, "topic", "create", "k", "--partitions", "3", "--config", "retention.ms=3600000")
    produced = ketch(node, "produce", "k", "--key-separator", ":", "--compression", "zstd", stdin="a:1\nb:2\na:3\n")
    assert produced.returncode == 0, produced.stderr
    out = ketch(node, "consume", "k", "--from-beginning", "--max-messages", "3", "--json")
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert sorted((r["key"], r["value"]) for r in records) == [("a", "1"), ("a", "3"), ("b", "2")]
    by_key = {r["key"]: r["partition"] for r in records}
    assert len({r["partition"] for r in records if r["key"] == "a"}) == 1  # same key, same partition
    one = ketch(
        node,
        "consume",
        "k",
        "--partition",
        str(by_key["a"]),
        "--offset",
        "1",
        "--max-messages",
        "1",
        "--print-key",
        "--print-offset",
    )
    assert one.stdout == f"{by_key['a']}\t1\ta\t3\n"
    described = json.loads(ketch(node, "topic", "describe", "k", "--json").stdout)
    assert described["name"] == "k"
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert all(p["leader"] == 1 and p["isr"] == [1] and p["leader_epoch"] == 0 for p in described["partitions"])
    assert described["configs"]["retention.ms"] == "3600000"
    assert json.loads(ketch(node, "topic", "list", "--json").stdout) == ["k"]
    cluster = json.loads(ketch(node, "cluster", "describe", "--json").stdout)
    assert [b["node_id"] for b in cluster["brokers"]] == [1]


def test_errors_print_one_line_and_exit_nonzero(node: NodeProcess) -> None:
    cases = [
        (("topic", "create", "bad name"), "INVALID_TOPIC_EXCEPTION"),
        (("topic", "create", "ok", "--config", "retention.ms=soon"), "INVALID_CONFIG"),
        (("topic", "delete", "missing"), "UNKNOWN_TOPIC_OR_PARTITION"),
        (("consume", "missing", "--max-messages", "1"), "UNKNOWN_TOPIC_OR_PARTITION"),
        (("produce", "missing"), "UNKNOWN_TOPIC_OR_PARTITION"),
    ]
    for args, code in cases:
        result = ketch(node, *args, stdin="x\n")
        assert result.returncode != 0, args
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and code in lines[0], (args, result.stderr)
    ketch(node, "topic", "create", "ok")
    assert ketch(node, "topic", "list").stdout.split() == ["ok"]  # node still serving


def test_compacted_topic_configs_and_keys(node: NodeProcess) -> None:
    created = ketch(
        node, "topic", "create", "c", "--config", "cleanup.policy=compact", "--config", "min.cleanable.dirty.ratio=0.01"
    )
    assert created.returncode == 0, created.stderr
    configs = json.loads(ketch(node, "topic", "describe", "c", "--json").stdout)["configs"]
    assert {k: configs[k] for k in ("cleanup.policy", "min.cleanable.dirty.ratio")} == {
        "cleanup.policy": "compact",
        "min.cleanable.dirty.ratio": "0.01",
    }
    assert (configs["delete.retention.ms"], configs["min.compaction.lag.ms"]) == ("86400000", "0")  # node defaults
    text = ketch(node, "topic", "describe", "c").stdout
    assert "cleanup.policy=compact" in text and "min.cleanable.dirty.ratio=0.01" in text
    assert "delete.retention.ms=86400000" in text and "min.compaction.lag.ms=0" in text
    both = ketch(node, "topic", "create", "cd", "--config", "cleanup.policy=Delete, Compact")
    assert both.returncode == 0, both.stderr
    assert json.loads(ketch(node, "topic", "describe", "cd", "--json").stdout)["configs"]["cleanup.policy"] == (
        "compact,delete"
    )
    for bad in ("min.cleanable.dirty.ratio=1.5", "min.cleanable.dirty.ratio=half", "cleanup.policy=forever"):
        refused = ketch(node, "topic", "create", "bad", "--config", bad)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode != 0 and len(lines) == 1, refused.stderr
        assert "INVALID_CONFIG" in lines[0] and bad.split("=")[0] in lines[0], lines
    keyless = ketch(node, "produce", "c", stdin="no key\n")
    assert keyless.returncode != 0 and "INVALID_RECORD" in keyless.stderr, keyless.stderr
    keyed = ketch(node, "produce", "c", "--key-separator", ":", stdin="a:1\n")
    assert keyed.returncode == 0, keyed.stderr
    consumed = ketch(node, "consume", "c", "--from-beginning", "--max-messages", "1", "--print-key")
    assert consumed.stdout == "a\t1\n"
    assert sorted(ketch(node, "topic", "list").stdout.split()) == ["c", "cd"]


def test_unreachable_node_is_one_readable_line() -> None:
    """Needs no node (it dials 127.0.0.1:1); it used to start one it never used."""
    env = {**os.environ, "KETCH_BOOTSTRAP": "127.0.0.1:1"}
    result = subprocess.run(
        [sys.executable, "-m", "ketch", "topic", "list"], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "127.0.0.1:1" in result.stderr
