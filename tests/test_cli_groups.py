"""``ketch group ...`` and ``ketch consume --group`` against a real node, as a user types them.

One node for the module (tests/harness.py: free ports, a temp dir, rebalance
delay 0); every test uses its own topic and group. Each command runs as
``python -m ketch`` in a subprocess; a background ``ketch consume --group``
is the live member, stopped with Ctrl-C (SIGINT) like a user would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from node.process import NodeProcess
from tests.harness import start_node

ARGS = ["--group-initial-rebalance-delay-ms", "0", "--group-min-session-timeout-ms", "500"]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = start_node(tmp_path_factory.mktemp("groups-cli"), extra_args=ARGS)
    try:
        yield n
    finally:
        n.close()


def env(node: NodeProcess) -> dict[str, str]:
    return {**os.environ, "KETCH_BOOTSTRAP": node.bootstrap}


def ketch(node: NodeProcess, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ketch", *args], input=stdin, capture_output=True, text=True, env=env(node), timeout=90
    )


def ok(node: NodeProcess, *args: str, stdin: str | None = None) -> str:
    done = ketch(node, *args, stdin=stdin)
    assert done.returncode == 0, (args, done.stderr)
    return done.stdout


def fails(node: NodeProcess, code: str, *args: str) -> str:
    done = ketch(node, *args)
    assert done.returncode != 0, (args, done.stdout)
    assert done.stderr.startswith(f"ketch: {code}: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def describe(node: NodeProcess, group: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(ok(node, "group", "describe", group, "--json"))
    return found


def committed(node: NodeProcess, group: str) -> dict[int, int | None]:
    return {p["partition"]: p["committed_offset"] for p in describe(node, group)["offsets"]}


def reset(node: NodeProcess, group: str, *args: str) -> dict[int, int]:
    out = json.loads(ok(node, "group", "reset-offsets", group, "--json", *args))
    return {p["partition"]: p["new_offset"] for p in out["partitions"]}


def produce(node: NodeProcess, topic: str, lines: list[str]) -> None:
    ok(node, "produce", topic, "--key-separator", ":", stdin="".join(f"{line}\n" for line in lines))


def test_consume_with_a_group_continues_where_it_stopped(node: NodeProcess) -> None:
    ok(node, "topic", "create", "events", "--partitions", "2")
    values = [f"v{i}" for i in range(12)]
    produce(node, "events", [f"k{i % 4}:{v}" for i, v in enumerate(values)])

    first = ok(node, "consume", "events", "--group", "readers", "--from-beginning", "--max-messages", "5").splitlines()
    second = ok(node, "consume", "events", "--group", "readers", "--max-messages", "7").splitlines()
    assert len(first) == 5 and len(second) == 7
    assert sorted(first + second) == sorted(values)  # every record once: no gap, no repeat
    rest = ok(node, "consume", "events", "--group", "readers", "--timeout-ms", "1500")
    assert rest == ""  # everything was committed

    listed = json.loads(ok(node, "group", "list", "--json"))
    assert {"group_id": "readers", "state": "Empty", "protocol_type": "consumer"} in listed
    assert "readers" in ok(node, "group", "list")
    d = describe(node, "readers")
    assert d["state"] == "Empty" and d["members"] == [] and d["total_lag"] == 0
    assert [(p["partition"], p["lag"]) for p in d["offsets"]] == [(0, 0), (1, 0)]
    assert sum(p["log_end_offset"] for p in d["offsets"]) == 12
    assert all(p["committed_offset"] == p["log_end_offset"] for p in d["offsets"])

    # A group's offsets stay its own: another group starts from the beginning.
    other = ok(node, "consume", "events", "--group", "others", "--from-beginning", "--max-messages", "12")
    assert sorted(other.splitlines()) == sorted(values)
    fails(node, "INVALID_REQUEST", "consume", "events", "--group", "readers", "--partition", "0")


def test_a_live_member_is_described_and_blocks_reset_and_delete(node: NodeProcess, tmp_path: Path) -> None:
    ok(node, "topic", "create", "live", "--partitions", "2")
    produce(node, "live", [f"k{i % 3}:r{i}" for i in range(9)])
    # Output to files, not pipes nobody reads while it runs: a full pipe would block the child.
    err_path = tmp_path / "consumer.err"
    with open(tmp_path / "consumer.out", "wb") as out_file, open(err_path, "wb") as err_file:
        consumer = subprocess.Popen(
            [sys.executable, "-m", "ketch", "consume", "live", "--group", "busy", "--from-beginning"],
            stdout=out_file,
            stderr=err_file,
            env=env(node),
            # Ctrl-C as in a terminal even when the suite runs in the background (`cmd &` starts
            # with SIGINT ignored, and an ignored signal stays ignored across exec).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            d = describe(node, "busy") if ketch(node, "group", "describe", "busy").returncode == 0 else {}
            if d.get("state") == "Stable" and d.get("total_lag") == 0 and len(d.get("offsets", [])) == 2:
                break
            assert time.monotonic() < deadline, d
            time.sleep(0.3)
        (member,) = d["members"]
        assert member["client_id"] and member["host"]
        assert sorted((a["topic"], a["partition"]) for a in member["assignment"]) == [("live", 0), ("live", 1)]
        assert d["protocol"] == "range" and d["generation"] >= 1 and d["leader"] == member["member_id"]
        assert all(p["member_id"] == member["member_id"] for p in d["offsets"])
        assert sum(p["committed_offset"] for p in d["offsets"]) == 9
        table = ok(node, "group", "describe", "busy")
        assert "state: Stable" in table and member["member_id"] in table and "LOG-END-OFFSET" in table

        err = fails(node, "NON_EMPTY_GROUP", "group", "reset-offsets", "busy", "--topic", "live", "--to-earliest")
        assert "stop its consumers" in err
        fails(node, "NON_EMPTY_GROUP", "group", "delete", "busy")
        dry = reset(node, "busy", "--topic", "live", "--to-earliest", "--dry-run")
        assert dry == {0: 0, 1: 0}
        assert sum(v or 0 for v in committed(node, "busy").values()) == 9  # the dry run changed nothing
    finally:
        consumer.send_signal(signal.SIGINT)  # Ctrl-C: the consumer leaves the group
        try:
            consumer.wait(timeout=30)
        finally:
            consumer.kill()
            consumer.wait()
    assert consumer.returncode == 130, err_path.read_text(errors="replace")[-2000:]
    d = describe(node, "busy")
    assert d["state"] == "Empty" and d["members"] == []
    assert reset(node, "busy", "--topic", "live", "--to-earliest") == {0: 0, 1: 0}
    assert committed(node, "busy") == {0: 0, 1: 0}
    again = ok(node, "consume", "live", "--group", "busy", "--max-messages", "9").splitlines()
    assert sorted(again) == sorted(f"r{i}" for i in range(9))  # read again from the reset offsets
    ok(node, "group", "delete", "busy")
    assert "busy" not in [g["group_id"] for g in json.loads(ok(node, "group", "list", "--json"))]
    fails(node, "GROUP_ID_NOT_FOUND", "group", "describe", "busy")


def test_every_reset_mode(node: NodeProcess) -> None:
    """Suite time: kept as is (~17 s on 2 cores, some 30 ``python -m ketch`` runs): the only test
    of each reset mode as a user types it."""
    ok(node, "topic", "create", "modes", "--partitions", "2")
    ok(node, "produce", "modes", "--partition", "0", stdin="a\nb\nc\nd\n")
    ok(node, "produce", "modes", "--partition", "1", stdin="e\nf\n")
    ok(node, "consume", "modes", "--group", "modes-g", "--from-beginning", "--max-messages", "6")
    assert committed(node, "modes-g") == {0: 4, 1: 2}
    time.sleep(0.05)
    middle = datetime.now(UTC)
    time.sleep(0.05)
    for partition in ("0", "1"):
        ok(node, "produce", "modes", "--partition", partition, stdin="late1\nlate2\n")
    d = describe(node, "modes-g")
    assert [(p["log_end_offset"], p["lag"]) for p in d["offsets"]] == [(6, 2), (4, 2)] and d["total_lag"] == 4

    def to(*args: str) -> dict[int, int]:
        return reset(node, "modes-g", "--topic", "modes", *args)

    assert to("--to-earliest") == {0: 0, 1: 0}
    assert to("--to-latest") == {0: 6, 1: 4}
    assert to("--to-offset", "1") == {0: 1, 1: 1}
    assert to("--to-offset", "999") == {0: 6, 1: 4}  # clamped to the log end
    assert to("--partition", "1", "--to-offset", "2") == {1: 2}
    assert committed(node, "modes-g") == {0: 6, 1: 2}
    assert to("--shift-by", "-1") == {0: 5, 1: 1}
    assert to("--shift-by", "-100") == {0: 0, 1: 0}  # clamped to the log start
    assert to("--shift-by", "3") == {0: 3, 1: 3}
    assert to("--shift-by", "100") == {0: 6, 1: 4}
    assert to("--to-datetime", middle.isoformat().replace("+00:00", "Z")) == {0: 4, 1: 2}  # the first late records
    assert to("--to-datetime", "2001-01-01T00:00:00+00:00") == {0: 0, 1: 0}
    assert to("--to-datetime", "2999-01-01T00:00:00Z") == {0: 6, 1: 4}  # nothing that late: the log end
    assert to("--to-earliest", "--dry-run") == {0: 0, 1: 0}
    assert committed(node, "modes-g") == {0: 6, 1: 4}  # the dry run changed nothing
    table = ok(node, "group", "reset-offsets", "modes-g", "--topic", "modes", "--shift-by", "-2")
    assert table.splitlines()[0].split() == ["GROUP", "TOPIC", "PARTITION", "OLD-OFFSET", "NEW-OFFSET"]
    assert table.splitlines()[1].split() == ["modes-g", "modes", "0", "6", "4"]
    late = ok(node, "consume", "modes", "--group", "modes-g", "--max-messages", "4").splitlines()
    assert sorted(late) == ["late1", "late1", "late2", "late2"]  # a consumer starts where the reset put it

    fails(node, "INVALID_REQUEST", "group", "reset-offsets", "fresh-g", "--topic", "modes", "--shift-by", "1")
    fails(node, "INVALID_REQUEST", "group", "reset-offsets", "modes-g", "--topic", "modes", "--to-datetime", "noon")
    fails(node, "UNKNOWN_TOPIC_OR_PARTITION", "group", "reset-offsets", "modes-g", "--topic", "nope", "--to-earliest")
    fails(
        node, "UNKNOWN_TOPIC_OR_PARTITION", "group", "reset-offsets", "modes-g", "-t", "modes", "-p", "7", "--to-latest"
    )
    ok(node, "group", "delete", "modes-g")
    fails(node, "GROUP_ID_NOT_FOUND", "group", "delete", "modes-g")
