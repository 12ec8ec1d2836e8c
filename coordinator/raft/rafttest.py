"""rafttest: the Raft core's transcript harness, in the package as etcd-io/raft ships rafttest/.

``run_transcript(text)`` runs a transcript and returns it with every command's
output regenerated; tests/test_raft_transcripts.py reads the scenarios
(``tests/raft_transcripts/*.txt``), compares, and rewrites them with ``REWRITE=1``.
This module stays pure like the rest of the package: it reads no files.

A transcript is a sequence of blocks, in the spirit of etcd-io/raft's ``testdata``
(datadriven) files::

    # comments explain the scenario
    command arg arg
    ----
    the output the command produced
    (a blank line ends the block)

Commands (``ID`` is a node id; several ids may be given where it makes sense):

- ``add-nodes N [election=10] [heartbeat=1] [pre-vote=true] [check-quorum=true]
  [max-entries=64]``: a fresh cluster of voters 1..N.
- ``campaign ID``; ``tick ID... [xK]`` (K ticks each); ``propose ID data``;
  ``read-index ID ctx``; ``transfer-leader ID TO``; ``compact ID INDEX`` (snapshot of
  the applied state at INDEX, log before it dropped).
- ``deliver [ID...]``: deliver every message in flight (to those nodes only, if
  given), in send order, once; replies are queued, not delivered.
  ``stabilize``: deliver until no message is in flight.
- ``partition 1 | 2 3``: messages between the sides are dropped when sent;
  ``heal`` ends it. ``crash ID``: the node stops, its memory is lost, messages to
  it are dropped; ``restart ID`` brings it back from its persisted state.
- ``status``: one line per node; ``log ID``: the node's log.

After every command each live node's Ready is handled exactly as the driver contract
says (persist into its ``MemoryStorage``, then send, then apply), and the harness
prints what happened: role, leader and term changes (``2 is follower of 1 at term
2``), every message sent (``1->2 APP term=2 log=1/3 commit=3 entries=[...]``, see
``describe_message``), logs overwritten from an index, snapshots installed, entries
applied and read states.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.raft.config import Config, RaftError, Role
from coordinator.raft.core import RaftNode
from coordinator.raft.messages import NONE, EntryKind, Message, describe_entry, describe_message
from coordinator.raft.ready import Ready
from coordinator.raft.storage import MemoryStorage


@dataclass
class TNode:
    """One voter: its config, its core (None while crashed), its disk and its applied pairs."""

    id: int
    config: Config
    raft: RaftNode | None
    disk: MemoryStorage = field(default_factory=MemoryStorage)
    applied: list[tuple[int, bytes]] = field(default_factory=list)
    seen: tuple[Role, int, int] = (Role.FOLLOWER, NONE, 0)


def _encode(applied: list[tuple[int, bytes]]) -> bytes:
    """The transcripts' state machine: the applied (index, data) pairs, as a snapshot."""
    return b",".join(b"%d:%s" % pair for pair in applied)


def _decode(data: bytes) -> list[tuple[int, bytes]]:
    pairs = (item.split(b":", 1) for item in data.split(b",")) if data else ()
    return [(int(i), d) for i, d in pairs]


class Cluster:
    """Voters 1..N, the messages in flight and a partition; ``run(line)`` runs one command."""

    def __init__(self) -> None:
        self.nodes: dict[int, TNode] = {}
        self.network: list[Message] = []
        self.side: dict[int, int] = {}
        self.out: list[str] = []

    # -- command dispatch ----------------------------------------------------------------

    def run(self, line: str) -> str:
        self.out = []
        cmd, *args = line.split()
        getattr(self, "cmd_" + cmd.replace("-", "_"))(args)
        self._process()
        return "\n".join(self.out) if self.out else "ok"

    def _node(self, arg: str) -> TNode:
        return self.nodes[int(arg)]

    def _raft(self, arg: str) -> RaftNode:
        raft = self._node(arg).raft
        assert raft is not None, f"node {arg} is down"
        return raft

    def cmd_add_nodes(self, args: list[str]) -> None:
        count = int(args[0])
        opts = dict(a.split("=") for a in args[1:])
        voters = tuple(range(1, count + 1))
        for i in voters:
            cfg = Config(
                i,
                voters,
                election_timeout_ticks=int(opts.get("election", 10)),
                heartbeat_ticks=int(opts.get("heartbeat", 1)),
                max_entries_per_msg=int(opts.get("max-entries", 64)),
                pre_vote=opts.get("pre-vote", "true") == "true",
                check_quorum=opts.get("check-quorum", "true") == "true",
                seed=i,
            )
            self.nodes[i] = TNode(i, cfg, RaftNode(cfg))

    def cmd_campaign(self, args: list[str]) -> None:
        self._raft(args[0]).campaign()

    def cmd_tick(self, args: list[str]) -> None:
        times = int(args.pop()[1:]) if args[-1].startswith("x") else 1
        for _ in range(times):
            for a in args:
                self._raft(a).tick()
                self._process()

    def cmd_propose(self, args: list[str]) -> None:
        try:
            self.out.append(f"index {self._raft(args[0]).propose(args[1].encode())}")
        except RaftError as e:
            self.out.append(f"{type(e).__name__}: {e}")

    def cmd_read_index(self, args: list[str]) -> None:
        try:
            self._raft(args[0]).read_index(args[1].encode())
        except RaftError as e:
            self.out.append(f"{type(e).__name__}: {e}")

    def cmd_transfer_leader(self, args: list[str]) -> None:
        self._raft(args[0]).transfer_leadership(int(args[1]))

    def cmd_compact(self, args: list[str]) -> None:
        n = self._node(args[0])
        raft = self._raft(args[0])
        index = int(args[1])
        snap = raft.compact(index, _encode([(i, d) for i, d in n.applied if i <= index]))
        n.disk.compact(snap)
        self.out.append(f"{n.id} compacted to {snap.term}/{snap.index}; first index {raft.log.first_index}")

    def cmd_deliver(self, args: list[str]) -> None:
        targets = {int(a) for a in args} or set(self.nodes)
        batch = [m for m in self.network if m.to in targets]
        self.network = [m for m in self.network if m.to not in targets]
        for m in batch:
            raft = self.nodes[m.to].raft
            if raft is not None:
                raft.step(m)
        self._process()

    def cmd_stabilize(self, args: list[str]) -> None:
        for _ in range(100):
            if not self.network:
                return
            self.cmd_deliver(args)
        raise AssertionError("did not stabilize in 100 rounds")

    def cmd_partition(self, args: list[str]) -> None:
        side = 0
        for a in args:
            if a == "|":
                side += 1
            else:
                self.side[int(a)] = side

    def cmd_heal(self, args: list[str]) -> None:
        self.side = {}

    def cmd_crash(self, args: list[str]) -> None:
        n = self._node(args[0])
        n.raft = None
        self.network = [m for m in self.network if m.to != n.id]

    def cmd_restart(self, args: list[str]) -> None:
        n = self._node(args[0])
        state = n.disk.load()
        n.raft = RaftNode(n.config, state)
        n.applied = _decode(state.snapshot.data)
        hs, snap = state.hard_state, state.snapshot
        self.out.append(
            f"{n.id} restarted: term={hs.term} vote={hs.vote} commit={hs.commit} "
            f"snapshot={snap.term}/{snap.index} entries={len(state.entries)}"
        )

    def cmd_status(self, args: list[str]) -> None:
        for n in self.nodes.values():
            if n.raft is None:
                self.out.append(f"{n.id}: down")
                continue
            s = n.raft.status()
            self.out.append(
                f"{n.id}: {s.role.name} term={s.term} vote={s.vote} leader={s.leader} "
                f"commit={s.commit} applied={s.applied} log={s.first_index}..{s.last_index}"
            )

    def cmd_log(self, args: list[str]) -> None:
        raft = self._raft(args[0])
        log = raft.log
        parts = [f"snapshot {log.snapshot.term}/{log.snapshot.index}"] if log.offset else []
        parts += [describe_entry(e) for e in log.entries]
        self.out.append(f"{args[0]}: " + (", ".join(parts) if parts else "empty"))

    # -- the driver ----------------------------------------------------------------------

    def _process(self) -> None:
        progress = True
        while progress:
            progress = False
            for n in self.nodes.values():
                if n.raft is not None:
                    self._report_role(n, n.raft)
                    rd = n.raft.ready()
                    if rd is not None:
                        self._handle(n, n.raft, rd)
                        progress = True

    def _report_role(self, n: TNode, raft: RaftNode) -> None:
        now = (raft.role, raft.leader, raft.term)
        if now == n.seen:
            return
        n.seen = now
        role = raft.role.name.lower().replace("_", "-")
        if raft.role == Role.FOLLOWER:
            of = f" of {raft.leader}" if raft.leader else ""
            self.out.append(f"{n.id} is follower{of} at term {raft.term}")
        else:
            self.out.append(f"{n.id} is {role} at term {raft.term}")

    def _handle(self, n: TNode, raft: RaftNode, rd: Ready) -> None:
        # a snapshot replaces the whole log, so only entries alone can overwrite stored ones
        overwrites = rd.snapshot is None and bool(rd.entries) and rd.entries[0].index <= n.disk.last_index
        n.disk.persist(rd)
        if rd.snapshot is not None:
            n.applied = _decode(rd.snapshot.data)
            self.out.append(f"{n.id} installs snapshot {rd.snapshot.term}/{rd.snapshot.index}")
        if overwrites:
            self.out.append(f"{n.id} overwrites its log from index {rd.entries[0].index}")
        for m in rd.messages:
            if self.side.get(m.frm, 0) != self.side.get(m.to, 0) or self.nodes[m.to].raft is None:
                self.out.append(describe_message(m) + "  (dropped)")
            else:
                self.out.append(describe_message(m))
                self.network.append(m)
        for e in rd.committed_entries:
            if e.kind == EntryKind.NORMAL:
                n.applied.append((e.index, e.data))
            self.out.append(f"{n.id} applies {describe_entry(e)}")
        for rs in rd.read_states:
            self.out.append(f"{n.id} read-state ctx={rs.context.decode()} index={rs.index}")
        raft.advance(rd)


# -- the file format ----------------------------------------------------------------------


def run_transcript(text: str) -> str:
    """Run every command in ``text``; return the text with the outputs regenerated."""
    cluster = Cluster()
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.startswith("#"):
            out.append(line)
            continue
        assert i < len(lines) and lines[i] == "----", f"line {i}: expected ---- after {line!r}"
        i += 1
        while i < len(lines) and lines[i].strip():
            i += 1
        out += [line, "----", cluster.run(line), ""]
        if i < len(lines):
            i += 1
    return "\n".join(out).rstrip("\n") + "\n"
