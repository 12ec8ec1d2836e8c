"""Counters, latency percentiles and report lines shared by the perf tools.

Units follow Kafka's perf tools: MB is 2**20 bytes, rates are per second of
wall-clock time, latencies are milliseconds. ``ProduceStats`` is the
equivalent of kafka-producer-perf-test's ``Stats``: it is fed one
``record(latency, size)`` per acknowledged record, prints a window line every
``report_interval`` seconds, and keeps every latency (not a sample: a float
per record is 8 bytes, 4 MB for 500,000 records) for exact percentiles.
Percentiles use the nearest-rank method on the sorted latencies, so each one
is a latency some record actually had.
"""

from __future__ import annotations

import json
import math
import sys
import time
from array import array
from dataclasses import asdict, dataclass
from typing import Any, TextIO

MB = 1024 * 1024
PERCENTILES = (50.0, 95.0, 99.0, 99.9)


def percentile(sorted_values: Any, pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0.0 when empty)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * n))
    return float(sorted_values[min(rank, n) - 1])


@dataclass(frozen=True)
class ProduceResult:
    """The final figures of one producer run (the ``--json`` object)."""

    records: int
    errors: int
    bytes: int
    elapsed_s: float
    records_per_sec: float
    mb_per_sec: float
    avg_latency_ms: float
    max_latency_ms: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    p999_ms: float

    def line(self) -> str:
        """The summary line, in kafka-producer-perf-test's shape."""
        return (
            f"{self.records} records sent, {self.records_per_sec:.1f} records/sec "
            f"({self.mb_per_sec:.2f} MB/sec), {self.avg_latency_ms:.2f} ms avg latency, "
            f"{self.max_latency_ms:.2f} ms max latency, {self.p50_ms:.2f} ms 50th, "
            f"{self.p95_ms:.2f} ms 95th, {self.p99_ms:.2f} ms 99th, {self.p999_ms:.2f} ms 99.9th."
        )

    def json(self) -> str:
        return json.dumps({"tool": "produce", **asdict(self)}, sort_keys=True)


@dataclass(frozen=True)
class ConsumeResult:
    """The final figures of one consumer run (the ``--json`` object)."""

    records: int
    bytes: int
    elapsed_s: float
    records_per_sec: float
    mb: float
    mb_per_sec: float
    first_record_ms: float

    def line(self) -> str:
        return (
            f"{self.records} records consumed, {self.mb:.2f} MB, {self.mb_per_sec:.2f} MB/sec, "
            f"{self.records_per_sec:.1f} records/sec, {self.elapsed_s:.3f} s elapsed "
            f"(first record after {self.first_record_ms:.1f} ms)."
        )

    def json(self) -> str:
        return json.dumps({"tool": "consume", **asdict(self)}, sort_keys=True)


class ProduceStats:
    """Per-record acknowledgements in, progress lines and a ``ProduceResult`` out."""

    def __init__(self, report_interval: float = 5.0, out: TextIO | None = None) -> None:
        self.report_interval = report_interval
        self.out = out if out is not None else sys.stdout
        self.start = time.perf_counter()
        self.latencies = array("d")  # seconds, in acknowledgement order
        self.count = 0
        self.errors = 0
        self.first_error: BaseException | None = None
        self.bytes = 0
        self.max_latency = 0.0
        self.total_latency = 0.0
        self._reset_window(self.start)

    def _reset_window(self, now: float) -> None:
        self.window_start = now
        self.window_count = 0
        self.window_bytes = 0
        self.window_total = 0.0
        self.window_max = 0.0

    def record(self, latency: float, size: int, now: float) -> None:
        """One acknowledged record: ``latency`` seconds after its send()."""
        self.latencies.append(latency)
        self.count += 1
        self.bytes += size
        self.total_latency += latency
        if latency > self.max_latency:
            self.max_latency = latency
        self.window_count += 1
        self.window_bytes += size
        self.window_total += latency
        if latency > self.window_max:
            self.window_max = latency
        if now - self.window_start >= self.report_interval:
            self.print_window(now)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if self.first_error is None:
            self.first_error = exc

    def print_window(self, now: float) -> None:
        elapsed = max(now - self.window_start, 1e-9)
        n = self.window_count
        avg = self.window_total / n * 1000 if n else 0.0
        print(
            f"{n} records sent, {n / elapsed:.1f} records/sec "
            f"({self.window_bytes / elapsed / MB:.2f} MB/sec), {avg:.1f} ms avg latency, "
            f"{self.window_max * 1000:.1f} ms max latency.",
            file=self.out,
            flush=True,
        )
        self._reset_window(now)

    def result(self, end: float | None = None) -> ProduceResult:
        elapsed = max((end if end is not None else time.perf_counter()) - self.start, 1e-9)
        ordered = sorted(self.latencies)
        p50, p95, p99, p999 = (percentile(ordered, p) * 1000 for p in PERCENTILES)
        n = self.count
        return ProduceResult(
            records=n,
            errors=self.errors,
            bytes=self.bytes,
            elapsed_s=round(elapsed, 6),
            records_per_sec=n / elapsed,
            mb_per_sec=self.bytes / elapsed / MB,
            avg_latency_ms=self.total_latency / n * 1000 if n else 0.0,
            max_latency_ms=self.max_latency * 1000,
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            p999_ms=p999,
        )


def consume_result(records: int, size: int, elapsed: float, first_record: float) -> ConsumeResult:
    elapsed = max(elapsed, 1e-9)
    return ConsumeResult(
        records=records,
        bytes=size,
        elapsed_s=round(elapsed, 6),
        records_per_sec=records / elapsed,
        mb=size / MB,
        mb_per_sec=size / elapsed / MB,
        first_record_ms=first_record * 1000,
    )
