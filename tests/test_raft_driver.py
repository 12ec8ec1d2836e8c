"""The Raft driver end to end: real gRPC on loopback, real RocksDB, real clock.

Each test runs a quorum in one process under ``asyncio.run``, with a 20 ms tick
(elections in 200-400 ms), and tears everything down (drivers, servers, stores)
in ``finally``. Checked: one leader is elected and replicates proposals in the
same order to every state machine; a stopped leader is replaced; a restarted
node recovers term, vote and log and catches up; a node that fell behind a
compaction catches up through snapshot install, and one that lost its whole
store is refused loudly (it would be a second voter with amnesia);
ReadIndex answers only with a quorum's confirmation; proposals and reads fail
with NotLeader instead of hanging when leadership is lost; messages from unknown
ids or of unknown types are dropped; a state machine failure is fatal.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from coordinator.raft import Entry, EntryKind, NotLeader, Role, Snapshot, SoftState
from coordinator.raft_driver import RaftDriver, RaftStopped
from coordinator.raft_storage import RaftStorage
from coordinator.raft_transport import channel_options, server_options
from ketch.api.v1 import raft_pb2, raft_pb2_grpc
from node.process import free_ports
from replication.rocks_store import NodeStore

_LEN = struct.Struct(">I")


class ListSM:
    """A state machine that records every NORMAL entry's data, in order."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.applied = 0
        self.restores = 0
        self.noops = 0
        self.soft: list[tuple[SoftState, int]] = []
        self.fail_on: bytes | None = None
        self.confs = 0

    def apply(self, entry: Entry) -> None:
        assert entry.index == self.applied + 1, (entry.index, self.applied)
        if entry.data == self.fail_on and entry.data:
            raise RuntimeError("state machine refuses " + entry.data.decode())
        self.applied = entry.index
        if entry.kind == EntryKind.NOOP:
            self.noops += 1
        elif entry.kind == EntryKind.CONF:
            self.confs += 1  # the first leader binds the voters' directory ids
        else:
            self.data.append(entry.data)

    def restore(self, snapshot: Snapshot) -> None:
        self.restores += 1
        self.applied = snapshot.index
        self.data, buf = [], snapshot.data
        while buf:
            (n,) = _LEN.unpack_from(buf)
            self.data.append(buf[4 : 4 + n])
            buf = buf[4 + n :]

    def snapshot(self) -> tuple[int, bytes]:
        return self.applied, b"".join(_LEN.pack(len(d)) + d for d in self.data)

    def on_soft_state(self, soft: SoftState, term: int) -> None:
        self.soft.append((soft, term))


class Member:
    def __init__(self, node_id: int, path: Path) -> None:
        self.id = node_id
        self.path = path
        self.store: NodeStore | None = None
        self.server: grpc.aio.Server | None = None
        self.driver: RaftDriver | None = None
        self.sm = ListSM()

    @property
    def d(self) -> RaftDriver:
        assert self.driver is not None
        return self.driver


class Cluster:
    def __init__(self, tmp_path: Path, n: int = 3, **driver_kw: Any) -> None:
        self.tmp_path = tmp_path
        self.voters = {i: f"127.0.0.1:{port}" for i, port in enumerate(free_ports(n), start=1)}
        self.members = {i: Member(i, tmp_path / f"n{i}") for i in self.voters}
        self.driver_kw = {"tick_ms": 20, "snapshot_every": 1000, **driver_kw}
        self.starts = 0

    async def start(self, i: int, fresh_sm: bool = True) -> Member:
        m = self.members[i]
        if m.store is None:
            m.store = NodeStore.open(str(m.path))
        if fresh_sm:
            m.sm = ListSM()
        self.starts += 1
        m.driver = RaftDriver(i, self.voters, RaftStorage(m.store), m.sm, seed=self.starts, **self.driver_kw)
        m.server = grpc.aio.server(options=[*server_options(), ("grpc.so_reuseport", 0)])
        m.server.add_insecure_port(self.voters[i])
        m.driver.add_to_server(m.server)
        await m.server.start()
        await m.driver.start()
        return m

    async def start_all(self) -> None:
        for i in self.members:
            await self.start(i)

    async def stop(self, i: int, close_store: bool = True) -> None:
        m = self.members[i]
        if m.driver is not None:
            await m.driver.stop()
        if m.server is not None:
            await m.server.stop(0)
            m.server = None
        if close_store and m.store is not None:
            m.store.close()
            m.store = None

    async def close(self) -> None:
        for i in self.members:
            await self.stop(i)

    def running(self) -> list[Member]:
        return [m for m in self.members.values() if m.driver is not None and m.driver.running]

    async def leader(self, timeout_s: float = 5.0, exclude: int = 0) -> Member:
        """The one leader every running member agrees on."""

        def agreed() -> Member | None:
            live = self.running()
            leaders = [m for m in live if m.d.is_leader and m.id != exclude]
            if len(leaders) == 1 and all(m.d.leader_id == leaders[0].id for m in live):
                return leaders[0]
            return None

        return await until(agreed, timeout_s, "no agreed leader")

    async def converged(self, index: int, timeout_s: float = 5.0) -> None:
        await until(lambda: all(m.sm.applied >= index for m in self.running()), timeout_s, f"not applied {index}")


async def until(cond: Callable[[], Any], timeout_s: float, what: str) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        value = cond()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out: {what}")
        await asyncio.sleep(0.01)


def run(tmp_path: Path, body: Callable[[Cluster], Any], n: int = 3, **driver_kw: Any) -> None:
    async def main() -> None:
        cluster = Cluster(tmp_path, n, **driver_kw)
        try:
            await cluster.start_all()
            await body(cluster)
        finally:
            await cluster.close()

    asyncio.run(main())


# -- tests ---------------------------------------------------------------------------------


def test_elect_one_leader_and_replicate_in_order(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        follower = next(m for m in c.members.values() if m is not lead)
        with pytest.raises(NotLeader) as info:
            await follower.d.propose(b"nope")
        assert info.value.leader == lead.id
        payloads = [b"p%02d" % k for k in range(30)]
        indexes = await asyncio.gather(*(lead.d.propose(p, timeout_s=5) for p in payloads))
        assert indexes == sorted(indexes) and len(set(indexes)) == 30
        await c.converged(indexes[-1])
        for m in c.members.values():
            assert m.sm.data == payloads
            assert m.sm.noops >= 1
            assert m.d.term == lead.d.term and m.d.commit_index >= indexes[-1]
        st = lead.d.status()
        assert st.role == Role.LEADER and st.leader == lead.id and st.commit >= indexes[-1]
        assert dict(st.match).keys() == {1, 2, 3}
        assert lead.sm.soft[-1][0] == SoftState(lead.id, Role.LEADER)
        assert all(s["sent_batches"] > 0 for s in lead.d.peer_stats().values())

    run(tmp_path, body)


def test_stopped_leader_is_replaced(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        old = await c.leader()
        first = await old.d.propose(b"before")
        await c.converged(first)
        old_term = old.d.term
        await old.d.stop()  # its server keeps answering, but the stopped driver ignores input
        with pytest.raises(RaftStopped):
            await old.d.propose(b"too late")
        t0 = asyncio.get_running_loop().time()
        new = await c.leader(timeout_s=4.0)
        assert new is not old and new.d.term > old_term
        assert asyncio.get_running_loop().time() - t0 < 4.0
        index = await new.d.propose(b"after")
        await c.converged(index)
        for m in c.running():
            assert m.sm.data == [b"before", b"after"]

    run(tmp_path, body)


def test_restarted_node_recovers_term_vote_log_and_catches_up(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        for k in range(5):
            await lead.d.propose(b"a%d" % k)
        f = next(m for m in c.members.values() if m is not lead)
        await c.converged(lead.d.applied_index)
        before = f.d.status()
        await c.stop(f.id)
        for k in range(5):
            await lead.d.propose(b"b%d" % k)
        await c.start(f.id)  # a new driver and state machine over the same store
        st = f.d.status()
        assert (st.term, st.vote) == (before.term, before.vote) and st.last_index >= before.last_index
        await c.converged(lead.d.applied_index)
        assert f.sm.data == lead.sm.data == [b"a%d" % k for k in range(5)] + [b"b%d" % k for k in range(5)]
        assert f.sm.restores == 0  # replayed from its own log, no snapshot needed

    run(tmp_path, body)


def test_transfer_leadership(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        target = next(m for m in c.members.values() if m is not lead)
        term = lead.d.term
        lead.d.transfer_leadership(target.id)
        new = await c.leader(exclude=lead.id)
        assert new is target and target.d.term == term + 1  # campaigned at once, no pre-vote
        await until(lambda: lead.sm.soft[-1] == (SoftState(target.id, Role.FOLLOWER), term + 1), 2.0, "told")
        index = await target.d.propose(b"after transfer")
        await c.converged(index)

    run(tmp_path, body)


def test_node_behind_compaction_catches_up_by_snapshot(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        f = next(m for m in c.members.values() if m is not lead)
        await c.stop(f.id)
        for k in range(25):
            await lead.d.propose(b"c%d" % k)
        await until(lambda: lead.d.storage.snapshot().index > 10, 3.0, "leader compacted")
        assert lead.d.compactions >= 2 and lead.d.status().snapshot_index > 10
        await c.start(f.id)
        await c.converged(lead.d.applied_index)
        assert f.sm.restores >= 1
        assert f.sm.data == lead.sm.data == [b"c%d" % k for k in range(25)]
        index = await lead.d.propose(b"tail")
        await c.converged(index)
        assert f.sm.data[-1] == b"tail"
        assert f.d.storage.load().snapshot.index > 0

    run(tmp_path, body, snapshot_every=5)


def _voter_dirs(m: Member) -> dict[int, str]:
    return {v.id: v.directory for v in m.d.status().voters}


def test_wiped_node_rejoins_as_a_new_replica(tmp_path: Path) -> None:
    """A voter that lost its store comes back with a new directory id (KIP-853): it is an
    observer, never votes or counts as its old self, catches up, and becomes a voter again
    only through a membership change (here the operator's remove + add)."""

    async def body(c: Cluster) -> None:
        lead = await c.leader()
        for k in range(3):
            await lead.d.propose(b"w%d" % k)
        await until(lambda: all(_voter_dirs(lead).values()), 3.0, "the leader binds every directory id")
        f = next(m for m in c.members.values() if m is not lead)
        await c.converged(lead.d.applied_index)
        old_dir = f.d.config.directory
        await c.stop(f.id, close_store=False)
        assert f.store is not None
        RaftStorage(f.store).wipe()
        await c.start(f.id)
        new_dir = f.d.config.directory
        assert new_dir != old_dir and f.d.term == 0 and f.d.last_index() == 0
        await until(lambda: f.sm.data == lead.sm.data, 5.0, "the wiped node catches up as an observer")
        assert f.d.error is None and not f.d.status().is_voter
        assert _voter_dirs(f)[f.id] == old_dir  # it knows the voter set names its old self
        assert f.id in lead.d.status().observers and f.d.status().vote == 0
        index = await lead.d.propose(b"still")
        await c.converged(index)
        await lead.d.remove_voter(f.id, timeout_s=5.0)
        await until(lambda: lead.d.status().observers == (f.id,), 3.0, "removed: an observer")
        await lead.d.add_voter(f.id, timeout_s=5.0)
        assert _voter_dirs(lead)[f.id] == new_dir
        await until(lambda: _voter_dirs(f).get(f.id) == new_dir, 3.0, "the new replica knows it votes")
        other = next(m for m in c.members.values() if m is not lead and m is not f)
        await c.stop(other.id)  # the commit now needs the new replica's vote
        index = await lead.d.propose(b"after")
        await until(lambda: f.sm.data[-1:] == [b"after"], 3.0, "the new voter applies")

    run(tmp_path, body)


def test_auto_join_replaces_a_wiped_voter(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        await lead.d.propose(b"a")
        await until(lambda: all(_voter_dirs(lead).values()), 3.0, "the leader binds every directory id")
        f = next(m for m in c.members.values() if m is not lead)
        await c.stop(f.id, close_store=False)
        assert f.store is not None
        RaftStorage(f.store).wipe()
        await c.start(f.id)
        new_dir = f.d.config.directory
        await until(lambda: _voter_dirs(lead).get(f.id) == new_dir, 8.0, "auto-join made the new replica a voter")
        assert f.d.error is None and f.sm.data == lead.sm.data == [b"a"]

    run(tmp_path, body, auto_join=True)


def test_add_and_remove_a_controller_at_runtime(tmp_path: Path) -> None:
    """A fourth controller, unknown to the static voters, observes, is added (its address
    learned from its own batches and recorded in the voter set), and the leader can then
    remove itself: it steps down once that commits and the others elect a new leader."""

    async def body(c: Cluster) -> None:
        lead = await c.leader()
        await lead.d.propose(b"x")
        (port,) = free_ports(1)
        fourth = Member(4, tmp_path / "n4")
        c.members[4] = fourth
        fourth.store = NodeStore.open(str(fourth.path))
        address = f"127.0.0.1:{port}"
        fourth.driver = RaftDriver(
            4, c.voters, RaftStorage(fourth.store), fourth.sm, seed=99, address=address, **c.driver_kw
        )
        fourth.server = grpc.aio.server(options=[*server_options(), ("grpc.so_reuseport", 0)])
        fourth.server.add_insecure_port(address)
        fourth.d.add_to_server(fourth.server)
        await fourth.server.start()
        await fourth.d.start()
        await until(lambda: fourth.sm.data == [b"x"], 5.0, "the new controller observes the log")
        assert not fourth.d.is_leader and 4 not in _voter_dirs(lead)
        await lead.d.add_voter(4, timeout_s=5.0)
        voters = {v.id: v for v in lead.d.status().voters}
        assert voters[4].address == address and voters[4].directory == fourth.d.config.directory
        assert len(voters) == 4
        old = lead
        await old.d.remove_voter(old.id, timeout_s=5.0)
        new = await c.leader(exclude=old.id, timeout_s=8.0)
        assert new.id != old.id and old.id not in _voter_dirs(new)
        index = await new.d.propose(b"y")
        await until(lambda: all(m.sm.data[-1:] == [b"y"] for m in c.running()), 5.0, "everyone applies")
        assert index > 0

    run(tmp_path, body)


def test_read_index_needs_a_quorum(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        await until(lambda: all(_voter_dirs(lead).values()), 3.0, "no CONF entry is appended later")
        index = await lead.d.propose(b"x")
        assert await lead.d.read_index(2.0) >= index
        f = next(m for m in c.members.values() if m is not lead)
        read = await f.d.read_index(2.0)  # forwarded to the leader; applied here before returning
        assert read >= index and f.sm.applied >= read and f.sm.data == [b"x"]
        for m in c.members.values():
            if m is not lead:
                await m.d.stop()
        assert lead.d.is_leader  # check-quorum has not noticed yet
        last = lead.d.last_index()
        proposal = asyncio.create_task(lead.d.propose(b"lost", timeout_s=5.0))
        with pytest.raises((TimeoutError, NotLeader)):
            await lead.d.read_index(0.3)  # no quorum can confirm it: never answered
        # the proposal it cannot commit fails (does not hang) once check-quorum deposes it
        with pytest.raises(NotLeader):
            await proposal
        assert lead.d.last_index() == last + 1 and not lead.d.is_leader

    run(tmp_path, body)


def test_single_node_transfer_fatal_error_and_stop(tmp_path: Path) -> None:
    fatal: list[BaseException] = []

    async def body(c: Cluster) -> None:
        m = c.members[1]
        await until(lambda: m.d.is_leader, 2.0, "single node leads")
        await until(lambda: m.sm.confs == 1, 2.0, "the leader binds its directory id")
        assert await m.d.propose(b"one") == 3  # after its NOOP and the binding CONF entry
        assert await m.d.read_index(1.0) == 3
        await m.d.wait_applied(3, 0.1)
        with pytest.raises(TimeoutError):
            await m.d.wait_applied(99, 0.05)
        m.d.transfer_leadership(1)  # to itself: nothing happens
        m.sm.fail_on = b"boom"
        with pytest.raises(RaftStopped):
            await m.d.propose(b"boom", timeout_s=2.0)
        assert isinstance(m.d.error, RuntimeError) and not m.d.running and fatal == [m.d.error]
        with pytest.raises(RaftStopped):
            m.d.propose_nowait(b"after")

    run(tmp_path, body, n=1, on_fatal=fatal.append)


def test_unknown_senders_and_types_are_dropped(tmp_path: Path) -> None:
    async def body(c: Cluster) -> None:
        lead = await c.leader()
        term = lead.d.term
        victim = next(m for m in c.members.values() if m is not lead)
        async with grpc.aio.insecure_channel(c.voters[victim.id], options=channel_options()) as ch:
            stub = raft_pb2_grpc.KetchRaftStub(ch)
            batch = raft_pb2.RaftBatch(
                messages=[
                    # a vote request from a node outside the quorum, far in the future
                    raft_pb2.RaftMessage(type=raft_pb2.RAFT_MESSAGE_TYPE_VOTE, frm=99, to=victim.id, term=term + 50),
                    raft_pb2.RaftMessage(type=raft_pb2.RAFT_MESSAGE_TYPE_UNSPECIFIED, frm=1),
                ]
            )
            assert await stub.Step(batch, timeout=2) == raft_pb2.StepAck()
        await asyncio.sleep(0.1)
        assert victim.d.term == term and victim.d.leader_id == lead.id
        assert victim.d.servicer.undecodable == 1

    run(tmp_path, body)
