"""Follower fetch sessions (node/fetch_session.py): both halves of the protocol, and the leader's Fetch over
a real broker on RocksDB (node/fetch_service.py).

The leader's tests drive ``FetchHandlers.Fetch`` on a ``Broker`` that leads every partition of a topic with
replicas 1, 2 and 3, as follower 2's fetches would reach it over gRPC.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from coordinator.metadata import MetadataImage
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode
from node.broker import Broker
from node.config import NodeConfig
from node.fetch_service import FetchHandlers
from node.fetch_session import MAX_EPOCH, FetchSessions, FollowerSession, epoch_after
from node.fetch_waiters import FetchWaiters
from node.lifecycle import BrokerEpoch
from node.metrics import NodeMetrics
from node.replica_fetcher import fetch_request, fetch_state
from replication.partition import Partition
from replication.rocks_store import NodeStore
from tests.batches import make_batch, values
from tests.test_metadata_support import Cluster

# -- the follower's half -------------------------------------------------------------------------------


def test_a_follower_names_everything_once_then_only_what_changed() -> None:
    session = FollowerSession()
    states = {("t", 0): (5, 1, 1, 5), ("t", 1): (7, 1, 1, 7)}
    epoch, named = session.plan(states)
    assert (epoch, named) == (0, [("t", 0), ("t", 1)])  # full: opens a session
    assert session.answered(states, named, pb.FetchResponse(session_id=42))

    moved = {("t", 0): (5, 1, 1, 5), ("t", 1): (9, 1, 1, 7)}
    epoch, named = session.plan(moved)
    assert (session.session_id, epoch, named) == (42, 1, [("t", 1)])
    assert session.answered(moved, named, pb.FetchResponse(session_id=42))
    assert session.plan(moved) == (2, [])  # nothing changed: names nothing

    grown = {**moved, ("t", 2): (0, 1, -1, 0)}  # a partition more on this leader: a new session
    assert session.plan(grown) == (0, [("t", 0), ("t", 1), ("t", 2)])


def test_a_refused_session_or_a_leader_without_sessions_means_full_fetches() -> None:
    session = FollowerSession()
    states = {("t", 0): (5, 1, 1, 5)}
    _, named = session.plan(states)
    session.answered(states, named, pb.FetchResponse(session_id=7))
    epoch, named = session.plan(states)
    assert epoch == 1
    refused = pb.FetchResponse(error_code=pb.FETCH_SESSION_ID_NOT_FOUND, error_message="gone")
    assert not session.answered(states, named, refused)
    assert session.plan(states) == (0, [("t", 0)])

    session.answered(states, [("t", 0)], pb.FetchResponse())  # a full fetch answered without a session id
    assert session.plan(states) == (0, [("t", 0)])


# -- the leader's registry -------------------------------------------------------------------------------


def test_the_leader_refuses_an_unknown_session_and_a_fetch_out_of_turn() -> None:
    sessions = FetchSessions(FetchWaiters())
    first = sessions.open(2, 100)
    assert sessions.resume(2, 100, first.session_id, 1) is first
    with pytest.raises(Exception) as out_of_turn:
        sessions.resume(2, 100, first.session_id, 1)  # epoch 1 again (a retried request)
    assert getattr(out_of_turn.value, "code", None) == ErrorCode.INVALID_FETCH_SESSION_EPOCH
    for replica_id, replica_epoch, session_id in [(3, 100, first.session_id), (2, 101, first.session_id), (2, 100, 9)]:
        with pytest.raises(Exception) as unknown:
            sessions.resume(replica_id, replica_epoch, session_id, 2)
        assert getattr(unknown.value, "code", None) == ErrorCode.FETCH_SESSION_ID_NOT_FOUND

    assert (epoch_after(1), epoch_after(MAX_EPOCH)) == (2, 1)  # epochs wrap to 1, as in Kafka

    second = sessions.open(2, 100)  # the follower's new session replaces its old one
    assert first.replaced and not second.replaced and len(sessions) == 1
    with pytest.raises(Exception) as replaced:
        sessions.resume(2, 100, first.session_id, 2)
    assert getattr(replaced.value, "code", None) == ErrorCode.FETCH_SESSION_ID_NOT_FOUND


# -- the leader's Fetch ---------------------------------------------------------------------------------


class Leader(FetchHandlers):
    """Broker 1 leading every partition of ``t`` (replicas 1, 2, 3), with the node's fetch handlers."""

    def __init__(self, path: Path, partitions: int) -> None:
        self.cluster = Cluster()
        self.cluster.add_brokers([1, 2, 3])
        self.cluster.create("t", partitions, 3)
        self.store = NodeStore.open(str(path))
        epoch = BrokerEpoch()
        epoch.value = self.cluster.epoch(1)
        self.broker = Broker(NodeConfig(node_id=1), self.store, epoch, lambda t, i: None)
        self.broker.on_metadata(MetadataImage(), self.cluster.image)
        self.led = sorted(tp.partition for tp, part in self.broker.replicas().items() if part.is_leader)[:4]
        self.waiters = FetchWaiters()
        self.fetch_sessions = FetchSessions(self.waiters)
        self.metrics = NodeMetrics()
        self.loop = asyncio.new_event_loop()
        self.follower = FollowerSession()

    def _count_error(self, api: str, code: int) -> None:
        pass

    def part(self, index: int) -> Partition:
        return self.broker.partition("t", index)[0]

    def append(self, index: int, count: int, tag: str) -> None:
        part = self.part(index)
        part.append(
            make_batch(part.log.log_end_offset, count, tag=tag),
            max_message_bytes=1 << 20,
            acks=1,
            min_insync_replicas=1,
            sync=False,
        )
        self.waiters.notify(("t", index))  # as KetchService.Produce does

    def fetch(self, request: pb.FetchRequest) -> pb.FetchResponse:
        return self.loop.run_until_complete(self.Fetch(request, None))

    def request(
        self, states: dict[tuple[str, int], tuple[int, int, int, int]], max_bytes: int = 64 << 20, max_wait_ms: int = 0
    ) -> pb.FetchRequest:
        """Follower 2's next fetch, planned by its ``FollowerSession`` from ``states`` and built as
        node/replica_fetcher.py builds it (``round`` hands the answer back to the session)."""
        epoch, named = self.follower.plan(states)
        self._named = named
        return fetch_request(2, self.cluster.epoch(2), max_wait_ms, named, states, self.follower, epoch, max_bytes)

    def round(
        self, states: dict[tuple[str, int], tuple[int, int, int, int]], max_bytes: int = 64 << 20
    ) -> pb.FetchResponse:
        request = self.request(states, max_bytes)
        response = self.fetch(request)
        self.follower.answered(states, self._named, response)
        return response

    def close(self) -> None:
        self.loop.close()
        self.store.close()


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[Leader]:
    leader = Leader(tmp_path / "b1", 12)  # broker 1 leads a third of them: the tests use four (``led``)
    yield leader
    leader.close()


def caught_up(leader: Leader) -> dict[tuple[str, int], tuple[int, int, int, int]]:
    """Follower 2's state when it holds all the leader has (its high watermark as the leader's)."""
    return {("t", index): fetch_state(leader.part(index)) for index in leader.led}


def test_a_partition_the_fetch_does_not_name_counts_as_fetched_again(leader: Leader) -> None:
    for index in leader.led:
        leader.append(index, 2, f"p{index}")
    states = caught_up(leader)
    assert leader.round(states).session_id  # full: opens the session
    before = {index: leader.part(index).leader.followers[2].last_caught_up_ms for index in leader.led}  # type: ignore[union-attr]
    leader.loop.run_until_complete(asyncio.sleep(0.02))

    response = leader.round(states)  # names nothing
    assert leader._named == [] and list(response.partitions) == [] and response.error_code == 0
    for index in leader.led:
        progress = leader.part(index).leader.followers[2]  # type: ignore[union-attr]
        assert progress.last_caught_up_ms > before[index]  # the ISR still sees follower 2 caught up
        assert progress.log_end_offset == 2


def test_an_append_to_a_partition_not_named_is_answered_at_the_next_fetch(leader: Leader) -> None:
    states = caught_up(leader)
    leader.round(states)
    leader.round(states)
    p = leader.led[3]
    leader.append(p, 2, "new")
    response = leader.round(states)
    assert leader._named == []
    assert [(r.partition, [v for _, v in values(r.records)]) for r in response.partitions] == [
        (p, [b"new:0", b"new:1"])
    ]


def test_a_partition_left_out_while_the_follower_is_behind_is_read_again(leader: Leader) -> None:
    for index in leader.led:
        leader.append(index, 3, f"p{index}")
    states = {("t", i): (0, leader.part(i).leader_epoch, -1, 0) for i in leader.led}  # follower 2 holds nothing
    first = leader.round(states, max_bytes=1)  # room for one partition's batch: the others get offsets only
    assert [r.partition for r in first.partitions] == leader.led[:1]  # the rest left out, though it lacks them

    answered = set()
    for response in [first, None, None, None]:
        response = response or leader.round(states, max_bytes=1)
        for result in response.partitions:
            if result.records:  # the follower appends what came; it names only those next time
                answered.add(result.partition)
                key = ("t", result.partition)
                states[key] = (3, states[key][1], leader.part(result.partition).log.latest_epoch, 0)
    assert answered == set(leader.led)


def test_a_parked_session_fetch_wakes_for_a_partition_it_did_not_name(leader: Leader) -> None:
    states = caught_up(leader)
    leader.round(states)
    request = leader.request(states, max_wait_ms=5000)

    async def park_then_append() -> pb.FetchResponse:
        task = asyncio.ensure_future(leader.Fetch(request, None))
        await asyncio.sleep(0.05)
        assert not task.done()  # parked: nothing new
        leader.append(leader.led[2], 1, "late")
        return await asyncio.wait_for(task, 2)

    response = leader.loop.run_until_complete(park_then_append())
    assert [(r.partition, [v for _, v in values(r.records)]) for r in response.partitions] == [
        (leader.led[2], [b"late:0"])
    ]


def test_a_refused_session_fetch_reads_nothing_and_records_nothing(leader: Leader) -> None:
    p = leader.led[0]
    leader.append(p, 2, "p0")
    states = caught_up(leader)
    leader.round(states)
    before = leader.part(p).leader.followers[2].last_fetch_ms  # type: ignore[union-attr]
    stale = leader.request(states)
    stale.session_epoch += 1  # out of turn
    response = leader.fetch(stale)
    assert response.error_code == pb.INVALID_FETCH_SESSION_EPOCH and "expects epoch 1" in response.error_message
    assert list(response.partitions) == []
    assert leader.part(p).leader.followers[2].last_fetch_ms == before  # type: ignore[union-attr]
