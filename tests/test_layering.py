"""The layers, guarded from the source: pure cores stay pure, lower layers never reach up, files stay small.

Rules (issue 12, and STYLE.md's "drivers are thin"):
- Every pure module (``PURE`` below) and everything it imports, transitively,
  is free of I/O, clocks, threads and randomness: none of ``BANNED`` (or their
  submodules) is imported and no module in that closure calls ``open``. Time,
  ids and random draws come in as arguments; drivers (asyncio, gRPC,
  RocksDB) sit around the pure calls.
- coordinator/ and replication/ never import node/, bench/ or ketch/cli,
  directly or through anything they import (the process and the command
  line sit above the cores, not below them).
- No hand-written Python file outside tests/ is over ``MAX_LINES`` lines;
  generated protobuf modules (``*_pb2.py``, ``*_pb2_grpc.py``) don't count.

How: imports are read with ``ast``, never executed. ``import a.b.c`` and
``from a.b import c`` run the package ``__init__`` files on the way, so those
count as imports too; function-local imports count (they run when called).
Imports under ``if TYPE_CHECKING:`` never run: they are left out of the
purity closure but still count as a layer dependency (naming a node/ type
from coordinator/ is an upward dependency even if only the type checker
sees it). Modules outside the repository (stdlib, third party) are leaves,
judged by their top-level name. A failure names the whole chain
``a -> b -> c`` with the line of each import, or the file and its length.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_LINES = 500

BANNED = frozenset(
    # The list, plus what the old per-package purity tests also banned (uuid, pickle, io).
    {"asyncio", "grpc", "rocksdict", "socket", "os", "time", "random", "logging", "threading"}
    | {"uuid", "pickle", "io"}
)

# Pure packages (every module in them) and pure single modules, each with why it is pure.
PURE: dict[str, str] = {
    "coordinator/raft": "the Raft core: messages and ticks in, a Ready out (etcd-raft's RawNode)",
    "coordinator/metadata": "the KRaft controller: commands return records, replay alone changes the image",
    "coordinator/groups": "the group coordinator's state machine: requests in, records and responses out",
    "coordinator/transactions": "the transaction coordinator's state machine: requests in, records and marker jobs out",
    "replication": "the replica rules over a PartitionLog (leader, follower, epochs, the in-memory log)",
    "ketch/assignors": "partition assignment: member subscriptions in, an assignment out",
    "ketch/errors.py": "error codes and exceptions shared by client, broker and controller",
    "ketch/recordbatch.py": "RecordBatch v2 header parsing and validation: bytes in, fields out",
    "ketch/records.py": "the client's record types and batch codec",
    "ketch/topic_partition.py": "the one TopicPartition type of client, assignors and broker",
    "ketch/group_rules.py": "the client's group rules: error actions, assignor choice, what an assignment changes",
    "ketch/idempotence.py": "the idempotent producer's sequence bookkeeping: batches and outcomes in, stamps out",
    "ketch/partitioner.py": "murmur2 and the sticky partitioner; its random.Random is injected",
    "ketch/transaction_manager.py": "the transactional producer's states: calls and answers in, permissions out",
}
# Modules inside a pure package that are drivers by design.
IMPURE_IN_PURE: dict[str, str] = {
    "replication/rocks_log.py": "the partition log on RocksDB (threads, a store)",
    "replication/rocks_store.py": "the node's one RocksDB",
}
LOWER_LAYERS = ("coordinator", "replication")
UPPER_LAYERS = ("node", "bench", "ketch.cli")


@dataclass(frozen=True)
class Import:
    module: str  # dotted name; a top-level name for anything outside the repository
    line: int
    type_only: bool


class ImportGraph:
    """The import statements of the repository's modules, read with ``ast``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._imports: dict[str, list[Import]] = {}

    def path(self, module: str) -> Path | None:
        """The file of an in-repository module or package, else None."""
        base = self.root.joinpath(*module.split("."))
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate
        return None

    def module_name(self, path: Path) -> str:
        parts = path.relative_to(self.root).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def modules_under(self, rel: str) -> list[str]:
        """The modules of a package directory (recursively), or the one module of a .py path."""
        target = self.root / rel
        files = [target] if target.suffix == ".py" else sorted(target.rglob("*.py"))
        return [self.module_name(f) for f in files if "__pycache__" not in f.parts]

    def imports(self, module: str) -> list[Import]:
        if module not in self._imports:
            path = self.path(module)
            self._imports[module] = [] if path is None else self._read(module, path)
        return self._imports[module]

    def _read(self, module: str, path: Path) -> list[Import]:
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        out: list[Import] = []
        for node, type_only in _import_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    out += self._with_parents(alias.name, node.lineno, type_only)
                continue
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            out += self._with_parents(base, node.lineno, type_only)
            for alias in node.names:  # ``from pkg import mod`` imports the submodule
                if self.path(f"{base}.{alias.name}") is not None:
                    out.append(Import(f"{base}.{alias.name}", node.lineno, type_only))
        return out

    def _with_parents(self, name: str, line: int, type_only: bool) -> list[Import]:
        parts = name.split(".")
        if self.path(parts[0]) is None:  # stdlib or third party: a leaf, by its top-level name
            return [Import(parts[0], line, type_only)]
        # Deepest first, so a chain names node.catalog rather than just node.
        return [Import(".".join(parts[:i]), line, type_only) for i in range(len(parts), 0, -1)]

    def chains(self, start: str, bad: Callable[[str], bool], *, runtime_only: bool) -> Iterator[list[tuple[str, int]]]:
        """For every bad module reachable from ``start``: the shortest chain to it, as (module, line) steps."""
        came_from: dict[str, tuple[str, int] | None] = {start: None}
        queue = deque([start])
        while queue:
            module = queue.popleft()
            if bad(module) and module != start:
                yield _unwind(came_from, module)
                continue
            for imp in self.imports(module):
                if (runtime_only and imp.type_only) or imp.module in came_from:
                    continue
                came_from[imp.module] = (module, imp.line)
                queue.append(imp.module)

    def closure(self, start: str) -> set[str]:
        """``start`` and every in-repository module it imports at runtime, transitively."""
        seen = {start}
        queue = deque([start])
        while queue:
            for imp in self.imports(queue.popleft()):
                if not imp.type_only and imp.module not in seen and self.path(imp.module) is not None:
                    seen.add(imp.module)
                    queue.append(imp.module)
        return seen


def _import_nodes(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement, with whether it sits under ``if TYPE_CHECKING:``."""

    def walk(node: ast.AST, type_only: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                yield child, type_only
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), True)
                for stmt in child.orelse:
                    yield from walk(ast.Module(body=[stmt], type_ignores=[]), type_only)
            else:
                yield from walk(child, type_only)

    yield from walk(tree, False)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _unwind(came_from: dict[str, tuple[str, int] | None], end: str) -> list[tuple[str, int]]:
    steps: list[tuple[str, int]] = []
    module, step = end, came_from[end]
    while step is not None:
        parent, line = step
        steps.append((module, line))
        module, step = parent, came_from[parent]
    steps.append((module, 0))
    return steps[::-1]


def _show(chain: list[tuple[str, int]]) -> str:
    """``a -> b (a:12) -> c (b:3)``: each step with the line of the import that takes it."""
    head, *rest = chain
    out = head[0]
    previous = head[0]
    for module, line in rest:
        out += f" -> {module} ({previous}:{line})"
        previous = module
    return out


def _own(chains: Iterator[list[tuple[str, int]]], checked: set[str]) -> Iterator[list[tuple[str, int]]]:
    """The chains that pass through no other checked module: that module's own report names the culprit."""
    return (chain for chain in chains if not any(step in checked for step, _ in chain[1:-1]))


def _banned(module: str) -> bool:
    return module.split(".")[0] in BANNED


def _within(prefixes: tuple[str, ...]) -> Callable[[str], bool]:
    return lambda module: any(module == p or module.startswith(p + ".") for p in prefixes)


def _calls_open(path: Path) -> list[int]:
    tree = ast.parse(path.read_text(), str(path))
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "open"]


def pure_modules(graph: ImportGraph, pure: dict[str, str], impure: dict[str, str]) -> list[str]:
    excluded = {graph.module_name(graph.root / rel) for rel in impure}
    return sorted({m for rel in pure for m in graph.modules_under(rel)} - excluded)


def purity_violations(graph: ImportGraph, pure: dict[str, str], impure: dict[str, str]) -> list[str]:
    problems: list[str] = []
    modules = set(pure_modules(graph, pure, impure))
    for module in sorted(modules):
        path = graph.path(module)
        assert path is not None
        if not ast.get_docstring(ast.parse(path.read_text())):
            problems.append(f"{path.relative_to(graph.root)} has no module docstring stating its rules")
        routes: dict[tuple[tuple[str, int], ...], list[str]] = {}
        for chain in _own(graph.chains(module, _banned, runtime_only=True), modules):
            *route, (leaf, line) = chain
            routes.setdefault(tuple(route), []).append(f"{leaf} ({route[-1][0]}:{line})")
        for steps, leaves in routes.items():
            problems.append(f"pure {module} imports {', '.join(leaves)}: {_show(list(steps))}")
        for dependency in sorted(graph.closure(module) - (modules - {module})):  # pure ones report themselves
            dep_path = graph.path(dependency)
            assert dep_path is not None
            for line in _calls_open(dep_path):
                problems.append(f"pure {module} does file I/O: {dependency} calls open() at line {line}")
    return sorted(set(problems))


def layer_violations(graph: ImportGraph, lower: tuple[str, ...], upper: tuple[str, ...]) -> list[str]:
    problems: list[str] = []
    modules = {m for package in lower for m in graph.modules_under(package)}
    for module in sorted(modules):
        for layer in upper:  # the shortest chain into each upper layer is enough to act on
            chain = next(_own(graph.chains(module, _within((layer,)), runtime_only=False), modules), None)
            if chain is not None:
                problems.append(f"{module} reaches up into {chain[-1][0]}: {_show(chain)}")
    return problems


def _is_python(path: Path) -> bool:
    if path.suffix == ".py":
        return True
    if path.suffix or not path.is_file():
        return False
    with path.open("rb") as f:
        first = f.readline(200)
    return first.startswith(b"#!") and b"python" in first


def hand_written_python(root: Path) -> Iterator[Path]:
    """Python sources outside tests/, caches, virtualenvs and generated protobuf modules."""
    for path in sorted(root.iterdir()):
        if path.name.startswith(".") or path.name in ("tests", "__pycache__", "build", "dist"):
            continue
        if path.name.endswith(".egg-info"):
            continue
        if path.is_dir():
            yield from hand_written_python(path)
        elif _is_python(path) and not path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            yield path


def oversized_files(root: Path, limit: int) -> list[str]:
    problems = []
    for path in hand_written_python(root):
        lines = len(path.read_text().splitlines())
        if lines > limit:
            problems.append(f"{path.relative_to(root)} is {lines} lines (limit {limit}): split it by responsibility")
    return problems


# -- the repository -----------------------------------------------------------------------------


def test_pure_modules_import_no_io_clocks_or_threads() -> None:
    graph = ImportGraph(ROOT)
    assert pure_modules(graph, PURE, IMPURE_IN_PURE), "no pure modules found: is ROOT right?"
    problems = purity_violations(graph, PURE, IMPURE_IN_PURE)
    assert not problems, "\n".join(problems)


def test_coordinator_and_replication_never_import_node_bench_or_cli() -> None:
    problems = layer_violations(ImportGraph(ROOT), LOWER_LAYERS, UPPER_LAYERS)
    assert not problems, "\n".join(problems)


def test_bench_does_not_import_the_cli() -> None:
    # ``ketch perf`` loads bench/, so bench/ loading ketch.cli back would be an import cycle.
    problems = layer_violations(ImportGraph(ROOT), ("bench",), ("ketch.cli",))
    assert not problems, "\n".join(problems)


def test_no_hand_written_python_file_is_over_the_limit() -> None:
    problems = oversized_files(ROOT, MAX_LINES)
    assert not problems, "\n".join(problems)


# -- the checker itself, on a synthetic repository (so it is proven able to fail, every run) ------


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    _write(
        tmp_path,
        {
            "core/__init__.py": '"""Core."""\nfrom core.rules import rule\n',
            "core/rules.py": '"""Rules."""\nfrom . import helpers\n\ndef rule():\n    return helpers.x\n',
            "core/helpers.py": '"""Helpers."""\nimport struct\nx = 1\n',
            "core/typed.py": (
                '"""Typed."""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import asyncio\n'
            ),
            "app/__init__.py": "",
            "app/main.py": "import os\nimport core\n",
        },
    )
    return tmp_path


def test_checker_passes_a_clean_tree(tiny: Path) -> None:
    # core.typed names asyncio for the type checker only: that never runs, so core stays pure.
    graph = ImportGraph(tiny)
    assert purity_violations(graph, {"core": "pure"}, {}) == []
    assert layer_violations(graph, ("core",), ("app",)) == []
    assert oversized_files(tiny, 10) == []


def test_checker_names_the_chain_to_a_banned_module(tiny: Path) -> None:
    # The relative import runs the package __init__, which imports a module whose function imports time.
    _write(
        tiny,
        {
            "core/__init__.py": '"""Core."""\nfrom core.clock import now\n',
            "core/clock.py": '"""Clock."""\n\ndef now():\n    import time\n    return time.time()\n',
        },
    )
    problems = purity_violations(ImportGraph(tiny), {"core/rules.py": "pure"}, {})
    assert problems == [
        "pure core.rules imports time (core.clock:4): core.rules -> core (core.rules:2) -> core.clock (core:2)"
    ]
    # Once the package is pure too, the blame lands on the deepest pure module only.
    problems = purity_violations(ImportGraph(tiny), {"core": "pure"}, {})
    assert problems == ["pure core.clock imports time (core.clock:4): core.clock"]


def test_checker_names_the_chain_of_an_upward_import(tiny: Path) -> None:
    # Even a type-only import is an upward dependency.
    typed = '"""Typed."""\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from app.main import y\n'
    _write(tiny, {"core/typed.py": typed})
    problems = layer_violations(ImportGraph(tiny), ("core",), ("app",))
    assert problems == ["core.typed reaches up into app.main: core.typed -> app.main (core.typed:4)"]


def test_checker_finds_open_calls_and_missing_docstrings(tiny: Path) -> None:
    _write(tiny, {"core/helpers.py": "def load(p):\n    return open(p).read()\n"})
    problems = purity_violations(ImportGraph(tiny), {"core": "pure"}, {})
    assert "core/helpers.py has no module docstring stating its rules" in problems
    assert "pure core.helpers does file I/O: core.helpers calls open() at line 2" in problems
    problems = purity_violations(ImportGraph(tiny), {"core/rules.py": "pure"}, {})
    assert problems == ["pure core.rules does file I/O: core.helpers calls open() at line 2"]


def test_checker_reports_an_oversized_file_but_not_tests_or_generated_code(tiny: Path) -> None:
    _write(tiny, {"app/big.py": "x = 1\n" * 11, "tests/test_big.py": "x = 1\n" * 11, "app/big_pb2.py": "x = 1\n" * 11})
    assert oversized_files(tiny, 10) == ["app/big.py is 11 lines (limit 10): split it by responsibility"]
