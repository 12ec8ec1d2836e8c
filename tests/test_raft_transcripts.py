"""Transcript tests of the Raft core: scripted scenarios with their expected output.

Each ``tests/raft_transcripts/*.txt`` file is run by the harness in
coordinator/raft/rafttest.py (which documents the file format and the commands) and
must come back byte for byte as it is: a comment states the rule, then commands and
the exact output they produce.

``REWRITE=1 pytest tests/test_raft_transcripts.py`` regenerates the expected output;
a regenerated file must be read and checked by a person before it is committed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from coordinator.raft.rafttest import run_transcript

DIR = Path(__file__).parent / "raft_transcripts"
FILES = sorted(DIR.glob("*.txt"))


def test_transcripts_exist() -> None:
    names = {f.stem for f in FILES}
    for required in (
        "election",
        "split_vote",
        "prevote_rejoin",
        "log_conflict",
        "snapshot_install",
        "check_quorum",
        "read_index",
    ):
        assert required in names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_transcript(path: Path) -> None:
    expected = path.read_text()
    actual = run_transcript(expected)
    if os.environ.get("REWRITE") == "1":
        path.write_text(actual)
        return
    assert actual == expected
