"""ProducerIdManager: the broker's producer ids, in blocks from the active controller.

Kafka's ``RPCProducerIdManager`` (KIP-730). InitProducerId asks this broker for
a new producer id; the broker hands them out from a block the controller
allocated to it (coordinator/metadata/producer_ids.py: blocks never overlap,
across controller failover too, so no id is handed out twice in the cluster).

Rules (``ProducerIdBlocks`` holds them, pure; ``ProducerIdManager`` drives it):
- Ids come from the current block in order; each is handed out once.
- When the current block is used up to ``PREFETCH_FRACTION`` (90%), or there
  is none, the next block is fetched in the background (at most one fetch at a
  time); a caller that finds every block used up waits for that fetch.
- A failed fetch (no active controller, the broker not registered yet, a
  refusal) fails the waiting callers with a retriable ``KetchError``
  (REQUEST_TIMED_OUT when no controller answered in time, else
  COORDINATOR_NOT_AVAILABLE); the next call tries again. Blocks are never
  reused: a block is kept only from a committed allocation (the controller
  answers after its entry commits), and ids left in a block when the broker
  stops are simply skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from ketch.api.v1 import controller_pb2 as cpb
from ketch.errors import ErrorCode, KetchError
from node.controller_client import ControllerClient
from node.lifecycle import BrokerEpoch

log = logging.getLogger("ketch.node.producer_ids")

PREFETCH_FRACTION = 0.9


class ProducerIdBlocks:
    """The ids this broker holds: a current block and at most one prefetched next block. Pure."""

    def __init__(self) -> None:
        self._current = range(0)
        self._position = 0  # index into _current of the next id to hand out
        self._next: range | None = None

    def take(self) -> int | None:
        """The next unused id, or None when every block is used up."""
        if self._position >= len(self._current) and self._next is not None:
            self._current, self._position, self._next = self._next, 0, None
        if self._position >= len(self._current):
            return None
        pid = self._current[self._position]
        self._position += 1
        return pid

    def wants_block(self) -> bool:
        """A fetch of the next block is due: none is prefetched and the current one is 90% used."""
        if self._next is not None:
            return False
        return self._position >= len(self._current) * PREFETCH_FRACTION

    def add(self, first: int, size: int) -> None:
        if size <= 0 or first < 0:
            raise ValueError(f"producer id block [{first}, {first + size}) is empty or negative")
        block = range(first, first + size)
        if self._position >= len(self._current):
            self._current, self._position = block, 0
        elif self._next is None:
            self._next = block
        else:
            raise ValueError("a next producer id block is already held")

    @property
    def remaining(self) -> int:
        return len(self._current) - self._position + (len(self._next) if self._next is not None else 0)


Allocate = Callable[[cpb.AllocateProducerIdsRequest, float], Awaitable[cpb.AllocateProducerIdsResponse]]


class ProducerIdManager:
    def __init__(
        self, broker_id: int, broker_epoch: BrokerEpoch, allocate: Allocate, *, timeout_s: float = 10.0
    ) -> None:
        self.broker_id = broker_id
        self._broker_epoch = broker_epoch
        self._allocate = allocate
        self._timeout_s = timeout_s
        self.blocks = ProducerIdBlocks()
        self._fetch: asyncio.Task[None] | None = None

    @classmethod
    def with_controllers(
        cls, broker_id: int, broker_epoch: BrokerEpoch, controllers: ControllerClient, *, timeout_s: float = 10.0
    ) -> ProducerIdManager:
        async def allocate(request: cpb.AllocateProducerIdsRequest, timeout: float) -> cpb.AllocateProducerIdsResponse:
            return await controllers.call(lambda s: s.AllocateProducerIds, request, timeout_s=timeout)

        return cls(broker_id, broker_epoch, allocate, timeout_s=timeout_s)

    async def generate_producer_id(self) -> int:
        """A producer id never handed out before, by any broker."""
        while True:
            pid = self.blocks.take()
            if self.blocks.wants_block():
                self._start_fetch()
            if pid is not None:
                return pid
            fetch = self._fetch
            assert fetch is not None
            await asyncio.shield(fetch)  # raises the fetch's error; the next call starts a new one

    def _start_fetch(self) -> None:
        if self._fetch is None or self._fetch.done():
            self._fetch = asyncio.create_task(self._fetch_block(), name="producer-id-block")
            self._fetch.add_done_callback(_consume_error)

    async def _fetch_block(self) -> None:
        epoch = self._broker_epoch.value
        if epoch < 0:
            raise KetchError(
                f"broker {self.broker_id} is not registered with the controller yet",
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
            )
        request = cpb.AllocateProducerIdsRequest(broker_id=self.broker_id, broker_epoch=epoch)
        response = await self._allocate(request, self._timeout_s)
        status = response.status
        if status.error_code != ErrorCode.NONE:
            raise KetchError(
                f"the controller refused a producer id block: {ErrorCode(status.error_code).name} "
                f"{status.error_message}",
                ErrorCode.COORDINATOR_NOT_AVAILABLE,
            )
        self.blocks.add(response.producer_id_start, response.producer_id_len)
        log.info(
            "broker %d holds producer ids [%d, %d)",
            self.broker_id,
            response.producer_id_start,
            response.producer_id_start + response.producer_id_len,
        )

    async def close(self) -> None:
        if self._fetch is not None and not self._fetch.done():
            self._fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._fetch


def _consume_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("producer id block fetch failed: %s", task.exception())
