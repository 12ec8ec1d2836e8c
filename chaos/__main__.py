"""``python -m chaos``: list the scenarios, or run one and report.

    python -m chaos list
    python -m chaos run --scenario kill-leader --duration 30 --seed 1 [--nodes 3] [--acks all|1] [--idempotence on|off]
                        [--report run.json] [--html run.html] [--workdir DIR] [--rate 100]
    python -m chaos check HISTORY.jsonl     # re-check a recorded history offline

Rules: a thin driver over chaos/runner.py and chaos/report.py. ``run`` prints the
table and exits 0 when the checker found no safety anomaly (lost, inconsistent
offsets, phantoms, reads out of order, commits going backwards), 1 otherwise;
duplicates are reported but allowed (the producer is not idempotent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from chaos import checker, report, runner
from chaos.faults import SCENARIOS
from chaos.history import load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description="Ketch chaos runs")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the scenarios")
    run = sub.add_parser("run", help="run one scenario and check its history")
    run.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
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
    run.add_argument("--report", type=Path, help="write the result as JSON here")
    run.add_argument("--html", type=Path, help="write an HTML report with a timeline here")
    run.add_argument("--workdir", type=Path, help="cluster data and history.jsonl (default: a temp dir)")
    check = sub.add_parser("check", help="check a recorded history.jsonl")
    check.add_argument("history", type=Path)
    args = parser.parse_args(argv)

    if args.command == "list":
        for name, spec in SCENARIOS.items():
            print(f"{name:22} {spec.doc}")
        return 0
    if args.command == "check":
        verdict = checker.check(load(args.history))
        print(json.dumps(verdict.to_dict(), indent=2, default=str))
        return 0 if verdict.safe else 1
    result = runner.run(
        args.scenario,
        args.duration,
        args.seed,
        args.workdir,
        nodes=args.nodes,
        acks=args.acks,
        rate=args.rate,
        idempotence=args.idempotence == "on",
    )
    print(report.table([result]))
    for kind, examples in result["examples"].items():
        if examples and (kind != "duplicates" or result["idempotence"]):
            print(f"{kind}: {json.dumps(examples[:3], default=str)}")
    print(f"history: {result['history']}")
    if args.report:
        runner.dump(result, args.report)
    if args.html:
        args.html.write_text(report.html_page([result]))
    return 0 if result["safe"] else 1


if __name__ == "__main__":
    sys.exit(main())
