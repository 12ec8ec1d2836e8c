"""Shared fixtures: ``node`` is a real ``ketch node`` process in a temp dir."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import NodeProcess, start_node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NodeProcess]:
    proc = start_node(tmp_path)
    try:
        yield proc
    finally:
        proc.close()
