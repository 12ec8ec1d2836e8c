"""Real node processes for integration tests (random free ports, temp dirs)."""

from __future__ import annotations

from pathlib import Path

from node.process import NodeProcess


def start_node(tmp_path: Path, node_id: int = 1, extra_args: list[str] | None = None) -> NodeProcess:
    """A started node in ``tmp_path/node-<id>`` on free ports; call ``close()`` when done."""
    return NodeProcess(tmp_path / f"node-{node_id}", node_id, extra_args).start()


__all__ = ["NodeProcess", "start_node"]
