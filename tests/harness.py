"""Real node processes for integration tests (random free ports, temp dirs)."""

from __future__ import annotations

from pathlib import Path

from node.process import NodeProcess


def start_node(tmp_path: Path, node_id: int = 1, extra_args: list[str] | None = None) -> NodeProcess:
    """A single combined node in ``tmp_path/node-<id>`` on free ports, its broker
    registered and unfenced (so topics can be placed on it); call ``close()``."""
    node = NodeProcess(tmp_path / f"node-{node_id}", node_id, extra_args).start()
    try:
        wait_broker_alive(node)
    except Exception:
        node.close()
        raise
    return node


def wait_broker_alive(node: NodeProcess, timeout_s: float = 30.0) -> None:
    node.wait_broker_alive(timeout_s)
