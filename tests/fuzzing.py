"""Shared by the fuzz tests (tests/test_fuzz_decoders.py, tests/test_fuzz_node.py): budget, hang guard,
counters and byte mutations.

- Budget: ``EXAMPLES`` inputs per Hypothesis test, ``KETCH_FUZZ_EXAMPLES`` (default 300), times
  50 with ``KETCH_SLOW=1``.
- ``attempt(name, decode, allowed, *args)`` calls one decoder on one input, counts it under
  ``name``, and lets through only a value or one of the ``allowed`` (documented, typed) errors;
  anything else (IndexError, struct.error, KeyError, UnicodeDecodeError, RecursionError,
  MemoryError ...) fails the test. A call that runs longer than ``HANG_S`` is stopped by SIGALRM and
  fails as a hang: Hypothesis's ``deadline`` only judges a call that returns.
- ``report()`` is the count per decoder; the tests print it at the end of their module (``-s``)
  and append it to ``KETCH_FUZZ_REPORT`` when that is set.
- ``mutate(data, draw)`` applies a few of: bit flips, byte overwrites, truncation, an insertion or
  deletion of bytes, a 32-bit field set to an extreme value (a length, count or size), junk appended.
"""

from __future__ import annotations

import json
import os
import signal
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("KETCH_FUZZ_EXAMPLES", "300")) * (50 if os.environ.get("KETCH_SLOW") else 1)
HANG_S = 5.0
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms per example: generous for a loaded 2-core machine, far below a hang
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # the budget is the same every run; failures print their example
)

TRIED: Counter[str] = Counter()
EXTREMES = (0, 1, 48, 49, 61, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFF4, 1 << 24)

R = TypeVar("R")


class Hang(Exception):
    """A decoder ran longer than ``HANG_S`` on one input."""


@contextmanager
def hang_guard(what: str, seconds: float = HANG_S) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"{what} ran longer than {seconds} s on one input")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def attempt(name: str, decode: Callable[..., R], allowed: tuple[type[BaseException], ...], *args: Any) -> R | None:
    """``decode(*args)``, or None when it raised one of ``allowed``; counted under ``name``."""
    TRIED[name] += 1
    with hang_guard(name):
        try:
            return decode(*args)
        except allowed:
            return None


def report() -> str:
    lines = [f"{'decoder':<44} inputs", *(f"{name:<44} {n}" for name, n in sorted(TRIED.items()))]
    return "\n".join(lines)


def write_report(module: str) -> None:
    print(f"\n{module}: inputs tried per decoder\n{report()}")
    path = os.environ.get("KETCH_FUZZ_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"module": module, "examples": EXAMPLES, "tried": dict(TRIED)}) + "\n")


def mutate(data: bytes, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    """``data`` after one to four drawn mutations."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "byte", "truncate", "insert", "delete", "extreme", "append"]))
        if kind == "append" or not out:
            out += draw(st.binary(min_size=1, max_size=16))
            continue
        at = draw(st.integers(0, len(out) - 1))
        if kind == "flip":
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            out[at] = draw(st.integers(0, 255))
        elif kind == "truncate":
            del out[at:]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del out[at : at + draw(st.integers(1, 8))]
        elif len(out) >= 4:
            at = min(at, len(out) - 4)
            struct.pack_into(">I", out, at, draw(st.sampled_from(EXTREMES)))
    return bytes(out)
