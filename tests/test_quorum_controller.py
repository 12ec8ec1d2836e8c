"""QuorumController's driver rules, with a scripted Raft in place of the real one.

The fake Raft hands out indexes and lets the test decide which entries
commit, in which term, so the activation barrier, own-entry confirmation,
a deposed leader's replaced entries and the metadata stream can be checked
without timing.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from coordinator.metadata.records import encode_batch
from coordinator.quorum import NotController, QuorumController
from coordinator.quorum_membership import MembershipDriver, QuorumMembership
from coordinator.raft import Entry, EntryKind, Role, SoftState, Status, Voter


class ScriptedRaft:
    def __init__(self) -> None:
        self.leader_id = 1
        self.term = 1
        self.proposed: list[tuple[int, bytes]] = []
        self.last = 0
        self.applied = 0
        self.changed = asyncio.Event()

    def propose_nowait(self, data: bytes) -> int:
        self.last += 1
        self.proposed.append((self.last, data))
        return self.last

    async def wait_applied(self, index: int, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while self.applied < index:
                await self.changed.wait()
                self.changed.clear()

    def last_index(self) -> int:
        return self.last

    def status(self) -> Status:
        return Status(1, Role.LEADER, self.term, 1, self.leader_id, self.applied, self.applied, 1, self.last, 0, 0)


def deliver(q: QuorumController, raft: ScriptedRaft, entry: Entry) -> None:
    q.apply(entry)
    raft.applied = entry.index
    raft.changed.set()


def become_leader(q: QuorumController, raft: ScriptedRaft) -> None:
    raft.last += 1  # the new term's no-op
    q.on_soft_state(SoftState(leader=1, role=Role.LEADER), raft.term)
    deliver(q, raft, Entry(raft.term, raft.last, kind=EntryKind.NOOP))


def make() -> tuple[QuorumController, ScriptedRaft]:
    q = QuorumController(1, clock_ms=lambda: 1000)
    raft = ScriptedRaft()
    q.raft = raft
    return q, raft


def test_commands_wait_for_activation_then_commit_once() -> None:
    async def scenario() -> None:
        q, raft = make()
        with pytest.raises(NotController) as err:
            await q.run(lambda c: c.register_broker(1, "inc", "h", 1, now_ms=0))
        assert err.value.leader_id == 1
        become_leader(q, raft)
        assert q.active
        task = asyncio.create_task(q.run(lambda c: c.register_broker(7, "inc", "h", 1, now_ms=0)))
        await asyncio.sleep(0)
        index, data = raft.proposed[-1]
        assert 7 in q.controller.image.brokers  # replayed at once (uncommitted)
        assert 7 not in q.controller.committed_image.brokers
        deliver(q, raft, Entry(raft.term, index, data))
        _, offset = await task
        assert offset == index
        assert q.controller.committed_image.brokers[7].epoch == index  # confirmed, not replayed twice

    asyncio.run(scenario())


def test_a_replaced_own_entry_resigns_and_replays_the_winner() -> None:
    async def scenario() -> None:
        q, raft = make()
        become_leader(q, raft)
        task = asyncio.create_task(q.run(lambda c: c.register_broker(7, "mine", "h", 1, now_ms=0)))
        await asyncio.sleep(0)
        index, _ = raft.proposed[-1]
        # Leadership lost; the new leader's entry (another registration) commits at that index.
        raft.term, raft.leader_id = 2, 2
        q.on_soft_state(SoftState(leader=2, role=Role.FOLLOWER), 2)
        winner = q.controller.register_broker(8, "theirs", "h", 2, now_ms=0).records
        deliver(q, raft, Entry(2, index, encode_batch(winner)))
        with pytest.raises(NotController):
            await task
        image = q.controller.committed_image
        assert 8 in image.brokers and 7 not in image.brokers
        assert not q.active

    asyncio.run(scenario())


def test_a_raft_conf_entry_before_own_proposals_keeps_the_controller_active() -> None:
    """The Raft leader appends CONF entries on its own (binding directory ids): one that
    commits before this controller's pending proposal is not a replacement of it."""

    async def scenario() -> None:
        q, raft = make()
        become_leader(q, raft)
        raft.last += 1  # the core's own CONF entry, appended before our proposal
        conf_index = raft.last
        task = asyncio.create_task(q.run(lambda c: c.register_broker(7, "mine", "h", 1, now_ms=0)))
        await asyncio.sleep(0)
        index, data = raft.proposed[-1]
        deliver(q, raft, Entry(raft.term, conf_index, kind=EntryKind.CONF, voters=(Voter(1, "d1"),)))
        assert q.active
        deliver(q, raft, Entry(raft.term, index, data))
        _, offset = await task
        assert offset == index and q.active and 7 in q.controller.committed_image.brokers

    asyncio.run(scenario())


def test_follow_sends_a_broker_that_is_behind_one_snapshot_then_live_entries() -> None:
    async def scenario() -> None:
        q = QuorumController(1, retain_entries=2)
        raft = ScriptedRaft()
        q.raft = raft
        records = [q.controller.register_broker(i, f"i{i}", "h", i, now_ms=0).records for i in (1, 2, 3)]
        for index, batch in enumerate(records, start=1):
            raft.last = index
            deliver(q, raft, Entry(1, index, encode_batch(batch)))
        stream = q.follow(0)
        kind, image = await anext(stream)
        assert kind == "snapshot" and image.offset == 3 and sorted(image.brokers) == [1, 2, 3]
        behind = q.follow(1)  # behind but within the retained log: still one snapshot, no history
        kind, image = await anext(behind)
        assert kind == "snapshot" and image.offset == 3
        current = q.follow(3)
        more = q.controller.register_broker(4, "i4", "h", 4, now_ms=0).records

        async def next_update() -> tuple[str, Any]:
            return await anext(current)

        waiting = asyncio.create_task(next_update())
        await asyncio.sleep(0)
        raft.last = 4
        deliver(q, raft, Entry(1, 4, encode_batch(more)))
        kind, entry = await asyncio.wait_for(waiting, 5)
        assert kind == "entry" and entry.offset == 4
        q.close()

    asyncio.run(scenario())


def test_allocate_producer_ids_is_answered_after_its_entry_commits() -> None:
    from coordinator.service import ControllerService
    from ketch.api.v1 import controller_pb2 as cpb
    from ketch.errors import ErrorCode

    async def scenario() -> None:
        q, raft = make()
        become_leader(q, raft)
        register = asyncio.create_task(q.run(lambda c: c.register_broker(3, "inc", "h", 1, now_ms=0)))
        await asyncio.sleep(0)
        index, data = raft.proposed[-1]
        deliver(q, raft, Entry(raft.term, index, data))
        await register
        service = ControllerService(q, QuorumMembership(cast(MembershipDriver, raft)))  # membership unused here
        calls = [
            asyncio.create_task(
                service.AllocateProducerIds(cpb.AllocateProducerIdsRequest(broker_id=3, broker_epoch=index), None)
            )
            for _ in range(2)
        ]
        await asyncio.sleep(0.01)
        assert not any(c.done() for c in calls)  # proposed, not committed
        for i, d in raft.proposed[-2:]:
            deliver(q, raft, Entry(raft.term, i, d))
        first, second = [await c for c in calls]
        assert (first.producer_id_start, second.producer_id_start) == (0, 1000)
        assert first.producer_id_len == second.producer_id_len == 1000
        assert q.image.next_producer_id == 2000
        stale = await service.AllocateProducerIds(cpb.AllocateProducerIdsRequest(broker_id=3, broker_epoch=1), None)
        assert stale.status.error_code == ErrorCode.STALE_BROKER_EPOCH

    asyncio.run(scenario())
