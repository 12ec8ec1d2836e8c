"""The transactional producer's coordinator calls: the driver around ketch/transaction_manager.py.

Every call goes to the transaction coordinator of the producer's
transactional id (FindCoordinator key_type=1, cached; see
coordinator_client.py), except TxnOffsetCommit, which goes to the group's
coordinator. Rules:
1. Coordinator errors (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE,
   COORDINATOR_LOAD_IN_PROGRESS) and transport failures: forget the
   coordinator, find it again, retry (CoordinatorClient.call).
2. CONCURRENT_TRANSACTIONS and every other retriable code: back off
   (doubling from ``retry_backoff_ms`` up to ``retry_backoff_max_ms``) and send
   the same request again, with the same producer id and epoch: the
   coordinator answers an exact retry of EndTxn idempotently.
3. Both until ``deadline`` (``max_block_ms`` after the call began); then the
   last error is raised and the state machine is left as it was, so the user
   may call again.
4. Any other error code is raised as its typed ``KetchError``; the caller
   reports it to the transaction manager (fatal or abortable, its rule).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from typing import Any, NamedTuple

from ketch.aio.connection import Connection
from ketch.aio.coordinator_client import TRANSACTION_KEY, CoordinatorClient, group_error
from ketch.api.v1 import ketch_pb2
from ketch.errors import ErrorCode, KetchError, error_for
from ketch.group_rules import OffsetAndMetadata
from ketch.records import TopicPartition
from ketch.transaction_manager import TransactionManager

__all__ = ["TransactionClient"]


class _Answer(NamedTuple):
    error_code: int
    error_message: str


def _status(response: Any) -> tuple[int, str]:
    return response.error_code, response.error_message


class TransactionClient:
    def __init__(
        self,
        conn: Connection,
        manager: TransactionManager,
        *,
        backoff: float,
        max_backoff: float,
        max_block: float,
    ) -> None:
        self.conn = conn
        self.manager = manager
        self.backoff = backoff
        self.max_backoff = max(backoff, max_backoff)
        self.max_block = max_block
        self.coordinators = CoordinatorClient(conn, backoff=backoff, max_backoff=max_backoff, key_type=TRANSACTION_KEY)
        self.groups = CoordinatorClient(conn, backoff=backoff, max_backoff=max_backoff)

    @property
    def tid(self) -> str:
        return self.manager.transactional_id

    async def _retrying(self, call: Callable[[float], Awaitable[Any]], deadline: float | None) -> Any:
        """Rules 2-3 around ``call(deadline)``, which does rule 1 and returns a response with an error code."""
        if deadline is None:
            deadline = time.monotonic() + self.max_block
        backoff = self.backoff
        while True:
            response = await call(deadline)
            code, message = _status(response)
            if code == ErrorCode.NONE:
                return response
            message = message or ErrorCode(code).name
            err = error_for(code, message if self.tid in message else f"transactional id {self.tid!r}: {message}")
            if not err.retriable or time.monotonic() + backoff > deadline:
                raise err
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff)

    async def _call(self, method: str, request: Any, deadline: float | None = None) -> Any:
        async def once(deadline: float) -> Any:
            return await self.coordinators.call(self.tid, method, request, status=_status, deadline=deadline)

        return await self._retrying(once, deadline)

    async def init_producer_id(self) -> tuple[int, int]:
        """InitProducerId with the transactional id: (producer id, epoch) of this producer session."""
        request = ketch_pb2.InitProducerIdRequest(
            transactional_id=self.tid,
            transaction_timeout_ms=self.manager.transaction_timeout_ms,
            producer_id=-1,
            producer_epoch=-1,
        )
        response = await self._call("InitProducerId", request)
        return response.producer_id, response.producer_epoch

    async def add_partitions(self, tps: Iterable[Hashable], deadline: float | None = None) -> None:
        m = self.manager
        request = ketch_pb2.AddPartitionsToTxnRequest(
            transactional_id=self.tid,
            producer_id=m.producer_id,
            producer_epoch=m.epoch,
            partitions=[ketch_pb2.TopicPartitionRef(topic=tp[0], partition=tp[1]) for tp in tps],  # type: ignore[index]
        )
        await self._call("AddPartitionsToTxn", request, deadline)

    async def add_offsets(self, group_id: str) -> None:
        m = self.manager
        request = ketch_pb2.AddOffsetsToTxnRequest(
            transactional_id=self.tid, producer_id=m.producer_id, producer_epoch=m.epoch, group_id=group_id
        )
        await self._call("AddOffsetsToTxn", request)

    async def end_txn(self, commit: bool) -> tuple[int, int]:
        """EndTxn: the (producer id, epoch) of the next transaction."""
        m = self.manager
        request = ketch_pb2.EndTxnRequest(
            transactional_id=self.tid, producer_id=m.producer_id, producer_epoch=m.epoch, commit=commit
        )
        response = await self._call("EndTxn", request)
        return response.producer_id, response.producer_epoch

    async def txn_offset_commit(
        self,
        offsets: Mapping[TopicPartition, OffsetAndMetadata | int],
        group_id: str,
        generation: int,
        member_id: str,
    ) -> None:
        m = self.manager
        entries = []
        for tp, o in offsets.items():
            om = OffsetAndMetadata(o) if isinstance(o, int) else o
            entries.append(
                ketch_pb2.CommittedPartitionOffset(
                    topic=tp[0], partition=tp[1], offset=om.offset, metadata=om.metadata or ""
                )
            )
        request = ketch_pb2.TxnOffsetCommitRequest(
            transactional_id=self.tid,
            group_id=group_id,
            producer_id=m.producer_id,
            producer_epoch=m.epoch,
            member_id=member_id,
            generation=generation,
            offsets=entries,
        )

        def status(response: Any) -> tuple[int, str]:
            code, message = response.status.error_code, response.status.error_message
            if code == ErrorCode.NONE:
                for o in response.offsets:
                    if o.error_code != ErrorCode.NONE:
                        return o.error_code, f"{o.topic}-{o.partition}: {ErrorCode(o.error_code).name}"
            return code, message

        async def once(deadline: float) -> Any:
            response = await self.groups.call(group_id, "TxnOffsetCommit", request, status=status, deadline=deadline)
            return _Answer(*status(response))

        try:
            await self._retrying(once, None)
        except KetchError as e:
            if e.code in (ErrorCode.ILLEGAL_GENERATION, ErrorCode.UNKNOWN_MEMBER_ID):
                raise group_error(
                    e.code,
                    f"the consumer's generation {generation} / member {member_id!r} is no longer current in the "
                    "group (a rebalance happened); abort the transaction and consume again",
                    group_id,
                ) from None
            raise
