"""Reports of chaos runs: a text table, a JSON file and a self-contained HTML page.

Rules:
- Pure rendering: functions take run results (chaos/runner.py) and return strings;
  the CLI writes them. No JavaScript, no external assets: the timeline is an inline
  SVG (acknowledged, failed and unknown sends per half second; fault windows shaded).
- The table has one row per run with the figures the issue asks for: acknowledged,
  lost, duplicates, inconsistent offsets, phantoms, unavailability p50/p99/max.
"""

from __future__ import annotations

import html
import json
from typing import Any

COLUMNS = [
    ("scenario", "scenario"),
    ("acks", "acks"),
    ("idempotence", "idem"),
    ("seed", "seed"),
    ("duration_s", "secs"),
    ("acknowledged", "acked"),
    ("failed", "failed"),
    ("unknown", "unknown"),
    ("lost", "LOST"),
    ("duplicates", "dups"),
    ("inconsistent_offsets", "incons"),
    ("phantoms", "phantom"),
    ("out_of_order", "order"),
    ("faults", "faults"),
]


def _cell(result: dict[str, Any], key: str) -> str:
    value = result.get(key)
    if key == "faults":
        return str(len(value or []))
    if key == "idempotence":
        return "-" if value is None else "on" if value else "off"
    return str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: list[dict[str, Any]]) -> str:
    header = [title for _, title in COLUMNS] + ["unavail p50/p99/max s", "verdict"]
    rows = []
    for r in results:
        u = r.get("unavailability_s", {})
        verdict = "ok" if r.get("safe") and r.get("drained") else ("UNSAFE" if not r.get("safe") else "incomplete")
        rows.append(
            [_cell(r, k) for k, _ in COLUMNS]
            + [f"{_seconds(u.get('p50'))}/{_seconds(u.get('p99'))}/{_seconds(u.get('max'))}", verdict]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = ["  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)) for row in [header, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def svg_timeline(result: dict[str, Any], width: int = 900, height: int = 220) -> str:
    tl = result["timeline"]
    bucket = tl["bucket_s"]
    ok, fail, unknown = tl["ok"], tl["fail"], tl["unknown"]
    n = max(len(ok), 1)
    top = max([*ok, *(f + u for f, u in zip(fail, unknown, strict=True)), 1])
    left, bottom, plot_h = 50, height - 30, height - 50
    step = (width - left - 10) / n

    def x(i: float) -> float:
        return left + i * step

    def y(v: float) -> float:
        return bottom - v / top * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-size="11">']
    for w in tl["windows"]:
        x0, x1 = x(w["start"] / bucket), x(max(w["end"], w["start"] + bucket / 4) / bucket)
        label = html.escape(f"{w['name']} node {w['node']}: {w['start']:.1f}-{w['end']:.1f}s")
        parts.append(
            f'<rect x="{x0:.1f}" y="{bottom - plot_h}" width="{x1 - x0:.1f}" height="{plot_h}" '
            f'fill="#f4b400" opacity="0.25"><title>{label}</title></rect>'
        )
    for series, colour in ((ok, "#0b8043"), ([f + u for f, u in zip(fail, unknown, strict=True)], "#d93025")):
        points = " ".join(f"{x(i + 0.5):.1f},{y(v):.1f}" for i, v in enumerate(series))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{width - 10}" y2="{bottom}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{left}" y2="{bottom - plot_h}" stroke="#333"/>')
    parts.append(f'<text x="{left - 5}" y="{bottom - plot_h + 4}" text-anchor="end">{top / bucket:.0f}/s</text>')
    parts.append(f'<text x="{left - 5}" y="{bottom + 4}" text-anchor="end">0</text>')
    for s in range(0, int(tl["end"]) + 1, max(1, int(tl["end"] / 10) or 1)):
        parts.append(f'<text x="{x(s / bucket):.1f}" y="{bottom + 15}" text-anchor="middle">{s}s</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def html_page(results: list[dict[str, Any]]) -> str:
    body = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Ketch chaos report</title>",
        "<style>body{font-family:sans-serif;margin:2em}pre{background:#f6f6f6;padding:1em;overflow:auto}"
        ".bad{color:#d93025}.good{color:#0b8043}</style></head><body>",
        "<h1>Ketch chaos report</h1>",
        f"<pre>{html.escape(table(results))}</pre>",
        "<p>Timeline: <span class='good'>green</span> acknowledged sends per second, "
        "<span class='bad'>red</span> failed or unknown sends per second, shaded: fault windows "
        "(hover for details).</p>",
    ]
    for r in results:
        cls = "good" if r.get("safe") else "bad"
        body.append(
            f"<h2>{html.escape(str(r['scenario']))} (acks={html.escape(str(r['acks']))}, seed {r['seed']}) "
            f"<span class='{cls}'>{'safe' if r.get('safe') else 'ANOMALIES'}</span></h2>"
        )
        body.append(svg_timeline(r))
        summary = {k: v for k, v in r.items() if k not in ("timeline", "unavailability")}
        body.append(f"<pre>{html.escape(json.dumps(summary, indent=2, default=str))}</pre>")
    body.append("</body></html>")
    return "\n".join(body)
