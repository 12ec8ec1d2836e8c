"""ketch/_malloc.py: consumers and nodes keep freed heap, so MiB fetch answers stop faulting pages in.

Each case runs in a fresh process (an interpreter or a node): the setting is once per process.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness import start_node

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="M_TOP_PAD is glibc's")

# Parses a 1 MiB Fetch answer and reads its records while two other 1 MiB buffers are
# alive, as the consumer does when an answer arrives: page faults per answer.
_ANSWERS = """
import json, os, resource, sys
from ketch.api.v1 import ketch_pb2 as pb
if sys.argv[1] == "consumer":
    from ketch.aio import Consumer
    Consumer("t", bootstrap_servers="127.0.0.1:1")
msg = pb.FetchResponse()
msg.partitions.add(topic="t", partition=0, records=os.urandom(1 << 20))
wire = msg.SerializeToString()
def answer():
    m = pb.FetchResponse.FromString(wire)
    records = m.partitions[0].records
    other = bytes(bytearray(wire))
    return len(records) + len(other)
answer()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    answer()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 50
from ketch import _malloc
print(json.dumps({"faults": faults, "pad": _malloc._applied}))
"""


def _answers(mode: str, **env: str) -> dict[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "KETCH_MALLOC"))}
    out = subprocess.run(
        [sys.executable, "-c", _ANSWERS, mode], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, float] = json.loads(out.stdout.splitlines()[-1])
    return result


@glibc_only
def test_a_consumer_process_stops_faulting_pages_in_for_each_answer() -> None:
    plain = _answers("plain")
    consumer = _answers("consumer")
    assert plain["pad"] is None  # nothing in that process asked
    assert plain["faults"] > 200  # glibc gave the freed MiBs back and faults them in again
    assert consumer["pad"] == 16 << 20
    assert consumer["faults"] < 20


@glibc_only
def test_the_environment_decides_when_it_says_so() -> None:
    assert _answers("consumer", KETCH_MALLOC_TOP_PAD="0")["pad"] == 0
    assert _answers("consumer", KETCH_MALLOC_TOP_PAD=str(4 << 20))["pad"] == 4 << 20
    for name in ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        assert _answers("consumer", **{name: str(1 << 20)})["pad"] == 0
    assert _answers("consumer", GLIBC_TUNABLES="glibc.malloc.top_pad=1048576")["pad"] == 0


@glibc_only
def test_a_node_keeps_freed_heap_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's side is measured in ketch/_malloc.py (a 3-node cluster's leader serving a consumer:
    194,040 page faults -> under ten); a single node here never trims its heap either way, so this
    checks that a node applies the setting, or leaves glibc alone when told to."""
    for name in ("MALLOC_TOP_PAD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("KETCH_MALLOC_TOP_PAD", raising=False)
    node = start_node(tmp_path / "kept")
    try:
        assert "freed heap kept: M_TOP_PAD 16 MiB, M_MMAP_THRESHOLD 32 MiB" in node.log_text()
        # and start-up's objects are out of the cyclic collector's passes (node/main.py, step 2)
        frozen = re.search(r"kept out of the cyclic garbage collector: (\d+)", node.log_text())
        assert frozen is not None and int(frozen.group(1)) > 10_000
    finally:
        node.close()
    monkeypatch.setenv("KETCH_MALLOC_TOP_PAD", "0")
    node = start_node(tmp_path / "default")
    try:
        assert "glibc's malloc defaults kept" in node.log_text()
    finally:
        node.close()
