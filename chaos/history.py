"""The history recorder: every operation of a chaos run as one JSON line.

Rules:
- ``t`` is seconds since the run began on the monotonic clock of the harness process,
  stamped here, so operations of every client share one time line.
- Lines are appended in the order operations happen and flushed at close; the file
  is the run's evidence, and ``load()`` gives the checker (chaos/checker.py) the same
  list of dicts it would have had in memory.
- A send gets an ``id`` at invoke; its completion (``ok``, ``fail`` or ``unknown``)
  repeats that id. The operation kinds and fields are listed in chaos/checker.py.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import IO, Any


class History:
    def __init__(self, path: Path | None = None) -> None:
        self.ops: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self._ids = itertools.count()
        self._file: IO[str] | None = open(path, "w") if path is not None else None  # noqa: SIM115 - closed in close()

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 4)

    def next_id(self) -> int:
        return next(self._ids)

    def record(self, f: str, type_: str, **fields: Any) -> dict[str, Any]:
        op = {"t": self.now(), "f": f, "type": type_, **fields}
        self.ops.append(op)
        if self._file is not None:
            self._file.write(json.dumps(op, separators=(",", ":")) + "\n")
        return op

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def load(path: Path) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
