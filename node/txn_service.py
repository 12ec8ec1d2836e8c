"""The transaction RPCs of ketch.v1.Ketch: protobuf in, TransactionManager calls, protobuf out.

A mixin of ``KetchService`` (node/service.py), as thin as the rest of it; the
rules are the pure coordinator's (coordinator/transactions/). Here:

- Inputs are checked before they reach the coordinator: a non-empty
  transactional id, producer id >= 0 and epoch >= 0, partitions with a topic
  and index >= 0, EndTxn's transaction_version 0-2 (0 = 2, TV2; 1 = TV1, sent
  by node/kafka/txn.py for EndTxn below v5), a positive timeout (INVALID_REQUEST, or
  INVALID_TRANSACTION_TIMEOUT for the timeout, otherwise).
- Errors are typed and go in the response's error fields; unexpected ones
  become UNKNOWN_SERVER_ERROR and the node keeps serving.
- ``TransactionVerifier`` is the partition leader's side of KIP-890: before
  the first transactional batch of a transaction is stored on a partition,
  the leader asks the id's coordinator (itself, or over gRPC) whether the
  transaction (id, producer id, epoch) is ongoing with that partition added.
  Any answer but NONE refuses the batch with the coordinator's error.
"""

from __future__ import annotations

import functools
from typing import Any

import grpc

from coordinator.transactions import TV1, TV2, TransactionCoordinator, TransactionMetadata, TxnAnswer
from ketch.api.v1 import ketch_pb2 as pb
from ketch.errors import ErrorCode, KetchError
from ketch.topic_partition import TopicPartition
from node.broker_channels import BrokerChannels
from node.group_coordinator import OFFSETS_TOPIC, GroupManager
from node.metrics import NodeMetrics, timed
from node.topic_admin import error_fields
from node.txn_coordinator import TransactionManager

VERIFY_TIMEOUT_S = 10.0


def _check(ok: bool, message: str, code: ErrorCode = ErrorCode.INVALID_REQUEST) -> None:
    if not ok:
        raise KetchError(message, code=code)


def _check_producer(tid: str, producer_id: int, epoch: int) -> None:
    _check(bool(tid), "transactional id is empty")
    _check(producer_id >= 0 and epoch >= 0, f"transactional id {tid!r}: producer id and epoch must be >= 0")


def _partitions(refs: Any) -> list[TopicPartition]:
    out = []
    for ref in refs:
        _check(bool(ref.topic) and ref.partition >= 0, f"partition {ref.topic!r}-{ref.partition} is not valid")
        out.append(TopicPartition(ref.topic, ref.partition))
    return out


def _answer_fields(answer: TxnAnswer) -> dict[str, Any]:
    return {"error_code": answer.error_code, "error_message": answer.error_message}


class TxnHandlers:
    transactions: TransactionManager
    groups: GroupManager
    metrics: NodeMetrics

    def _count_error(self, api: str, code: int) -> None:
        raise NotImplementedError  # KetchService's

    async def init_transactional_producer(self, request: pb.InitProducerIdRequest) -> pb.InitProducerIdResponse:
        """InitProducerId with a transactional id (the idempotent case stays in KetchService)."""
        tid = request.transactional_id
        try:
            timeout = request.transaction_timeout_ms
            _check(
                timeout > 0,
                f"transactional id {tid!r}: transaction_timeout_ms must be > 0, got {timeout}",
                ErrorCode.INVALID_TRANSACTION_TIMEOUT,
            )
            answer = await self.transactions.init_producer_id(tid, timeout)
        except Exception as exc:
            code, message = error_fields(exc)
            self._count_error("InitProducerId", code)
            return pb.InitProducerIdResponse(error_code=code, error_message=message, producer_id=-1, producer_epoch=-1)
        return pb.InitProducerIdResponse(
            **_answer_fields(answer), producer_id=answer.producer_id, producer_epoch=answer.producer_epoch
        )

    @timed("AddPartitionsToTxn")
    async def AddPartitionsToTxn(
        self, request: pb.AddPartitionsToTxnRequest, context: Any
    ) -> pb.AddPartitionsToTxnResponse:
        tid, pid, epoch = request.transactional_id, request.producer_id, request.producer_epoch
        try:
            _check_producer(tid, pid, epoch)
            partitions = _partitions(request.partitions)
            _check(bool(partitions), f"transactional id {tid!r}: no partitions to add")
            if request.verify_only:
                answer = await self.transactions.verify(tid, pid, epoch, partitions)
            else:
                now = self.transactions.wall_ms()
                answer = await self.transactions.call(tid, lambda c: c.add_partitions(tid, pid, epoch, partitions, now))
        except Exception as exc:
            answer = TxnAnswer(*error_fields(exc))
        if answer.error_code:
            self._count_error("AddPartitionsToTxn", answer.error_code)
        return pb.AddPartitionsToTxnResponse(**_answer_fields(answer))

    @timed("AddOffsetsToTxn")
    async def AddOffsetsToTxn(self, request: pb.AddOffsetsToTxnRequest, context: Any) -> pb.AddOffsetsToTxnResponse:
        tid, pid, epoch, group = request.transactional_id, request.producer_id, request.producer_epoch, request.group_id
        try:
            _check_producer(tid, pid, epoch)
            _check(bool(group), f"transactional id {tid!r}: the group id is empty", ErrorCode.INVALID_GROUP_ID)
            # The group's offsets partition joins the transaction; the offsets topic must exist for it.
            await self.groups.find_coordinator(group)
            offsets = TopicPartition(OFFSETS_TOPIC, self.groups.index_of(group))
            now = self.transactions.wall_ms()
            answer = await self.transactions.call(tid, lambda c: c.add_offsets(tid, pid, epoch, group, offsets, now))
        except Exception as exc:
            answer = TxnAnswer(*error_fields(exc))
        if answer.error_code:
            self._count_error("AddOffsetsToTxn", answer.error_code)
        return pb.AddOffsetsToTxnResponse(**_answer_fields(answer))

    @timed("EndTxn")
    async def EndTxn(self, request: pb.EndTxnRequest, context: Any) -> pb.EndTxnResponse:
        tid, pid, epoch, commit = request.transactional_id, request.producer_id, request.producer_epoch, request.commit
        try:
            _check_producer(tid, pid, epoch)
            version = request.transaction_version or TV2
            _check(version in (TV1, TV2), f"transactional id {tid!r}: transaction_version {version} is not 1 or 2")
            answer = await self.transactions.end_txn(tid, pid, epoch, commit, version)
        except Exception as exc:
            answer = TxnAnswer(*error_fields(exc))
        if answer.error_code:
            self._count_error("EndTxn", answer.error_code)
        return pb.EndTxnResponse(
            **_answer_fields(answer), producer_id=answer.producer_id, producer_epoch=answer.producer_epoch
        )

    @timed("ListTransactions")
    async def ListTransactions(self, request: pb.ListTransactionsRequest, context: Any) -> pb.ListTransactionsResponse:
        response = pb.ListTransactionsResponse()
        for coordinator in self.transactions.coordinators():
            for meta in coordinator.listing(request.states):
                response.transactions.add(
                    transactional_id=meta.transactional_id, producer_id=meta.producer_id, state=str(meta.state)
                )
        return response

    @timed("DescribeTransactions")
    async def DescribeTransactions(
        self, request: pb.DescribeTransactionsRequest, context: Any
    ) -> pb.DescribeTransactionsResponse:
        response = pb.DescribeTransactionsResponse()
        for tid in request.transactional_ids:
            out = response.transactions.add(transactional_id=tid)
            try:
                meta = await self.transactions.read(tid, functools.partial(TransactionCoordinator.describe, tid=tid))
                if meta is None:
                    raise KetchError(f"transactional id {tid!r} is not known", code=ErrorCode.INVALID_REQUEST)
            except Exception as exc:
                out.error_code, out.error_message = error_fields(exc)
                continue
            _describe(out, meta)
        return response


def _describe(out: pb.TransactionDescription, meta: TransactionMetadata) -> None:
    out.state = str(meta.state)
    out.producer_id, out.producer_epoch = meta.producer_id, meta.producer_epoch
    out.transaction_timeout_ms = meta.timeout_ms
    out.start_time_ms = meta.start_time_ms
    for tp in sorted(meta.partitions):
        out.partitions.add(topic=tp.topic, partition=tp.partition)
    out.group_ids.extend(sorted(meta.group_ids))


class TransactionVerifier:
    """``verify(tid, pid, epoch, topic, partition)``: the leader's KIP-890 check; raises KetchError if refused."""

    def __init__(self, node_id: int, transactions: TransactionManager, channels: BrokerChannels) -> None:
        self.node_id = node_id
        self.transactions = transactions
        self.channels = channels

    async def __call__(self, tid: str, producer_id: int, epoch: int, topic: str, partition: int) -> None:
        where = f"{topic}-{partition}"
        if not tid:
            raise KetchError(
                f"{where}: a transactional batch needs the producer's transactional id in the request",
                code=ErrorCode.INVALID_TXN_STATE,
            )
        tp = TopicPartition(topic, partition)
        coordinator_id = (await self.transactions.find_coordinator(tid)).broker_id
        if coordinator_id == self.node_id:
            answer = await self.transactions.verify(tid, producer_id, epoch, [tp])
            code, message = answer.error_code, answer.error_message
        else:
            stub = self.channels.stub(coordinator_id)
            if stub is None:
                raise KetchError(f"the coordinator of {tid!r} is not reachable", code=ErrorCode.NOT_COORDINATOR)
            request = pb.AddPartitionsToTxnRequest(
                transactional_id=tid, producer_id=producer_id, producer_epoch=epoch, verify_only=True
            )
            request.partitions.add(topic=topic, partition=partition)
            try:
                response = await stub.AddPartitionsToTxn(request, timeout=VERIFY_TIMEOUT_S)
            except grpc.aio.AioRpcError as exc:
                raise KetchError(
                    f"cannot verify transaction {tid!r} with its coordinator: {exc.code().name}",
                    code=ErrorCode.NOT_COORDINATOR,
                ) from None
            code, message = response.error_code, response.error_message
        if code != ErrorCode.NONE:
            raise KetchError(f"{where}: {message}", code=ErrorCode(code))
