"""``python -m chaos``: list the scenarios, or run one and report.

    python -m chaos list
    python -m chaos run --scenario kill-leader --duration 30 --seed 1 [--nodes 3] [--acks all|1] [--idempotence on|off]
                        [--report run.json] [--html run.html] [--workdir DIR] [--rate 100]
                        [--timeouts test|defaults]
    python -m chaos run --workload transactional --scenario kill-txn-coordinator --duration 30
    python -m chaos check HISTORY.jsonl [--workload transactional]  # re-check a recorded history offline

Rules: a thin driver over chaos/runner.py and chaos/report.py. ``run`` prints the
table and exits 0 when the checker found no safety anomaly (lost, inconsistent
offsets, phantoms, reads out of order, commits going backwards), 1 otherwise;
duplicates are reported but allowed (the producer is not idempotent).
``--workload transactional`` (chaos/txn_runner.py) is safe only with 0 aborted reads,
0 lost committed writes, 0 torn transactions, 0 reads past an open transaction, 0
consume-transform-produce duplicates or losses, 0 duplicate writes and 0 commits of
fenced sessions (chaos/txn_checker.py); its scenarios add kill-txn-coordinator,
kill-group-coordinator and delay-end-txn.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chaos import checker, report, runner, txn_checker, txn_runner
from chaos.history import load
from chaos.txn_faults import ALL_SCENARIOS, TXN_SCENARIOS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description="Ketch chaos runs")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios")
    run = sub.add_parser("run", help="run one scenario and check its history")
    run.add_argument("--scenario", required=True, choices=sorted(ALL_SCENARIOS))
    run.add_argument("--workload", choices=["plain", "transactional"], default="plain")
    run.add_argument(
        "--reader-isolation",
        choices=["read_committed", "read_uncommitted"],
        default="read_committed",
        help="transactional readers' real isolation (read_uncommitted is the planted-bug control run)",
    )
    run.add_argument("--duration", type=float, default=30.0, help="seconds of fault injection")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--nodes", type=int, default=3)
    run.add_argument("--acks", choices=["all", "1"], default="all")
    run.add_argument(
        "--idempotence",
        choices=["on", "off"],
        default="on",
        help="retrying producers are idempotent (on: duplicates are an anomaly); off is the control run",
    )
    run.add_argument("--rate", type=float, default=100.0, help="sends per second per producer")
    run.add_argument(
        "--timeouts",
        choices=["test", "defaults"],
        default="test",
        help="node timeouts: test (a 2 s broker session, chaos/cluster.py) or defaults (node/config.py's, "
        "what `ketch cluster up`, compose and Helm run)",
    )
    run.add_argument("--tls", action="store_true", help="mutual TLS on every connection (plain workload)")
    run.add_argument("--report", type=Path, help="write the result as JSON here")
    run.add_argument("--html", type=Path, help="write an HTML report with a timeline here")
    run.add_argument("--workdir", type=Path, help="cluster data and history.jsonl (default: a temp dir)")
    check = sub.add_parser("check", help="check a recorded history.jsonl")
    check.add_argument("history", type=Path)
    check.add_argument("--workload", choices=["plain", "transactional"], default="plain")
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, spec in ALL_SCENARIOS.items():
            extra = " (--workload transactional)" if name in TXN_SCENARIOS else ""
            print(f"{name:22} {spec.doc}{extra}")
        return 0
    if args.command == "check" and args.workload == "transactional":
        txn_verdict = txn_checker.check(load(args.history))
        print(json.dumps(txn_verdict.to_dict(), indent=2, default=str))
        return 0 if txn_verdict.safe else 1
    if args.command == "check":
        verdict = checker.check(load(args.history))
        print(json.dumps(verdict.to_dict(), indent=2, default=str))
        return 0 if verdict.safe else 1
    if args.workload == "transactional":
        return run_transactional(args)
    if args.scenario in TXN_SCENARIOS:
        parser.error(f"--scenario {args.scenario} needs --workload transactional")
    result = runner.run(
        args.scenario,
        args.duration,
        args.seed,
        args.workdir,
        nodes=args.nodes,
        acks=args.acks,
        rate=args.rate,
        idempotence=args.idempotence == "on",
        tls=args.tls,
        timeouts=args.timeouts,
    )
    print(report.table([result]))
    for key, what in (
        ("new_controller_s", "a live node leads the quorum (harness poll)"),
        ("active_controller_s", "a new active controller (node logs)"),
    ):
        seen = result[key]
        if seen["count"]:
            print(f"after a controller kill, {what} p50/p99/max s: {seen['p50']}/{seen['p99']}/{seen['max']}")
    for kind, examples in result["examples"].items():
        if examples and (kind != "duplicates" or result["idempotence"]):
            print(f"{kind}: {json.dumps(examples[:3], default=str)}")
    print(f"history: {result['history']}")
    if args.report:
        runner.dump(result, args.report)
    if args.html:
        args.html.write_text(report.html_page([result]))
    return 0 if result["safe"] else 1


def run_transactional(args: argparse.Namespace) -> int:
    result = runner.run(
        args.scenario,
        args.duration,
        args.seed,
        args.workdir,
        workload="transactional",
        nodes=args.nodes,
        reader_isolation=args.reader_isolation,
    )
    print(txn_runner.table([result]))
    for kind, examples in result["examples"].items():
        if examples:
            print(f"{kind}: {json.dumps(examples[:3], default=str)}")
    if result["proxy"]:
        print(f"proxy: {result['proxy']}")
    print(f"history: {result['history']}")
    if args.report:
        runner.dump(result, args.report)
    return 0 if result["safe"] and result["drained"] else 1


if __name__ == "__main__":
    sys.exit(main())
