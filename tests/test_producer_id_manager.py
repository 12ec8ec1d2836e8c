"""The broker's ProducerIdManager (node/producer_ids.py): blocks, prefetch at 90%, one fetch at a time, typed errors."""

from __future__ import annotations

import asyncio

import pytest

from ketch.api.v1 import controller_pb2 as cpb
from ketch.errors import ErrorCode, KetchError
from node.lifecycle import BrokerEpoch
from node.producer_ids import ProducerIdBlocks, ProducerIdManager


class FakeController:
    def __init__(self, size: int = 10) -> None:
        self.size = size
        self.next = 0
        self.calls = 0
        self.refuse: str | None = None
        self.gate: asyncio.Event | None = None

    async def allocate(
        self, request: cpb.AllocateProducerIdsRequest, timeout: float
    ) -> cpb.AllocateProducerIdsResponse:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.refuse:
            return cpb.AllocateProducerIdsResponse(
                status=cpb.ControllerStatus(error_code="STALE_BROKER_EPOCH", error_message="stale")
            )
        first, self.next = self.next, self.next + self.size
        return cpb.AllocateProducerIdsResponse(producer_id_start=first, producer_id_len=self.size)


def manager(fake: FakeController, epoch: int = 5) -> ProducerIdManager:
    holder = BrokerEpoch()
    holder.value = epoch
    return ProducerIdManager(1, holder, fake.allocate)


def test_blocks_hand_out_each_id_once_and_want_the_next_at_90_percent() -> None:
    blocks = ProducerIdBlocks()
    assert blocks.take() is None and blocks.wants_block()
    blocks.add(100, 10)
    got = [blocks.take() for _ in range(8)]
    assert got == list(range(100, 108)) and not blocks.wants_block()
    assert blocks.take() == 108 and blocks.wants_block()
    blocks.add(500, 10)
    assert not blocks.wants_block()
    with pytest.raises(ValueError):
        blocks.add(900, 10)  # a next block is already held
    assert [blocks.take() for _ in range(3)] == [109, 500, 501]


def test_ids_are_unique_prefetched_and_fetched_one_at_a_time() -> None:
    async def main() -> None:
        fake = FakeController(size=10)
        m = manager(fake)
        ids = await asyncio.gather(*(m.generate_producer_id() for _ in range(35)))
        assert sorted(ids) == list(range(35))
        await asyncio.sleep(0)
        # 35 ids from blocks of 10: four blocks, plus at most one prefetch
        assert 4 <= fake.calls <= 5

    asyncio.run(main())


def test_errors_are_typed_and_the_next_call_tries_again() -> None:
    async def main() -> None:
        fake = FakeController()
        fake.refuse = "stale"
        m = manager(fake)
        with pytest.raises(KetchError) as err:
            await m.generate_producer_id()
        assert err.value.code == ErrorCode.COORDINATOR_NOT_AVAILABLE and err.value.retriable
        fake.refuse = None
        assert await m.generate_producer_id() == 0
        unregistered = manager(FakeController(), epoch=-1)
        with pytest.raises(KetchError, match="not registered"):
            await unregistered.generate_producer_id()
        await m.close()

    asyncio.run(main())
