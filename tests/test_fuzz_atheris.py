"""Coverage-guided fuzzing with atheris (tests/atheris_decoders.py), only with ``KETCH_SLOW=1``.

atheris is a dev dependency where it ships a wheel (x86_64 Linux, CPython 3.11-3.13); elsewhere
this test skips. ``KETCH_ATHERIS_RUNS`` inputs (default 300000) in a child process, since libFuzzer
ends the process it runs in; a crash (an exception outside a decoder's contract) or a hang (over
5 s on one input) makes the child exit non-zero with the input saved under the test's tmp dir.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(os.environ.get("KETCH_ATHERIS_RUNS", "300000"))


@pytest.mark.skipif(not os.environ.get("KETCH_SLOW"), reason="coverage-guided fuzzing: set KETCH_SLOW=1")
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris has no wheel for this platform")
@pytest.mark.timeout(3600)
def test_atheris_finds_no_crash_or_hang_in_the_decoders(tmp_path: Path) -> None:
    counts = tmp_path / "counts.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "atheris_decoders.py"),
            f"-runs={RUNS}",
            "-timeout=5",
            "-rss_limit_mb=2048",
        ],
        cwd=tmp_path,
        env={**os.environ, "ATHERIS_COUNTS": str(counts), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    tail = "\n".join(proc.stderr.splitlines()[-30:])
    assert proc.returncode == 0, tail
    assert f"Done {RUNS} runs" in proc.stderr, tail
    print(f"\natheris: {RUNS} runs; inputs per decoder (to the last 1000): {json.loads(counts.read_text())}")
