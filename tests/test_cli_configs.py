"""``ketch topic alter-config``, ``ketch cluster config`` and the sources in ``ketch topic describe``."""

from __future__ import annotations

import json

from node.process import NodeProcess
from tests.test_cli import ketch


def ok(node: NodeProcess, *args: str) -> str:
    result = ketch(node, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(node: NodeProcess, *args: str) -> str:
    result = ketch(node, *args)
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0 and len(lines) == 1, result.stderr
    return lines[0]


def test_alter_topic_and_cluster_configs_and_see_where_values_come_from(node: NodeProcess) -> None:
    ok(node, "topic", "create", "t", "--partitions", "2", "--config", "retention.ms=5000")
    out = ok(node, "topic", "alter-config", "t", "--set", "retention.ms=1000", "--set", "cleanup.policy=compact")
    assert out.strip() == "altered: topic t: retention.ms=1000, cleanup.policy=compact"
    ok(node, "topic", "alter-config", "t", "--delete", "cleanup.policy")
    ok(node, "cluster", "config", "--set", "log.retention.bytes=77")
    ok(node, "cluster", "config", "--node", "1", "--set", "message.max.bytes=2048")

    text = ok(node, "topic", "describe", "t")
    lines = {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.startswith("  ")}
    assert lines["retention.ms=1000"] == ["topic"]
    assert lines["retention.bytes=77"] == ["cluster"]
    assert lines["max.message.bytes=2048"] == ["broker"]
    assert lines["cleanup.policy=delete"] == ["default"]
    assert "STATUS" in text
    described = json.loads(ok(node, "topic", "describe", "t", "--json"))
    assert described["configs"]["retention.ms"] == "1000"
    assert described["config_sources"]["retention.ms"] == "DYNAMIC_TOPIC_CONFIG"
    assert described["config_sources"]["retention.bytes"] == "DYNAMIC_DEFAULT_BROKER_CONFIG"
    assert [p["recovering"] for p in described["partitions"]] == [False, False]  # read from the controller

    cluster = {r["name"]: r for r in json.loads(ok(node, "cluster", "config", "--json"))}
    assert (cluster["log.retention.bytes"]["value"], cluster["log.retention.bytes"]["source"]) == (
        "77",
        "DYNAMIC_DEFAULT_BROKER_CONFIG",
    )
    assert cluster["message.max.bytes"]["source"] == "DEFAULT_CONFIG"  # node 1's own value is not cluster-wide
    own = ok(node, "cluster", "config", "--node", "1")
    assert own.splitlines()[0].split() == ["KEY", "VALUE", "SOURCE"]
    rows = {line.split()[0]: line.split()[1:] for line in own.splitlines()[1:]}
    assert rows["message.max.bytes"] == ["2048", "broker"] and rows["log.retention.bytes"] == ["77", "cluster"]

    checked = ok(node, "topic", "alter-config", "t", "--set", "retention.ms=7", "--validate-only")
    assert checked.startswith("valid, not applied")
    assert json.loads(ok(node, "topic", "describe", "t", "--json"))["configs"]["retention.ms"] == "1000"


def test_config_errors_are_one_line(node: NodeProcess) -> None:
    ok(node, "topic", "create", "t")
    assert "INVALID_CONFIG" in refused(node, "topic", "alter-config", "t", "--set", "retention.ms=soon")
    assert "UNKNOWN_TOPIC_OR_PARTITION" in refused(node, "topic", "alter-config", "nope", "--set", "retention.ms=1")
    line = refused(node, "cluster", "config", "--set", "log.segment.bytes=1")
    assert "INVALID_CONFIG" in line and "log.retention.ms" in line
    unknown = refused(node, "cluster", "config", "--node", "7", "--set", "log.retention.ms=1")
    assert "BROKER_ID_NOT_REGISTERED" in unknown
    assert "INVALID_REQUEST" in refused(node, "topic", "alter-config", "t")
    assert "INVALID_CONFIG" in refused(node, "topic", "alter-config", "t", "--set", "retention.ms")
