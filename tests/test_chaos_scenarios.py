"""The chaos suite end to end: real three-node clusters, real faults, the offline checker.

Rules:
- The control run must lose data: acks=1 while the followers are stalled and the
  leader is then killed with -9 (``lagging-leader-kill``). It goes through the CLI,
  so the exit code, the JSON report and the HTML page are checked too. If the
  checker could not see this loss, the acks=all runs below would prove nothing.
- Every scenario runs with acks=all and idempotent producers (the default) and
  must show zero lost acknowledged records, zero duplicates, zero inconsistent
  offsets, zero phantom reads and reads in offset order.
- The second control run turns idempotence off: producers that retry after a
  paused leader's timeouts must store some record twice, so the duplicate check
  is shown to fail where idempotence is missing. It runs a heavier load than the
  scenarios (``CONTROL_LOAD``) so that a pause finds a retried batch in flight.
- CI runs each scenario for ``KETCH_CHAOS_SECONDS`` (default 10 s of faults; the
  suite must stay under 20 minutes on 2 cores) and the duplicates control for 20 s,
  except two whose fault CI already runs elsewhere: kill-leader (here with mutual TLS on
  every link, in tests/test_replication_failover.py and, through the Kafka listener,
  tests/test_kafka_client_failover.py) and pause-leader (the duplicates control pauses the
  leader; tests/test_failover.py checks writes resume while it is paused; partition-leader
  cuts the leader off the same way through the proxy).
  ``KETCH_SLOW=1`` adds long runs of every scenario (``KETCH_CHAOS_SLOW_SECONDS``,
  default 300 s each).
- Each run ends every process it started (chaos/cluster.py closes in ``finally``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chaos import report, runner
from chaos.cluster import faketime_lib
from chaos.faults import SCENARIOS

SECONDS = float(os.environ.get("KETCH_CHAOS_SECONDS", "10"))
CONTROL_SECONDS = 20.0
CONTROL_LOAD: dict[str, Any] = {"producers": 4, "rate": 300.0}
SLOW_SECONDS = float(os.environ.get("KETCH_CHAOS_SLOW_SECONDS", "300"))
ROOT = Path(__file__).resolve().parent.parent


def needs(name: str) -> Any:
    spec = SCENARIOS[name]
    if spec.tmpfs_mb and os.geteuid() != 0:
        return pytest.mark.skip(reason="disk-full mounts a tmpfs: needs root")
    if spec.faketime and faketime_lib() is None:
        return pytest.mark.skip(reason="clock-jump needs libfaketime (scripts/ensure_system_packages.py)")
    return []


def assert_safe(result: dict[str, Any]) -> None:
    print("\n" + report.table([result]))
    assert result["drained"], "the final read did not reach the end of the partition"
    assert result["acknowledged"] > 100, "the workload barely ran"
    assert result["lost"] == 0, result["examples"]["lost"]
    assert result["inconsistent_offsets"] == 0, result["examples"]["inconsistent_offsets"]
    assert result["phantoms"] == 0, result["examples"]["phantoms"]
    assert result["out_of_order"] == 0, result["examples"]["out_of_order"]
    if result["idempotence"]:
        assert result["duplicates"] == 0, result["examples"]["duplicates"]
    assert result["faults"], "no fault was injected"


def test_control_acks_1_with_a_lagging_killed_leader_loses_acknowledged_records(tmp_path: Path) -> None:
    """Kept as is (3 s of faults): the only proof that the checker sees a loss."""
    out, page = tmp_path / "control.json", tmp_path / "control.html"
    cmd = [sys.executable, "-m", "chaos", "run", "--scenario", "lagging-leader-kill", "--acks", "1"]
    cmd += ["--duration", "3", "--seed", "7", "--workdir", str(tmp_path / "run"), "--report", str(out)]
    cmd += ["--html", str(page)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(done.stdout[-3000:], done.stderr[-3000:])
    assert done.returncode == 1, "the checker must flag the control run as unsafe"
    result = json.loads(out.read_text())
    assert result["scenario"] == "lagging-leader-kill" and result["seed"] == 7 and result["acks"] == "1"
    assert result["lost"] > 0, "acks=1 with a killed lagging leader must lose acknowledged records"
    assert result["faults"] and result["drained"]
    assert set(result["unavailability_s"]) >= {"p50", "p99", "max"}
    assert "LOST" in done.stdout and "UNSAFE" in done.stdout
    assert "<svg" in page.read_text()


def test_control_without_idempotence_retries_store_duplicates(tmp_path: Path) -> None:
    """Kept at 20 s of faults (``CONTROL_SECONDS``), not shortened with the scenarios: it must see a
    retried write stored twice, and with 10 s one run in three saw none (two pauses instead of three
    or four).

    A duplicate needs a pause that lands while a retrying producer's batch is on a follower but not
    yet acknowledged, a window of one replication round. Run at the default load (one retrying
    producer of three, 100 records/s each), half the runs saw none once followers fetched over a
    stream (shorter rounds): seeds 1-6 stored 0, 2, 0, 1, 0, 1, and CI failed on seeds 1-3. So the
    control runs two retrying producers of four at 300 records/s (``CONTROL_LOAD``): seeds 1-6
    stored 3-11 duplicates each, and the same runs with idempotence on stored none."""
    seen = []
    for seed in (1, 2, 3):
        result = runner.run(
            "pause-leader",
            CONTROL_SECONDS,
            seed=seed,
            workdir=tmp_path / f"seed-{seed}",
            idempotence=False,
            **CONTROL_LOAD,
        )
        print("\n" + report.table([result]))
        assert result["lost"] == 0 and result["safe"], "idempotence off still loses nothing"
        seen.append(result["duplicates"])
        if result["duplicates"]:
            return
    pytest.fail(f"retrying producers without idempotence stored no duplicate in 3 runs: {seen}")


CI_SCENARIOS = [name for name in SCENARIOS if name not in ("kill-leader", "pause-leader")]


@pytest.mark.parametrize("scenario", [pytest.param(name, marks=needs(name)) for name in CI_SCENARIOS])
def test_scenario_with_acks_all_loses_nothing(scenario: str, tmp_path: Path) -> None:
    """Shortened to 10 s of faults in CI (was 20 s); the long version is
    ``test_long_scenario_with_acks_all_loses_nothing`` (``KETCH_SLOW=1``, 300 s each). 10 s still
    injects the fault at least once, since a fault loop always finishes the round it started (a
    rolling restart a whole round of the three nodes, the leader included), and the whole history
    is checked after it; ``assert_safe`` fails a run without a fault."""
    result = runner.run(scenario, SECONDS, seed=1, workdir=tmp_path, acks="all")
    assert_safe(result)


def test_kill_leader_with_mutual_tls_on_every_connection_loses_nothing(tmp_path: Path) -> None:
    """Issue 17: the leader killed with -9 while clients, replica fetching and Raft all use mutual
    TLS; the restarted node re-handshakes on every link."""
    result = runner.run("kill-leader", SECONDS, seed=3, workdir=tmp_path, acks="all", tls=True)
    assert result["tls"] and result["faults"], result["faults"]
    assert_safe(result)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("KETCH_SLOW"), reason="long chaos runs: set KETCH_SLOW=1")
@pytest.mark.timeout(int(SLOW_SECONDS) + 300)
@pytest.mark.parametrize("scenario", [pytest.param(name, marks=needs(name)) for name in SCENARIOS])
def test_long_scenario_with_acks_all_loses_nothing(scenario: str, tmp_path: Path) -> None:
    result = runner.run(scenario, SLOW_SECONDS, seed=int(os.environ.get("KETCH_CHAOS_SEED", "11")), workdir=tmp_path)
    runner.dump(result, tmp_path / "report.json")
    assert_safe(result)
