"""A hand-driven network of pure ``RaftNode``s for unit tests (tests/test_raft_core.py, tests/test_raft_membership.py).

Nodes 1..n are the bootstrap voters, ``observers`` are extra ids that start outside
the voter set. Each node has a durable ``MemoryStorage`` (it persists every Ready as
the production driver does); messages sit in ``flight`` until ``deliver`` hands them
out round by round, so a test decides what arrives, and ``sent`` keeps everything
ever sent. ``directory(i)`` is node ``i``'s directory id ("" here: it matches any);
a subclass gives real ones, and ``wipe`` then brings a node back as a new replica.
"""

from __future__ import annotations

from coordinator.raft import Config, Entry, Message, RaftNode, ReadState, Role
from coordinator.raft.storage import MemoryStorage


class Net:
    def __init__(self, n: int = 3, *, observers: tuple[int, ...] = (), **opts: object) -> None:
        self.voters = tuple(range(1, n + 1))
        self.opts = opts
        ids = self.voters + observers
        self.incarnation = dict.fromkeys(ids, 0)
        self.disk: dict[int, MemoryStorage] = {i: MemoryStorage() for i in ids}
        self.nodes: dict[int, RaftNode | None] = {i: self._make(i) for i in ids}
        self.applied: dict[int, list[Entry]] = {i: [] for i in ids}
        self.reads: dict[int, list[ReadState]] = {i: [] for i in ids}
        self.flight: list[Message] = []
        self.sent: list[Message] = []

    def directory(self, i: int) -> str:
        return ""

    def _make(self, i: int) -> RaftNode:
        cfg = Config(i, self.voters, seed=i, directory=self.directory(i), **self.opts)  # type: ignore[arg-type]
        return RaftNode(cfg, self.disk[i].load())

    def node(self, i: int) -> RaftNode:
        node = self.nodes[i]
        assert node is not None
        return node

    def process(self) -> None:
        for i, node in self.nodes.items():
            while node is not None and (rd := node.ready()) is not None:
                self.disk[i].persist(rd)
                self.flight += rd.messages
                self.sent += rd.messages
                self.applied[i] += rd.committed_entries
                self.reads[i] += rd.read_states
                node.advance(rd)

    def deliver(self, rounds: int = 50, only: tuple[int, ...] = ()) -> None:
        """Deliver what is in flight (to ``only``, if given, dropping the rest), round by round."""
        for _ in range(rounds):
            self.process()
            if not self.flight:
                return
            batch, self.flight = self.flight, []
            for m in batch:
                node = self.nodes[m.to]
                if node is not None and (not only or m.to in only):
                    node.step(m)
        self.process()

    def tick(self, *ids: int, times: int = 1) -> None:
        for _ in range(times):
            for i in ids or tuple(self.nodes):
                node = self.nodes[i]
                if node is not None:
                    node.tick()
            self.deliver()

    def crash(self, i: int) -> None:
        self.nodes[i] = None
        self.applied[i] = []

    def restart(self, i: int) -> None:
        self.nodes[i] = self._make(i)

    def wipe(self, i: int) -> None:
        """Node ``i`` comes back with an empty disk, hence a new directory id: a new replica."""
        self.incarnation[i] += 1
        self.disk[i] = MemoryStorage()
        self.applied[i] = []
        self.nodes[i] = self._make(i)

    def leader(self) -> int:
        leaders = [i for i, n in self.nodes.items() if n is not None and n.role == Role.LEADER]
        assert len(leaders) == 1, leaders
        return leaders[0]
